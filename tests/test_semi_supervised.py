"""M2, the semi-supervised VAE: Pyro's enumerated ELBO, the y-summed bounds against the hand-written ELBO (and
negative controls that must fail), the classifier's term, the labelled subset, training, and bad input."""

import pyro
import pytest
import torch
from conftest import small_run
from pyro.infer import TraceEnum_ELBO

from pyro_vae import Bernoulli, NetConfig, RunConfig, StandardNormal, VAEData, evaluate
from pyro_vae.config import DataConfig
from pyro_vae.data.vae_data import keep_labels
from pyro_vae.errors import AgreementError, ConfigError
from pyro_vae.inference.bounds import AGREEMENT_Z_LIMIT
from pyro_vae.inference.enumerated import analytic_enumerated_elbo, enumerated_elbo, enumerated_iwae_log_weights
from pyro_vae.model.semi_supervised import SemiSupervisedVAE
from pyro_vae.model.vae import _kl_weight

CLASSES = tuple(str(i) for i in range(10))


@pytest.fixture(scope="module")
def labelled(data_dir):
    data = VAEData(DataConfig("mnist", "dynamic"), data_dir, splits=("test",))
    return data.observed("test")[:300], data.labels["test"][:300]


def _m2(cls=SemiSupervisedVAE, kind="mlp", weight=3.0):
    torch.manual_seed(0)
    net = NetConfig(kind=kind, hidden=(64,), channels=(8, 16))
    vae = cls(
        net, StandardNormal(4), Bernoulli(), image_shape=(1, 28, 28), class_names=CLASSES, classifier_weight=weight
    )
    return vae.eval()


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_the_per_image_elbo_read_off_traces_is_pyros_trace_enum_elbo(kind, labelled):
    x, y = labelled
    vae = _m2(kind=kind)
    batch = vae.bound_batch(x[:64], y[:64])  # every label hidden: y summed out
    pyro.set_rng_seed(1)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, batch)
    pyro.set_rng_seed(1)
    assert -enumerated_elbo(vae, batch).sum().item() == pytest.approx(loss, rel=1e-6)


def test_the_classifier_term_is_alpha_log_q_of_the_labelled_images_and_only_in_training(labelled):
    x, y = labelled
    vae = _m2(weight=3.0)
    hidden = y[:64].clone()
    hidden[32:] = -1  # a mixed batch: 32 labelled, 32 not
    batch = vae.observations(x[:64], hidden)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(2)
    bound = elbo.loss(vae.model, vae.guide, batch)
    vae.train()
    pyro.set_rng_seed(2)
    trained = elbo.loss(vae.model, vae.guide, batch)
    log_q = torch.log_softmax(vae.classifier(x[:32]), -1).gather(1, y[:32, None]).sum().item()
    assert trained - bound == pytest.approx(-3.0 * log_q, rel=1e-4)


def test_the_y_summed_bounds_agree_with_the_handwritten_elbo_and_order(labelled):
    x, y = labelled
    vae = _m2()
    result = evaluate(vae, vae.bound_batch(x, y), iw_samples=20, seed=3, labels=y)
    summary = result.summary()
    assert abs(result.agreement_z) < AGREEMENT_Z_LIMIT and result.kl_method == "analytic", summary
    result.check_agreement()
    assert summary["iwae"] > summary["elbo"] and 0 <= summary["accuracy"] <= 1
    pyro.set_rng_seed(4)
    iwae_1 = enumerated_iwae_log_weights(vae, vae.bound_batch(x, y), 1)[0]
    pyro.set_rng_seed(4)
    u = enumerated_elbo(vae, vae.bound_batch(x, y))
    assert bool((iwae_1 >= u - 1e-3).all())  # Jensen over q(y|x), on the same draws


def paired_z(pyro_values, hand_values):
    d = (pyro_values - hand_values).double()
    return (d.mean() / (d.std() / len(d) ** 0.5)).item()


def test_negative_control_a_handwritten_elbo_without_the_entropy_term_fails(labelled):
    x, y = labelled
    vae = _m2()
    batch = vae.bound_batch(x, y)
    pyro.set_rng_seed(5)
    pyro_u = enumerated_elbo(vae, batch)
    pyro.set_rng_seed(5)
    hand = analytic_enumerated_elbo(vae, batch).elbo
    probs = torch.softmax(vae.classifier(x), -1)
    entropy = -(probs * probs.log()).sum(-1)
    assert abs(paired_z(pyro_u, hand)) < AGREEMENT_Z_LIMIT
    assert abs(paired_z(pyro_u, hand - entropy)) > 2 * AGREEMENT_Z_LIMIT


class ModelDecodesTheNextClass(SemiSupervisedVAE):
    def model(self, batch, kl_scale=1.0):
        for part, x, labels in self._parts(batch):
            with pyro.plate(part, x.shape[0]):
                y = pyro.sample(f"y_{part}", self.y_prior(x), obs=labels)
                with _kl_weight(kl_scale):
                    z = pyro.sample(f"z_{part}", self.prior())
                pyro.sample(f"x_{part}", self.likelihood(self.decode(z, (y + 1) % 10)), obs=x)


@pytest.fixture(scope="module")
def trained_m2(tmp_path_factory, data_dir):
    trainer = small_run(
        tmp_path_factory.mktemp("m2"), data_dir, epochs=2, structure="semi-supervised", train_limit=4000
    )
    trainer.fit()
    return trainer


def test_negative_control_a_model_decoding_the_wrong_class_fails_the_check(trained_m2, labelled):
    x, y = labelled
    right = trained_m2.vae
    evaluate(right, right.bound_batch(x, y), iw_samples=0).check_agreement()
    wrong = ModelDecodesTheNextClass(
        right.net_config, StandardNormal(8), Bernoulli(), image_shape=(1, 28, 28), class_names=CLASSES
    )
    wrong.load_state_dict(right.state_dict())
    with pytest.raises(AgreementError, match="disagree"):
        evaluate(wrong, wrong.bound_batch(x, y), iw_samples=0).check_agreement()


def test_the_classifier_learns_from_its_term_and_not_without_it(trained_m2, tmp_path, data_dir, labelled):
    """Every label kept: the default weight (0.1) trains q(y|x) well above chance in two epochs; with weight 0
    (the control) nothing in the labelled bound reaches the classifier."""
    x, y = labelled
    assert trained_m2.config.model.classifier_weight == pytest.approx(0.1)
    accuracy = evaluate(trained_m2.vae, trained_m2.vae.bound_batch(x, y), iw_samples=0, labels=y).summary()["accuracy"]
    control = small_run(
        tmp_path, data_dir, epochs=2, structure="semi-supervised", train_limit=4000, classifier_weight=0.0
    )
    control.fit()
    chance = evaluate(control.vae, control.vae.bound_batch(x, y), iw_samples=0, labels=y).summary()["accuracy"]
    assert accuracy > 0.7 and chance < 0.3, (accuracy, chance)


def test_labelled_subsets_are_balanced_seeded_and_checked():
    labels = torch.arange(1000) % 10
    kept = keep_labels(labels, 100, seed=0, classes=10)
    assert int((kept >= 0).sum()) == 100 and torch.bincount(kept[kept >= 0]).tolist() == [10] * 10
    assert bool((kept[kept >= 0] == labels[kept >= 0]).all())
    assert torch.equal(kept, keep_labels(labels, 100, seed=0, classes=10))
    assert not torch.equal(kept, keep_labels(labels, 100, seed=1, classes=10))
    assert torch.bincount(keep_labels(labels, 13, 0, 10)[keep_labels(labels, 13, 0, 10) >= 0]).tolist()[:4] == [
        2,
        2,
        2,
        1,
    ]
    with pytest.raises(ConfigError, match="more than the 1000 training images"):
        keep_labels(labels, 1001, 0, 10)
    with pytest.raises(ConfigError, match="fewer than the 10 classes"):
        keep_labels(labels, 9, 0, 10)


def test_m2_refuses_what_cannot_work():
    with pytest.raises(ConfigError, match="applies to --structure semi-supervised"):
        RunConfig.from_dict({"data": {"labelled": 100}})
    with pytest.raises(ConfigError, match="applies to --structure semi-supervised"):
        RunConfig.from_dict({"model": {"classifier_weight": 1.0}})
    with pytest.raises(ConfigError, match="pseudo-images"):
        RunConfig.from_dict({"model": {"structure": "semi-supervised", "prior": {"name": "vamp"}}})
    with pytest.raises(ConfigError, match="does not apply"):
        _m2().objective(RunConfig.from_dict({"objective": {"kind": "iwae"}}).objective)


def test_the_bounds_hide_given_labels_and_labels_are_optional(labelled):
    from pyro_vae.errors import DataError

    x, y = labelled
    vae = _m2()
    hidden = evaluate(vae, vae.bound_batch(x[:64]), iw_samples=5, seed=2).summary()
    given = evaluate(vae, vae.observations(x[:64], y[:64]), iw_samples=5, seed=2).summary()
    assert hidden["elbo"] == given["elbo"] and hidden["iwae"] == given["iwae"] and "accuracy" not in hidden
    vae.check_labels(None, 64)  # the bound on log p(x) needs no labels
    with pytest.raises(DataError, match="labels are classes"):
        vae.check_labels(torch.tensor([0, -2]), 2)


def test_the_command_line_trains_m2_and_refuses_bad_input(tmp_path, data_dir, capsys):
    import numpy as np
    from test_cli import TINY, assert_one_line_error, run_cli

    out = tmp_path / "run"
    m2 = ["train", "--structure", "semi-supervised", "--data-dir", data_dir, "--epochs", "1", *TINY]
    code, _, err = run_cli([*m2, "--labelled", "20", "--out", out], capsys)
    assert code == 0, err
    code, stdout, _ = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--limit", "100", "--by-class"], capsys)
    assert code == 0 and "classifier q(y|x) accuracy" in stdout and "accuracy" in stdout.splitlines()[-11]
    code, _, err = run_cli(["plot", "--checkpoint", out / "ckpt.pt", "--out", tmp_path / "plots"], capsys)
    assert code == 0 and (tmp_path / "plots" / "confusion.png").is_file()
    for flags, message in (
        (["--labelled", "100000"], "more than the"),
        (["--labelled", "5"], "fewer than the 10 classes"),
        (["--objective", "iwae"], "does not apply"),
    ):
        code, _, err = run_cli([*m2, *flags, "--out", tmp_path / "bad"], capsys)
        assert_one_line_error(code, err, message)
        assert code == 2 and not (tmp_path / "bad" / "ckpt.pt").exists()
    images = (np.random.default_rng(0).random((1000, 28, 28)) * 255).astype(np.uint8)
    np.savez(tmp_path / "short.npz", train=images, train_labels=np.arange(999) % 10)
    code, _, err = run_cli(
        [
            "train",
            "--structure",
            "semi-supervised",
            "--dataset",
            "array",
            "--data-dir",
            tmp_path / "short.npz",
            "--binarize",
            "static",
            "--out",
            tmp_path / "short",
            *TINY,
        ],
        capsys,
    )
    assert_one_line_error(code, err, "labels must be 1000 integers")
    assert code == 1


def test_class_folders_give_their_names_and_an_export_round_trip(tmp_path, data_dir, labelled):
    from PIL import Image

    from pyro_vae.pipeline import load_model, sample_checkpoint
    from pyro_vae.sharing import export_checkpoint, load

    rng = torch.Generator().manual_seed(0)
    for name in ("cat", "dog", "owl"):
        (tmp_path / "pets" / "train" / name).mkdir(parents=True)
        for i in range(40):
            pixels = (torch.rand(28, 28, generator=rng) * 255).byte().numpy()
            Image.fromarray(pixels).save(tmp_path / "pets" / "train" / name / f"{i}.png")
    config = RunConfig.from_dict(
        {
            "data": {
                "dataset": "folder",
                "root": str(tmp_path / "pets"),
                "binarize": "static",
                "val_size": 10,
                "test_size": 10,
                "labelled": 30,
            },
            "model": {"structure": "semi-supervised", "latent_dim": 2, "net": {"hidden": [16]}},
            "schedule": {"epochs": 1},
        }
    )
    from pyro_vae import start_run

    start_run(config, tmp_path / "run", device="cpu", progress=False).fit()
    vae, _ = load_model(tmp_path / "run" / "ckpt.pt", device="cpu")
    assert vae.class_names == ("cat", "dog", "owl") and vae.classifier_weight == pytest.approx(0.1 * 100 / 30)
    owls = sample_checkpoint(tmp_path / "run" / "ckpt.pt", 4, label="owl", device="cpu")
    assert owls.shape == (4, 1, 28, 28)
    exported = load(export_checkpoint(tmp_path / "run" / "ckpt.pt", tmp_path / "exported"), device="cpu")
    for a, b in zip(vae.state_dict().values(), exported.state_dict().values()):
        assert torch.equal(a, b)
