"""The conditional VAE: labels in the batch, its bound on log p(x | y) against the hand-written ELBO (and negative
controls that must fail), training, the label mattering, checkpoints, export, sampling a class, and bad input."""

import numpy as np
import pyro
import pytest
import torch
from conftest import small_run
from pyro.infer import TraceMeanField_ELBO

from pyro_vae import Bernoulli, NetConfig, StandardNormal, VAEData, analytic_loss, evaluate
from pyro_vae.config import DataConfig
from pyro_vae.errors import AgreementError, ConfigError, DataError
from pyro_vae.inference.bounds import AGREEMENT_Z_LIMIT, analytic_elbo_per_image, elbo_per_image
from pyro_vae.model.conditional import ConditionalVAE
from pyro_vae.model.labels import one_hot, pack, unpack
from pyro_vae.model.priors import VampPrior
from pyro_vae.model.vae import _kl_weight

CLASSES = tuple(str(i) for i in range(10))


@pytest.fixture(scope="module")
def labelled(data_dir):
    data = VAEData(DataConfig("mnist", "dynamic"), data_dir, splits=("test",))
    return data.observed("test")[:300], data.labels["test"][:300]


def _cvae(kind="mlp", cls=ConditionalVAE):
    torch.manual_seed(0)
    net = NetConfig(kind=kind, hidden=(64,), channels=(8, 16))
    return cls(net, StandardNormal(8), Bernoulli(), image_shape=(1, 28, 28), class_names=CLASSES)


def test_labels_travel_in_the_batch_and_one_hot_leaves_the_unlabelled_empty():
    x, y = torch.rand(5, 784), torch.tensor([3, 0, 9, -1, 7])
    images, labels = unpack(pack(x, y))
    assert torch.equal(images, x) and torch.equal(labels, y)
    hot = one_hot(y, 10, torch.float32)
    assert hot.sum(-1).tolist() == [1, 1, 1, 0, 1] and hot[0, 3] == 1 and hot[2, 9] == 1


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_meanfield_elbo_equals_the_handwritten_conditional_elbo(kind, labelled):
    x, y = labelled
    vae = _cvae(kind)
    batch = vae.observations(x[:64], y[:64])
    pyro.set_rng_seed(7)
    pyro_loss = TraceMeanField_ELBO().loss(vae.model, vae.guide, batch)
    pyro.set_rng_seed(7)
    assert pyro_loss == pytest.approx(analytic_loss(vae, batch).item(), rel=2e-6)


def test_conditional_bounds_agree_with_the_handwritten_elbo(labelled):
    x, y = labelled
    vae = _cvae()
    result = evaluate(vae, vae.observations(x, y), iw_samples=20, seed=3)
    assert result.kl_method == "analytic" and abs(result.agreement_z) < 4, result.summary()
    result.check_agreement()
    assert result.summary()["iwae"] > result.summary()["elbo"]


class ModelReadsTheWrongLabel(ConditionalVAE):
    """A wrong program: the Pyro model decodes with the next class (the hand-written ELBO decodes the right one)."""

    def model(self, batch, kl_scale=1.0):
        x, labels = self.split(batch)
        with pyro.plate("data", x.shape[0]):
            with _kl_weight(kl_scale):
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decode(z, (labels + 1) % 10)), obs=x)


@pytest.fixture(scope="module")
def trained_cvae(tmp_path_factory, data_dir):
    """Trained with z = 2, so that the class has to come from the label."""
    trainer = small_run(
        tmp_path_factory.mktemp("cvae"), data_dir, epochs=2, structure="conditional", train_limit=8000, latent_dim=2
    )
    trainer.fit()
    return trainer


def test_negative_control_a_model_reading_the_wrong_label_fails_the_check(trained_cvae, labelled):
    x, y = labelled
    trained_cvae = trained_cvae.vae
    evaluate(trained_cvae, trained_cvae.observations(x, y), iw_samples=0).check_agreement()  # the same weights agree
    vae = ModelReadsTheWrongLabel(
        trained_cvae.net_config, StandardNormal(2), Bernoulli(), image_shape=(1, 28, 28), class_names=CLASSES
    )
    vae.load_state_dict(trained_cvae.state_dict())
    with pytest.raises(AgreementError, match="disagree"):
        evaluate(vae, vae.observations(x, y), iw_samples=0).check_agreement()


def test_negative_control_labels_shifted_between_the_two_passes_are_caught(trained_cvae, labelled):
    """Pyro's ELBO of (x, y) against the hand-written ELBO of (x, y + 1) on the same draws: the paired z-test the
    evaluation uses must see the difference (and see none with the right labels)."""
    x, y = labelled
    vae = trained_cvae.vae

    def paired_z(hand_labels):
        pyro.set_rng_seed(5)
        pyro_elbo = elbo_per_image(vae, vae.observations(x, y))
        pyro.set_rng_seed(5)
        hand = analytic_elbo_per_image(vae, vae.observations(x, hand_labels)).elbo
        d = (pyro_elbo - hand).double()
        return (d.mean() / (d.std() / len(d) ** 0.5)).item()

    assert abs(paired_z(y)) < 4
    assert abs(paired_z((y + 1) % 10)) > 2 * AGREEMENT_Z_LIMIT


def test_a_trained_conditional_vae_uses_its_label_and_reloads(trained_cvae, data_dir, labelled):
    trainer, tmp_path = trained_cvae, trained_cvae.out_dir
    vae, (x, y) = trainer.vae, labelled
    assert vae.class_names == CLASSES and trainer.config.model.class_names == CLASSES
    right = evaluate(vae, vae.observations(x, y), iw_samples=0, seed=1).summary()["elbo"]
    shifted = evaluate(vae, vae.observations(x, (y + 1) % 10), iw_samples=0, seed=1).summary()["elbo"]
    assert right > shifted + 5, (right, shifted)  # the wrong class costs nats: the networks read y
    from pyro_vae.pipeline import evaluate_checkpoint, load_model

    loaded, _ = load_model(tmp_path / "ckpt.pt", device="cpu")
    assert isinstance(loaded, ConditionalVAE) and loaded.class_names == CLASSES
    for a, b in zip(vae.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    result, info = evaluate_checkpoint(
        tmp_path / "ckpt.pt", data_dir=data_dir, limit=300, iw_samples=0, device="cpu", seed=1
    )
    assert info["bound_of"] == "log p(x | y)" and info["structure"] == "conditional"
    assert result.summary()["elbo"] == pytest.approx(right, abs=1e-3)


def test_sampling_a_class_by_number_or_name(tmp_path, data_dir):
    from pyro_vae.pipeline import sample_checkpoint

    small_run(tmp_path, data_dir, epochs=1, structure="conditional", train_limit=1000).fit()
    sevens = sample_checkpoint(tmp_path / "ckpt.pt", 8, label=7, device="cpu")
    named = sample_checkpoint(tmp_path / "ckpt.pt", 8, label="7", device="cpu")
    threes = sample_checkpoint(tmp_path / "ckpt.pt", 8, label=3, device="cpu")
    assert torch.equal(sevens, named) and not torch.equal(sevens, threes)
    with pytest.raises(ConfigError, match="classes are 0..9"):
        sample_checkpoint(tmp_path / "ckpt.pt", 8, label=10, device="cpu")


def test_a_structure_that_needs_labels_refuses_unlabelled_data(tmp_path, data_dir):
    images = (np.random.default_rng(0).random((300, 28, 28)) * 255).astype(np.uint8)
    np.savez(tmp_path / "plain.npz", train=images)
    from pyro_vae import RunConfig, start_run

    config = RunConfig.from_dict(
        {
            "data": {"dataset": "array", "root": str(tmp_path / "plain.npz"), "binarize": "static"},
            "model": {"structure": "conditional"},
        }
    )
    with pytest.raises(DataError, match="needs labelled images"):
        start_run(config, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def test_refused_combinations_and_labels():
    with pytest.raises(ConfigError, match="pseudo-images"):
        from pyro_vae import RunConfig

        RunConfig.from_dict({"model": {"structure": "conditional", "prior": {"name": "vamp"}}})
    with pytest.raises(ConfigError, match="2 to"):
        ConditionalVAE(NetConfig(), StandardNormal(4), Bernoulli(), image_shape=(1, 28, 28), class_names=("one",))
    vae = _cvae()
    with pytest.raises(DataError, match="outside this model's classes"):
        vae.check_labels(torch.tensor([0, 10]), 2)
    with pytest.raises(DataError, match="3 labels for 2 images"):
        vae.check_labels(torch.tensor([0, 1, 2]), 2)
    with pytest.raises(DataError, match="none"):
        vae.check_labels(None, 2)
    assert VampPrior.uses_guide_density


def test_resume_and_export_keep_the_structure(trained_cvae, tmp_path, labelled):
    from pyro_vae.pipeline import resume_run
    from pyro_vae.sharing import export_checkpoint, load

    ckpt = trained_cvae.out_dir / "ckpt.pt"
    resumed = resume_run(ckpt, epochs=3, out_dir=tmp_path / "resumed", device="cpu", progress=False)
    assert isinstance(resumed.vae, ConditionalVAE) and resumed.vae.class_names == CLASSES
    resumed.fit()
    assert [m["epoch"] for m in resumed.metrics] == [1, 2, 3]
    exported = export_checkpoint(ckpt, tmp_path / "exported")
    model = load(exported, device="cpu")
    x, y = labelled
    assert isinstance(model, ConditionalVAE)
    assert torch.equal(
        model.guide_params(model.observations(x, y)), trained_cvae.vae.guide_params(model.observations(x, y))
    )


def test_the_command_line_trains_samples_and_refuses_bad_input(tmp_path, data_dir, capsys):
    from test_cli import TINY, assert_one_line_error, run_cli

    out = tmp_path / "run"
    code, _, err = run_cli(
        ["train", "--structure", "conditional", "--data-dir", data_dir, "--epochs", "1", "--out", out, *TINY], capsys
    )
    assert code == 0, err
    code, stdout, _ = run_cli(
        ["sample", "--checkpoint", out / "ckpt.pt", "--label", "7", "--out", tmp_path / "7.png"], capsys
    )
    assert code == 0 and "of class 7" in stdout and (tmp_path / "7.png").is_file()
    code, _, err = run_cli(
        ["sample", "--checkpoint", out / "ckpt.pt", "--label", "12", "--out", tmp_path / "x.png"], capsys
    )
    assert_one_line_error(code, err, "--label 12")
    assert code == 2 and not (tmp_path / "x.png").exists()
    code, stdout, _ = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--limit", "200", "--iw-samples", "0"], capsys)
    assert code == 0 and "bounds on log p(x | y)" in stdout and "KL(q(z|x,y) || p(z))" in stdout
    code, _, err = run_cli(
        [
            "train",
            "--structure",
            "conditional",
            "--prior",
            "vamp",
            "--data-dir",
            data_dir,
            "--out",
            tmp_path / "v",
            *TINY,
        ],
        capsys,
    )
    assert_one_line_error(code, err, "pseudo-images")
    assert code == 2
    images = (np.random.default_rng(0).random((1000, 28, 28)) * 255).astype(np.uint8)
    np.savez(tmp_path / "plain.npz", train=images)
    code, _, err = run_cli(
        [
            "train",
            "--structure",
            "conditional",
            "--dataset",
            "array",
            "--data-dir",
            tmp_path / "plain.npz",
            "--binarize",
            "static",
            "--out",
            tmp_path / "u",
            *TINY,
        ],
        capsys,
    )
    assert_one_line_error(code, err, "needs labelled images")
    assert code == 1 and not (tmp_path / "u" / "ckpt.pt").exists()
    code, _, err = run_cli(
        ["sample", "--checkpoint", tmp_path / "run" / "ckpt.pt", "--out", tmp_path / "all.png"], capsys
    )
    assert code == 0
