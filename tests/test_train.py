"""SVI training, metrics, checkpoints and resuming."""

import json
import math

import pyro
import pytest
import torch
from conftest import SMALL_NET, small_run

from pyro_vae import NetConfig, ObjectiveConfig, RunConfig, evaluate
from pyro_vae.errors import ConfigError
from pyro_vae.pipeline import load_model, resume_run
from pyro_vae.training.checkpoint import load_checkpoint, save_checkpoint

PLAIN = (type(None), bool, int, float, str)


def _assert_plain(obj, where="checkpoint"):
    if isinstance(obj, torch.Tensor) or isinstance(obj, PLAIN):
        return
    assert isinstance(obj, (dict, list, tuple)), f"{where} holds a {type(obj).__name__}"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        _assert_plain(value, f"{where}[{key!r}]")


def test_metrics_jsonl_has_one_record_per_epoch(trained):
    lines = (trained.out_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert set(r) >= {"epoch", "train_loss", "val_elbo", "seconds", "images_per_s"}
        assert all(math.isfinite(r[k]) for k in ("train_loss", "val_elbo", "seconds", "images_per_s"))
        assert r["val_elbo"] < 0 < r["train_loss"]
    assert records[1]["train_loss"] < records[0]["train_loss"]
    assert records[1]["val_elbo"] > records[0]["val_elbo"]


def test_checkpoint_is_plain_data_and_loads_weights_only(trained):
    ckpt = torch.load(trained.checkpoint_path, weights_only=True)
    _assert_plain(ckpt)
    assert ckpt["epoch"] == 2 and len(ckpt["metrics"]) == 2
    assert set(ckpt["config"]) == {"seed", "data", "model", "objective", "optimizer", "schedule"}
    assert ckpt["config"]["model"]["prior"] == {"name": "standard-normal"}
    assert set(ckpt["versions"]) >= {"pyro_vae", "pyro", "torch"}
    assert ckpt["optim_state"], "optimizer state is stored"
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python"}


def test_reloaded_checkpoint_gives_identical_evaluation(trained, test_images):
    reloaded, _ = load_model(trained.checkpoint_path, device="cpu")
    x = test_images["dynamic"][:300]
    in_memory = evaluate(trained.vae, x, iw_samples=10, seed=3).summary()
    assert evaluate(reloaded, x, iw_samples=10, seed=3).summary() == in_memory


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, data_dir):
    full = small_run(tmp_path / "full", data_dir, epochs=3, train_limit=800)
    full.fit()
    part = small_run(tmp_path / "part", data_dir, epochs=1, train_limit=800)
    part.fit()
    resumed = resume_run(part.checkpoint_path, epochs=3, data_dir=data_dir, device="cpu", progress=False)
    assert resumed.epoch == 1
    resumed.fit()
    full_state, resumed_state = full.vae.state_dict(), resumed.vae.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for name in full_state:
        assert torch.equal(full_state[name], resumed_state[name]), name
    assert [m["train_loss"] for m in resumed.metrics] == [m["train_loss"] for m in full.metrics]
    assert len((tmp_path / "part" / "metrics.jsonl").read_text().splitlines()) == 3


def test_training_leaves_the_global_param_store_alone(tmp_path, data_dir):
    pyro.clear_param_store()
    pyro.param("user_param", torch.ones(2))
    first = small_run(tmp_path / "a", data_dir, epochs=1, train_limit=300)
    before = {k: v.clone() for k, v in first.vae.state_dict().items()}
    first.fit()
    # A second model with the same parameter names trains its own weights (no stale param store).
    second = small_run(tmp_path / "b", data_dir, epochs=1, train_limit=300, seed=1)
    second_before = {k: v.detach().clone() for k, v in second.vae.named_parameters()}
    second.fit()
    assert list(pyro.get_param_store().keys()) == ["user_param"]
    for name, value in second.vae.named_parameters():
        assert not torch.equal(value, second_before[name]), name
    assert not torch.equal(first.vae.state_dict()["encoder.net.0.weight"], before["encoder.net.0.weight"])
    pyro.clear_param_store()


@pytest.mark.parametrize("kind,elbo", [("conv", "trace"), ("mlp", "meanfield")])
def test_other_networks_and_elbos_train(kind, elbo, tmp_path, data_dir, test_images):
    net = NetConfig(kind=kind, hidden=(32,), activation="softplus")
    trainer = small_run(tmp_path, data_dir, epochs=1, net=net, objective=elbo, train_limit=600)
    metrics = trainer.fit()
    assert math.isfinite(metrics[0]["val_elbo"])
    evaluate(trainer.vae, test_images["dynamic"][:200], iw_samples=0).check_agreement()


def test_checkpoint_writes_are_atomic(trained, tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(trained.checkpoint_path.read_bytes())
    before = target.read_bytes()

    def broken_save(obj, f):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, {"epoch": 99})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"], "no temporary file left behind"
    monkeypatch.undo()
    assert load_checkpoint(target)["epoch"] == 2


def test_a_new_run_refuses_to_overwrite_an_existing_one(trained, data_dir):
    before = trained.checkpoint_path.read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        small_run(trained.out_dir, data_dir)
    assert trained.checkpoint_path.read_bytes() == before


def test_a_hand_built_vae_has_one_latent_size():
    """The latent size is the prior's; a guide built by hand for another size is refused."""
    from pyro_vae import VAE, Bernoulli, DiagonalGaussianGuide, StandardNormal

    assert VAE(SMALL_NET, StandardNormal(3), Bernoulli(), image_shape=(1, 28, 28)).latent_dim == 3
    with pytest.raises(ConfigError, match="latent_dim"):
        VAE(SMALL_NET, StandardNormal(3), Bernoulli(), DiagonalGaussianGuide(4), image_shape=(1, 28, 28))


def test_iwae_training_with_one_particle_matches_trace_elbo_training(tmp_path, data_dir):
    """RenyiELBO(alpha=0) with K=1 is Trace_ELBO: same draws under the same seed, same training."""
    runs = {}
    for objective in ("trace", "iwae"):
        trainer = small_run(tmp_path / objective, data_dir, epochs=1, train_limit=600, objective=objective)
        trainer.fit()
        runs[objective] = trainer
    assert runs["iwae"].metrics[0]["train_loss"] == pytest.approx(runs["trace"].metrics[0]["train_loss"], rel=1e-5)
    for (name, a), b in zip(runs["trace"].vae.state_dict().items(), runs["iwae"].vae.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_traced_training_matches_eager_training(tmp_path, data_dir):
    """jit=True (the default) replays a traced Trace_ELBO; an epoch with a smaller last batch and a KL
    warm-up trains to the same losses and weights as the eager Trace_ELBO under the same seed."""
    runs = {}
    for jit in (True, False):
        trainer = small_run(tmp_path / str(jit), data_dir, epochs=1, train_limit=650, jit=jit, warmup_epochs=1)
        trainer.fit()
        assert trainer.svi.jit is jit and trainer.svi.jit_disabled_reason is None
        runs[jit] = trainer
    assert runs[True].metrics[0]["train_loss"] == pytest.approx(runs[False].metrics[0]["train_loss"], rel=1e-5)
    for (name, a), b in zip(runs[True].vae.state_dict().items(), runs[False].vae.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert torch.load(runs[False].checkpoint_path, weights_only=True)["config"]["objective"]["jit"] is False


def test_iwae_training_with_more_particles_optimises_a_tighter_bound(tmp_path, data_dir):
    trainer = small_run(tmp_path, data_dir, epochs=1, train_limit=600, objective="iwae", particles=5)
    trainer.fit()
    single = small_run(tmp_path / "k1", data_dir, epochs=1, train_limit=600, objective="iwae")
    single.fit()
    # The K=5 bound is above the K=1 bound (lower loss) on the same data.
    assert trainer.metrics[0]["train_loss"] < single.metrics[0]["train_loss"]


def test_beta_one_through_the_warmup_path_is_bit_identical_to_plain_training(tmp_path, data_dir):
    plain = small_run(tmp_path / "plain", data_dir, epochs=1, train_limit=600)
    plain.fit()
    scheduled = small_run(
        tmp_path / "sched", data_dir, epochs=1, train_limit=600, beta=1.0, warmup_epochs=1, warmup_start=1.0
    )
    scheduled.fit()
    assert scheduled.metrics[0]["train_loss"] == plain.metrics[0]["train_loss"]
    for a, b in zip(plain.vae.state_dict().values(), scheduled.vae.state_dict().values()):
        assert torch.equal(a, b)


def test_warmup_schedule_is_logged_per_epoch(tmp_path, data_dir):
    trainer = small_run(tmp_path, data_dir, epochs=3, train_limit=400, warmup_epochs=2, warmup_start=0.0)
    trainer.fit()
    logged = [json.loads(line)["beta"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([0.5, 1.0, 1.0])
    config = ObjectiveConfig(warmup_epochs=2, warmup_start=0.2, beta=0.8)
    weights = [config.kl_weight(step, steps_per_epoch=4) for step in range(10)]
    assert weights[0] == pytest.approx(0.2 + 0.6 / 8) and weights[7:] == pytest.approx([0.8] * 3)
    assert all(a < b for a, b in zip(weights[:8], weights[1:8]))


def test_kl_weight_changes_training(tmp_path, data_dir):
    """A beta-VAE run (beta = 4) trades reconstruction for a smaller KL."""
    plain = small_run(tmp_path / "plain", data_dir, epochs=1, train_limit=1000)
    plain.fit()
    heavy = small_run(tmp_path / "beta", data_dir, epochs=1, train_limit=1000, beta=4.0)
    heavy.fit()
    x = heavy.data.images["val"][:300]
    kl_plain = evaluate(plain.vae, x, iw_samples=0).kl.mean()
    kl_heavy = evaluate(heavy.vae, x, iw_samples=0).kl.mean()
    assert kl_heavy < 0.8 * kl_plain


@pytest.mark.parametrize(
    "options,match",
    [
        ({"objective.kind": "iwae", "objective.beta": 2.0}, "iwae"),
        ({"objective.kind": "iwae", "objective.warmup_epochs": 2}, "iwae"),
        ({"objective.beta": 0.0}, "beta"),
        ({"objective.warmup_start": 2.0}, "warmup_start"),
        ({"objective.particles": 0}, "particles"),
        ({"objective.kind": "elbo"}, "objective.kind"),
        ({"seed": 2**32}, "seed"),
        ({"schedule.epochs": 0}, "epochs"),
        ({"optimizer.lr": float("inf")}, "lr"),
    ],
)
def test_impossible_training_options_are_refused(options, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig().updated(options)


def test_fit_failing_before_its_first_epoch_keeps_the_error_and_frees_the_folder(tmp_path, data_dir, monkeypatch):
    from pyro_vae.training.run_lock import RunFolderLock

    trainer = small_run(tmp_path, data_dir, epochs=1)

    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(trainer.config), "write_toml", full_disk)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit()
    RunFolderLock(tmp_path).acquire().release()  # the folder is free again
