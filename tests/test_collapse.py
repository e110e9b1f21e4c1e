"""Posterior-collapse diagnostics: the KL term per coordinate and split into I(x;z) and the marginal KL, in `evaluate`
and per epoch of training, and the warning when few latent units are active."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
import torch.distributions as td
from conftest import small_config

import pyro_vae.inference.bounds as bounds
from pyro_vae import VAE, Bernoulli, FullCovGaussianGuide, IAFGuide, NetConfig, StandardNormal, evaluate, start_run
from pyro_vae.config import RunConfig, settings
from pyro_vae.errors import ConfigError
from pyro_vae.inference.collapse import (
    MI_WORK,
    GaussianPosteriors,
    collapse_diagnostics,
    gaussian_posteriors,
    images_within,
    mutual_information,
)
from pyro_vae.model.conditional import ConditionalVAE
from pyro_vae.model.guides import DiagonalGaussianGuide, LadderGuide
from pyro_vae.model.hierarchical import HierarchicalVAE
from pyro_vae.model.priors import FlowPrior, LearnedGaussian, MixtureOfGaussians, VampPrior
from pyro_vae.model.semi_supervised import SemiSupervisedVAE
from pyro_vae.pipeline import resume_run
from pyro_vae.training.callbacks import CollapseWarning, collapse_message, record_scalars

NET = NetConfig("mlp", (16,))
SHAPE = (1, 28, 28)
CLASSES = tuple(str(i) for i in range(10))


@pytest.fixture(scope="module")
def images(test_images):
    return test_images["dynamic"][:300]


def spread(vae, gain: float = 10.0, log_variance: float | None = None):
    """``vae`` with its encoder's output layer scaled up (and its biases drawn), so that posteriors differ from
    image to image and from the prior: an untrained model's are all near N(0, I). ``log_variance``: the bias of
    the log-variances, to make the posteriors narrow."""
    torch.manual_seed(1)
    head, d = vae.encoder.net[-1], vae.latent_dim
    with torch.no_grad():
        head.weight.mul_(gain)
        head.bias.copy_(0.5 * torch.randn_like(head.bias))
        if log_variance is not None:
            head.bias[d : 2 * d] = log_variance
    return vae.eval()


def _vae(prior=None, guide=None, d: int = 4):
    torch.manual_seed(0)
    return VAE(NET, prior or StandardNormal(d), Bernoulli(), guide, image_shape=SHAPE)


# --- per-coordinate KL ----------------------------------------------------------------------------------------


def test_per_dim_kls_of_a_diagonal_guide_add_up_to_the_kl_term(images):
    """The independent check: the evaluation's KL term is the prior's hand-written closed form over the whole
    vector; the per-coordinate KLs are torch's univariate closed form. A learned prior moved off N(0, I) too."""
    learned = LearnedGaussian(4)
    with torch.no_grad():
        learned.loc.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
        learned.log_scale.copy_(torch.tensor([0.3, -0.5, 0.0, 0.8]))
    for prior in (StandardNormal(4), learned):
        result = evaluate(spread(_vae(prior)), images, iw_samples=0, batch_size=128)
        summary = result.summary()
        assert len(summary["kl_per_dim"]) == 4 and min(summary["kl_per_dim"]) > 0
        assert sum(summary["kl_per_dim"]) == pytest.approx(summary["kl"], rel=1e-5)
        assert result.kl_per_dim.sum(1) == pytest.approx(result.kl, rel=1e-5, abs=1e-5)  # image by image
        assert summary["kl"] > 1  # (a sum worth checking)


def test_negative_control_per_dim_kls_against_another_prior_do_not_add_up(images):
    """Per-coordinate KLs taken against N(0, I) while the model's prior is the moved learned one: the sum check
    fails by far more than its tolerance."""
    learned = LearnedGaussian(4)
    with torch.no_grad():
        learned.loc.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    vae = spread(_vae(learned))
    summary = evaluate(vae, images, iw_samples=0).summary()
    wrong = bounds.kl_per_dim(gaussian_posteriors(vae, images), torch.zeros(4), torch.ones(4)).double()
    assert wrong.mean(0).sum().item() != pytest.approx(summary["kl"], rel=1e-3)
    assert sum(summary["kl_per_dim"]) == pytest.approx(summary["kl"], rel=1e-5)  # (the right prior's do)


def test_per_dim_kls_of_a_full_covariance_guide_fall_short_by_the_total_correlation(images):
    r"""For a factorised prior, KL(q || p) = sum_u KL(q_u || p_u) + TC, the total correlation
    TC = 1/2 (sum_u log Sigma_uu - log det Sigma) computed here from torch's MultivariateNormal."""
    vae = spread(_vae(guide=FullCovGaussianGuide(4)))
    result = evaluate(vae, images, iw_samples=0)
    summary = result.summary()
    with torch.no_grad():
        q = vae.posterior(images)
    total_correlation = 0.5 * (
        q.covariance_matrix.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        - 2 * q.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    )
    gap = summary["kl"] - sum(summary["kl_per_dim"])
    assert gap == pytest.approx(total_correlation.double().mean().item(), rel=1e-4)
    assert gap > 0.05  # negative control: the sum alone misses the KL term by much more than the tolerance above


@pytest.mark.parametrize(
    "name",
    ["mog", "vamp", "flow", "iaf", "hierarchical", "ladder", "m2"],
)
def test_per_dim_kl_is_absent_where_it_is_not_defined(name, images):
    """Priors that do not factorise (mixture, Vamp, flow), a non-Gaussian guide (IAF), several latent layers and a
    summed-out label (M2): no per-coordinate KL; I(x;z) only where q(z|x) is Gaussian over the whole latent."""
    torch.manual_seed(0)
    x = images[:100]
    if name in ("hierarchical", "ladder"):
        family = (LadderGuide if name == "ladder" else DiagonalGaussianGuide)(4)
        vae = HierarchicalVAE(NET, StandardNormal(2), Bernoulli(), family, image_shape=SHAPE, latent_dims=(4, 2))
    elif name == "m2":
        vae = SemiSupervisedVAE(NET, StandardNormal(4), Bernoulli(), image_shape=SHAPE, class_names=CLASSES)
        x = vae.bound_batch(x)
    else:
        prior = {"mog": MixtureOfGaussians(4, 3), "vamp": VampPrior(4, 5, data_dim=784), "flow": FlowPrior(4)}
        vae = _vae(prior.get(name), IAFGuide(4) if name == "iaf" else None)
    summary = evaluate(vae, x, iw_samples=0).summary()
    assert "kl_per_dim" not in summary and "active_units" in summary
    gaussian = name in ("mog", "vamp", "flow")
    assert ("mutual_information" in summary) == gaussian and ("marginal_kl" in summary) == gaussian
    record = collapse_diagnostics(vae, x, seed=0)
    assert "kl_per_dim" not in record and ("mutual_information" in record) == gaussian


def test_a_conditional_vae_gets_every_diagnostic(images, test_images):
    """q(z | x, y): the code's information about the pair (image, label), per coordinate too."""
    torch.manual_seed(0)
    vae = ConditionalVAE(NET, StandardNormal(4), Bernoulli(), image_shape=SHAPE, class_names=CLASSES).eval()
    labels = torch.arange(len(images)) % 10
    summary = evaluate(vae, vae.observations(images, labels), iw_samples=0).summary()
    assert sum(summary["kl_per_dim"]) == pytest.approx(summary["kl"], rel=1e-5)
    assert summary["mutual_information"] + summary["marginal_kl"] == pytest.approx(summary["kl"], rel=1e-9)


# --- I(x; z) ------------------------------------------------------------------------------------------------------


def test_mutual_information_is_zero_when_the_posterior_ignores_the_image(images):
    """Every q(z|x) the same: log q(z_i | x_j) is the same for every j, so each term is exactly 0."""
    same = GaussianPosteriors(torch.full((500, 3), 0.3), torch.full((500, 3), 0.7))
    assert mutual_information(same, seed=0, draws=3).terms.abs().max() < 1e-12
    vae = spread(_vae())
    with torch.no_grad():
        vae.encoder.net[-1].weight.zero_()  # the encoder's output is its (drawn) bias: q(z|x) ignores x
    summary = evaluate(vae, images, iw_samples=0).summary()
    assert summary["active_units"] == 0 and abs(summary["mutual_information"]) < 1e-9
    assert summary["marginal_kl"] == pytest.approx(summary["kl"], rel=1e-9) and summary["kl"] > 0.1


def test_two_separated_images_with_narrow_posteriors_carry_log_2_nats():
    two = GaussianPosteriors(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]), torch.full((2, 2), 1e-3))
    assert mutual_information(two, seed=0, draws=10).value == pytest.approx(math.log(2), abs=1e-9)
    # Negative control: overlapping posteriors share the code, and carry much less.
    close = GaussianPosteriors(torch.tensor([[-0.1, 0.0], [0.1, 0.0]]), torch.ones(2, 2))
    assert mutual_information(close, seed=0, draws=1000).value < 0.05


def test_each_term_is_at_most_log_n():
    torch.manual_seed(0)
    q = GaussianPosteriors(torch.randn(400, 5) * 3, torch.rand(400, 5) * 0.05 + 0.01)
    found = mutual_information(q, seed=2, draws=2)
    assert found.terms.max() <= math.log(400) + 1e-9 and found.value == pytest.approx(math.log(400), abs=0.01)


def _gaussian_channel(full: bool, n: int = 3000, seed: int = 0):
    """Images whose posterior means are x_n ~ N(0, T) and whose posteriors share a covariance S: the mutual
    information of the channel z = x + N(0, S) is 1/2 log det(S + T) - 1/2 log det S."""
    torch.manual_seed(seed)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.4, 0.0], [0.5, -0.3, 0.6]])  # S = A A^T
    b = torch.tensor([[1.5, 0.0, 0.0], [-0.5, 1.0, 0.0], [0.2, 0.3, 0.8]])  # T = B B^T
    if not full:
        a = torch.diag(a.diagonal())
    loc = torch.randn(n, 3) @ b.T
    tril = a.expand(n, 3, 3).clone()
    truth = 0.5 * (torch.logdet(a @ a.T + b @ b.T) - torch.logdet(a @ a.T)).item()
    return GaussianPosteriors(loc, tril.pow(2).sum(-1).sqrt(), tril if full else None), truth


@pytest.mark.parametrize("full", [False, True])
def test_mutual_information_of_a_gaussian_channel(full):
    """A known answer. The 3000 images are a sample of the channel's inputs: the estimator's expectation is a lower
    bound on the channel's information, close to it here (the tolerance is about twice its Monte Carlo error)."""
    q, truth = _gaussian_channel(full)
    assert mutual_information(q, seed=1).value == pytest.approx(truth, abs=0.05)


def test_a_narrow_channel_saturates_at_log_n():
    """Posteriors 100 times narrower than the spread of the images: the channel carries 3 log 100 = 13.8 nats, and
    the estimate on 1000 images stops at log 1000 = 6.9 (the bias is downwards)."""
    torch.manual_seed(0)
    q = GaussianPosteriors(torch.randn(1000, 3), torch.full((1000, 3), 0.01))
    found = mutual_information(q, seed=0).value
    assert found <= math.log(1000) and found == pytest.approx(math.log(1000), abs=0.01)
    assert 3 * 0.5 * math.log(1 + 100**2) > found + 6


def test_negative_control_a_full_covariance_read_as_its_marginals_misses_the_channels_answer():
    q, truth = _gaussian_channel(full=True)
    marginals = GaussianPosteriors(q.loc, q.scale)  # the correlations dropped
    assert abs(mutual_information(marginals, seed=1).value - truth) > 0.5


def _torch_terms(q: GaussianPosteriors, seed: int, draws: int) -> torch.Tensor:
    """The estimator written with torch's own mixture density, on the draws mutual_information makes."""
    q = q.to(torch.float64)
    n, d = q.loc.shape
    eps = torch.randn(draws, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if q.scale_tril is None:
        components = td.Independent(td.Normal(q.loc, q.scale), 1)
        z = q.loc + q.scale * eps
    else:
        components = td.MultivariateNormal(q.loc, scale_tril=q.scale_tril)
        z = q.loc + (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    aggregate = td.MixtureSameFamily(td.Categorical(torch.ones(n, dtype=torch.float64)), components)
    return (components.log_prob(z) - aggregate.log_prob(z.unsqueeze(-2)).squeeze(-1)).mean(0)


@pytest.mark.parametrize("full", [False, True])
def test_the_chunked_products_are_torchs_mixture_density(full, monkeypatch):
    """The pairwise densities by matrix products, in chunks of a few rows (forced here), against torch's
    MixtureSameFamily log_prob of the same draws; a wrongly paired set of scales is the negative control."""
    q, _ = _gaussian_channel(full, n=300)
    torch.manual_seed(3)
    q.scale = q.scale * torch.rand(300, 1).add(0.5)  # (posteriors of different widths)
    if full:
        q.scale_tril = q.scale_tril * q.scale[:, :1, None] / q.scale_tril[:, :1, :1]
    monkeypatch.setattr("pyro_vae.inference.collapse._ELEMENTS_PER_CHUNK", 7 * 300)
    found = mutual_information(q, seed=5, draws=2)
    assert found.terms == pytest.approx(_torch_terms(q, 5, 2), abs=1e-9)
    shuffled = q.rows(torch.arange(300)).to(torch.float64)
    shuffled.scale = shuffled.scale.roll(1, 0)
    if full:
        shuffled.scale_tril = shuffled.scale_tril.roll(1, 0)
    assert found.terms != pytest.approx(_torch_terms(shuffled, 5, 2), abs=1e-3)


def test_the_work_is_bounded_by_a_random_subset_of_the_images(images, monkeypatch):
    torch.manual_seed(0)
    q = GaussianPosteriors(torch.randn(2000, 4), torch.rand(2000, 4) + 0.2)
    found = mutual_information(q, seed=0, work=1e6)
    m = images_within(1e6, 4 + 4 + 1)
    assert len(found.rows) == m < 2000 and found.rows.unique().numel() == m and bool((found.rows.diff() > 0).all())
    assert images_within(MI_WORK, 20 * 21 // 2 + 21) >= 10_000  # (a 20-d full covariance: the whole test set)
    # In an evaluation: how many images it used, and the marginal KL over those images' KL terms.
    monkeypatch.setattr(bounds, "mutual_information", functools.partial(mutual_information, work=5e4))
    result = evaluate(spread(_vae()), images, iw_samples=0)
    summary, rows = result.summary(), result.mutual_information.rows
    assert summary["mutual_information_images"] == len(rows) == images_within(5e4, 9) < len(images)
    mean_kl = result.kl[rows].double().mean().item()
    assert summary["marginal_kl"] == pytest.approx(mean_kl - summary["mutual_information"])


# --- in the evaluation ------------------------------------------------------------------------------------------


def test_the_evaluations_other_numbers_and_the_random_state_are_unchanged(images, monkeypatch):
    """The evaluation with its collapse diagnostics switched off (as it was before them) and on: every other
    number bit for bit, and the global random state after it."""
    vae = spread(_vae())
    with monkeypatch.context() as before:
        before.setattr(bounds, "_posterior_columns", lambda vae, xb: {})
        before.setattr(bounds, "_mutual_information", lambda batches, seed: None)
        torch.manual_seed(123)
        without = evaluate(vae, images, iw_samples=5, seed=3, batch_size=128).summary()
        state_without = torch.get_rng_state()
    torch.manual_seed(123)
    with_them = evaluate(vae, images, iw_samples=5, seed=3, batch_size=128).summary()
    assert torch.equal(torch.get_rng_state(), state_without)
    assert {key: with_them[key] for key in without} == without
    assert set(with_them) - set(without) == {
        "kl_per_dim",
        "mutual_information",
        "mutual_information_stderr",
        "mutual_information_images",
        "marginal_kl",
    }
    again = evaluate(vae, images, iw_samples=0, seed=3, batch_size=128).summary()
    other = evaluate(vae, images, iw_samples=0, seed=4, batch_size=128).summary()
    assert again["mutual_information"] == with_them["mutual_information"]
    assert other["mutual_information"] != with_them["mutual_information"]
    assert other["mutual_information"] == pytest.approx(with_them["mutual_information"], abs=0.1)
    json.dumps(with_them)  # (plain numbers: `pyro-vae elbo --json` prints it)


def test_the_aggregate_spans_every_batch(images):
    """I(x;z) is one estimate over all images (computed after the batches are gathered), not an average of
    per-batch estimates, each of which would be capped at log(batch size)."""
    vae = spread(_vae(d=8), log_variance=-6.0)
    whole = evaluate(vae, images, iw_samples=0, batch_size=500).summary()["mutual_information"]
    batched = evaluate(vae, images, iw_samples=0, batch_size=32).summary()["mutual_information"]
    assert batched == pytest.approx(whole, abs=1e-5) and whole > math.log(32) + 0.5


def test_the_split_adds_up_and_the_marginal_kl_is_a_direct_estimate(images):
    """marginal KL = mean KL - I by construction; against it, the direct Monte Carlo estimate
    E_q(z)[log q(z) - log p(z)] on the estimator's own draws (torch densities), up to Monte Carlo error."""
    vae = spread(_vae())
    summary = evaluate(vae, images, iw_samples=0).summary()
    assert summary["mutual_information"] + summary["marginal_kl"] == pytest.approx(summary["kl"], rel=1e-9)
    assert 0 < summary["mutual_information"] <= math.log(len(images)) and summary["marginal_kl"] > 0
    q = gaussian_posteriors(vae, images).to(torch.float64)
    draws = 20
    eps = torch.randn(draws, len(images), 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = q.loc + q.scale * eps
    components = td.Independent(td.Normal(q.loc, q.scale), 1)
    aggregate = td.MixtureSameFamily(td.Categorical(torch.ones(len(images), dtype=torch.float64)), components)
    direct = (aggregate.log_prob(z.unsqueeze(-2)).squeeze(-1) - td.Normal(0.0, 1.0).log_prob(z).sum(-1)).mean()
    assert summary["marginal_kl"] == pytest.approx(direct.item(), abs=0.05)
    assert abs(direct.item() - summary["kl"]) > 0.5  # negative control: the whole KL term is not the marginal KL


# --- during training -------------------------------------------------------------------------------------------


def _run(tmp_path, data_dir, *, collapse_warning=None, **options):
    config = small_config(data_dir, **options)
    if collapse_warning is not None:
        config.schedule.collapse_warning = collapse_warning
    said = []
    trainer = start_run(config, tmp_path, device="cpu", progress=False, log=said.append)
    trainer.fit()
    return trainer, [line for line in said if line.startswith("posterior collapse")]


def test_each_epochs_record_holds_the_diagnostics(tmp_path, data_dir):
    trainer, said = _run(tmp_path, data_dir, epochs=2, train_limit=1000)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == trainer.metrics and said == []
    for record in records:
        assert 0 < record["val_active_units"] <= 8 and len(record["val_kl_per_dim"]) == 8
        assert 0 < record["val_mutual_information"] <= math.log(500)  # (the 500 validation images)
    assert records[1]["val_mutual_information"] > records[0]["val_mutual_information"]  # it learns to use z
    # The evaluation's numbers for those images (the same estimator, its draws from the same seed).
    summary = evaluate(trainer.vae, trainer.data.images["val"], iw_samples=0, seed=trainer.config.seed).summary()
    assert records[-1]["val_active_units"] == summary["active_units"]
    assert records[-1]["val_kl_per_dim"] == pytest.approx(summary["kl_per_dim"], rel=1e-9)
    assert records[-1]["val_mutual_information"] == pytest.approx(summary["mutual_information"], rel=1e-9)
    scalars = record_scalars(records[-1])
    assert scalars["collapse/active_units"] == records[-1]["val_active_units"]
    assert [scalars[f"collapse/kl_dim_{u:02d}"] for u in range(8)] == records[-1]["val_kl_per_dim"]


def test_a_resumed_run_writes_the_same_records(tmp_path, data_dir):
    full, _ = _run(tmp_path / "full", data_dir, epochs=2, train_limit=600)
    _run(tmp_path / "part", data_dir, epochs=1, train_limit=600)
    resumed = resume_run(tmp_path / "part" / "ckpt.pt", epochs=2, data_dir=data_dir, device="cpu", progress=False)
    resumed.fit()
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("seconds", "images_per_s")} for m in ms]  # noqa
    assert strip(resumed.metrics) == strip(full.metrics) and "val_mutual_information" in resumed.metrics[-1]


def test_a_collapsed_run_warns_once(tmp_path, data_dir):
    """A KL weight of 100 switches every unit off within an epoch: one line, after the first epoch, not repeated."""
    trainer, said = _run(tmp_path, data_dir, epochs=2, train_limit=1000, beta=100.0, lr=1e-2)
    assert [m["val_active_units"] for m in trainer.metrics] == [0, 0]
    assert said == [collapse_message(trainer.metrics[0], 8)]
    assert said[0].startswith("posterior collapse: 0 of 8 latent units active after epoch 1 (Var_x E_q[z_u] > 0.01")


def test_negative_controls_no_warning_when_healthy_silenced_or_warming_up(tmp_path, data_dir):
    healthy, said = _run(tmp_path / "healthy", data_dir, epochs=2, train_limit=1000)
    assert said == [] and all(m["val_active_units"] >= 1 for m in healthy.metrics)
    silenced, said = _run(tmp_path / "silenced", data_dir, epochs=1, train_limit=1000, beta=100.0, lr=1e-2,
                          collapse_warning=0.0)  # fmt: skip
    assert said == [] and silenced.metrics[0]["val_active_units"] == 0
    warming, said = _run(tmp_path / "warming", data_dir, epochs=2, train_limit=1000, beta=100.0, lr=1e-2,
                         warmup_epochs=2)  # fmt: skip
    assert said == [] and warming.metrics[-1]["val_active_units"] == 0  # collapsed, but still in the warm-up


def test_the_warning_counts_against_the_share_of_units():
    class View:  # the part of the trainer the callback reads
        def __init__(self, share):
            self.config = RunConfig()
            self.config.schedule.collapse_warning = share
            self.vae = type("V", (), {"latent_dim": 20})()
            self.said = []

        def log(self, message):
            self.said.append(message)

    for active, share, warns in ((1, 0.1, True), (2, 0.1, False), (9, 0.5, True), (10, 0.5, False), (0, 0, False)):
        view = View(share)
        CollapseWarning().on_epoch_end(view, {"epoch": 3, "val_active_units": active})
        assert bool(view.said) == warns, (active, share)
    view = View(0.1)
    CollapseWarning().on_epoch_end(view, {"epoch": 3, "val_elbo": None})  # no validation split: nothing to say
    assert view.said == []


def test_the_option_is_declared_resumable_and_checked():
    option = next(s for s in settings() if s.key == "schedule.collapse_warning")
    assert option.flag == "--collapse-warning" and option.option.resumable and option.default == 0.1
    with pytest.raises(ConfigError, match="collapse_warning"):
        RunConfig.from_dict({"schedule": {"collapse_warning": 1.5}})


def test_a_hierarchical_record_counts_units_per_layer(images):
    torch.manual_seed(0)
    vae = HierarchicalVAE(NET, StandardNormal(2), Bernoulli(), LadderGuide(4), image_shape=SHAPE, latent_dims=(4, 2))
    record = collapse_diagnostics(vae, images, seed=0)
    assert set(record) == {"active_units", "active_units_per_layer"}
    assert sum(record["active_units_per_layer"]) == record["active_units"]
    assert collapse_diagnostics(vae, images[:1], seed=0) == {}  # (one image: no variance to count units by)


@pytest.mark.slow
def test_the_elbo_table_prints_what_the_json_holds(trained, capsys):
    from test_cli import run_cli

    args = ["elbo", "--checkpoint", trained.out_dir / "ckpt.pt", "--iw-samples", "0", "--limit", "300"]
    code, table, err = run_cli(args, capsys)
    assert code == 0, err
    code, text, _ = run_cli([*args, "--json"], capsys)
    found = json.loads(text)
    line = lambda start: next(row for row in table.splitlines() if row.strip().startswith(start))  # noqa: E731
    assert float(line("I(x;z)").split()[5]) == round(found["mutual_information"], 3)
    assert float(line("marginal KL").split()[-1]) == round(found["marginal_kl"], 3)
    units = [line for line in table.splitlines() if line.startswith("    ") and "layer" not in line]
    printed = [float(v) for line in units for v in line.split()]
    assert printed == [round(v, 2) for v in found["kl_per_dim"]], (printed, found["kl_per_dim"])
