"""``--objective iwae-dreg``: the doubly reparameterised IWAE gradient against RenyiELBO(alpha=0) on the same draws
(the loss and the decoder's gradient equal), against a hand-written DReG estimator (equal), and on average over many
draws (the encoder's mean gradient is IWAE's; the path-only "STL" gradient, w~ instead of w~^2, and DReG without the
parents' terms of a second latent layer are not: the negative controls); its encoder signal-to-noise ratio, sharded
batches, the refusals and a short run of the command."""

from __future__ import annotations

import copy
import json
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import RenyiELBO
from pyro_vae.cli.main import main

import pyro_vae.inference.dreg as dreg
from pyro_vae import Bernoulli, NetConfig, RunConfig, StandardNormal
from pyro_vae.errors import ConfigError
from pyro_vae.inference.dreg import DoublyReparameterizedIWAE, check_guide_family, stop_gradient
from pyro_vae.inference.global_noise import GlobalBatchNoise
from pyro_vae.inference.objectives import OBJECTIVES, ObjectiveConfig
from pyro_vae.model.guides import DiagonalGaussianGuide, FullCovGaussianGuide, IAFGuide, LadderGuide
from pyro_vae.model.hierarchical import HierarchicalVAE
from pyro_vae.model.semi_supervised import SemiSupervisedVAE
from pyro_vae.model.vae import VAE

Z_LIMIT = 4.0  # |z| of a mean gradient against IWAE's, per coordinate, for an unbiased estimator
CONTROL_Z = 10.0  # |z| a biased control must reach on some coordinate (observed: 100 for STL, 28 without parents)
NET = NetConfig(hidden=(16,))
STRUCTURES = ("diagonal", "full-cov", "two layers bottom-up", "three layers ladder")


def renyi(k: int) -> RenyiELBO:
    return RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)


def _vae(structure: str) -> VAE:
    """A small untrained model on 4x4 images: one layer of 3, or layers of 4, 3 and 2 (4 and 3 bottom-up)."""
    torch.manual_seed(0)
    if structure == "diagonal":
        return VAE(NET, StandardNormal(3), Bernoulli(), image_shape=(1, 4, 4))
    if structure == "full-cov":
        return VAE(NET, StandardNormal(3), Bernoulli(), FullCovGaussianGuide(3), image_shape=(1, 4, 4))
    ladder = structure.endswith("ladder")
    dims = (4, 3, 2) if ladder else (4, 3)
    return HierarchicalVAE(
        NET,
        StandardNormal(dims[-1]),
        Bernoulli(),
        (LadderGuide if ladder else DiagonalGaussianGuide)(4),
        image_shape=(1, 4, 4),
        latent_dims=dims,
        layer_hidden=(8,),
    )


def _images() -> torch.Tensor:
    return torch.bernoulli(torch.rand(4, 16, generator=torch.Generator().manual_seed(1)))


def _grads(vae: VAE, elbo, x: torch.Tensor, seed: int) -> tuple[float, dict[str, torch.Tensor]]:
    """The loss and every parameter's gradient of one ``loss_and_grads`` with the random state at ``seed``."""
    vae.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = elbo.loss_and_grads(vae.model, vae.guide, x)
    return loss, {name: p.grad.clone() for name, p in vae.named_parameters() if p.grad is not None}


@pytest.fixture(autouse=True)
def param_store():
    """The hand-made programs here name their parameters in Pyro's global store: emptied around each test."""
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture
def double():
    """float64 throughout: the comparisons on the same draws are then exact to ~1e-15."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


# -- on the same draws ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
def test_the_loss_and_the_decoders_gradient_are_renyis_on_the_same_draws(structure, double):
    vae, x = _vae(structure), _images()
    iwae_loss, iwae = _grads(vae, renyi(5), x, seed=3)
    dreg_loss, ours = _grads(vae, DoublyReparameterizedIWAE(5, max_plate_nesting=1), x, seed=3)
    torch.manual_seed(3)
    assert DoublyReparameterizedIWAE(5, max_plate_nesting=1).loss(vae.model, vae.guide, x) == dreg_loss
    assert dreg_loss == pytest.approx(iwae_loss, rel=1e-12)
    # The generative parameters the guide does not read: the decoder's, the bottom-up model's conditionals.
    read_by_guide = ("encoder", "upward", *(("conditionals",) if structure.endswith("ladder") else ()))
    model_only = [n for n in iwae if not n.startswith(read_by_guide)]
    assert model_only and set(ours) == set(iwae)
    for name in model_only:
        assert torch.allclose(ours[name], iwae[name], rtol=1e-10, atol=1e-12), name
    encoder = [n for n in iwae if n.startswith("encoder")]  # (which differ: no score term)
    assert not all(torch.allclose(ours[n], iwae[n], rtol=1e-3) for n in encoder)


def handwritten_dreg(vae: VAE, x: torch.Tensor, k: int, seed: int) -> dict[str, torch.Tensor]:
    r"""The DReG gradient of the negative bound written without Pyro: the guide's draws from the noise Pyro draws,
    :math:`g_k = \partial \log w_k / \partial z_k` with every parameter held fixed (a frozen copy's
    ``log_densities``: the hierarchical guide's :math:`\log q(z_2 \mid z_1)` keeps its dependence on :math:`z_1`), then
    :math:`\sum_k \tilde w_k^2 g_k \cdot z_k + \tilde w_k \log p_\theta(x, \mathrm{sg}(z_k))` differentiated."""
    frozen = copy.deepcopy(vae).requires_grad_(False)
    torch.manual_seed(seed)
    n = x.shape[0]
    if isinstance(vae, HierarchicalVAE):
        eps = [torch.randn(k, n, d) for d in vae.draw_dims]
        z = torch.cat([layer.z for layer in vae.sample_layers(x, eps)], -1)
    elif isinstance(vae.guide_family, FullCovGaussianGuide):
        loc, scale_tril = vae.guide_family.loc_scale_tril(vae.encoder(x))
        z = loc + (scale_tril @ torch.randn(k, n, vae.latent_dim).unsqueeze(-1)).squeeze(-1)
    else:
        loc, scale = vae.guide_family.loc_scale(vae.encoder(x))
        z = loc + scale * torch.randn(k, n, vae.latent_dim)
    fixed = z.detach().requires_grad_()
    log_joint, log_q = frozen.log_densities(x)(fixed)
    log_w = log_joint - log_q
    w = torch.softmax(log_w.detach(), 0)
    (g,) = torch.autograd.grad(log_w.sum(), fixed)
    model_log_joint = vae.log_densities(x)(z.detach())[0]  # (its log q is left out: no score term)
    surrogate = ((w**2).unsqueeze(-1) * g * z).sum() + (w * model_log_joint).sum()
    vae.zero_grad(set_to_none=True)
    (-surrogate).backward()
    return {name: p.grad.clone() for name, p in vae.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_gradient_is_the_handwritten_dreg_estimators_on_the_same_draws(structure, double, monkeypatch):
    """All parameters, guide's and model's (the ladder's conditionals are both), several latent sites included."""
    vae, x = _vae(structure), _images()
    expected = handwritten_dreg(vae, x, 5, seed=3)
    _, ours = _grads(vae, DoublyReparameterizedIWAE(5, max_plate_nesting=1), x, seed=3)
    assert set(ours) == set(expected)
    for name in expected:
        assert torch.allclose(ours[name], expected[name], rtol=1e-9, atol=1e-12), name
    # The control: without the parents' terms (log q(z2 | z1) detached as a whole) a layered guide's differ.
    monkeypatch.setattr(dreg, "_parent_terms", lambda *args: torch.zeros(()))
    _, cut = _grads(vae, DoublyReparameterizedIWAE(5, max_plate_nesting=1), x, seed=3)
    same = all(torch.allclose(cut[name], expected[name], rtol=1e-9, atol=1e-12) for name in expected)
    assert same == (structure in ("diagonal", "full-cov"))


def test_one_particle_is_the_sticking_the_landing_elbo_gradient(double):
    """K = 1: w~ = 1, the path-only ELBO gradient (Roeder et al. 2017), the loss the ELBO's (no particles' plate)."""
    vae, x = _vae("diagonal"), _images()
    loss, ours = _grads(vae, DoublyReparameterizedIWAE(1, max_plate_nesting=1), x, seed=3)
    assert loss == pytest.approx(_grads(vae, renyi(1), x, seed=3)[0], rel=1e-12)
    expected = handwritten_dreg(vae, x, 1, seed=3)
    for name in expected:
        assert torch.allclose(ours[name], expected[name], rtol=1e-9, atol=1e-12), name


# -- on average over many draws ------------------------------------------------------------------------------------


class Replicas:
    r"""A small model many times over: 3 images of 8 pixels, :math:`z \in \mathbb R^2`, :math:`x \mid z \sim
    \mathrm{Bernoulli}(\sigma(Wz + c))` with a sharp :math:`W`; the guide :math:`q(z_i) = \mathcal N(\mu_i,
    \sigma_i^2)` starts at the prior, far from the posterior (uneven weights, so the STL bias is large). Each of the
    ``replicas`` copies of the 3 images has its own guide parameters, so one call gives ``replicas`` independent draws
    of the guide's gradient (one row each). ``scale``: a ``poutine.scale`` on the latent sites, or everywhere."""

    def __init__(self, replicas: int, scale: float = 1.0, everywhere: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.w = (3 * torch.randn(8, 2, generator=g)).requires_grad_()
        self.c = torch.zeros(8, requires_grad=True)
        self.x = torch.bernoulli(torch.full((3, 8), 0.5), generator=g).repeat(replicas, 1)
        self.guide_params = [torch.zeros(3 * replicas, 2, requires_grad=True) for _ in range(2)]
        self.replicas, self.scale, self.everywhere = replicas, scale, everywhere

    def model(self) -> None:
        pyro.param("w", self.w)
        with poutine.scale(scale=self.scale if self.everywhere else 1.0), pyro.plate("data", len(self.x)):
            with poutine.scale(scale=1.0 if self.everywhere else self.scale):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z @ self.w.T + self.c).to_event(1), obs=self.x)

    def guide(self) -> None:
        loc, log_scale = self.guide_params
        pyro.param("loc", loc)
        with poutine.scale(scale=self.scale), pyro.plate("data", len(self.x)):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def guide_gradients(self, elbo, seed: int = 1) -> torch.Tensor:
        """``(replicas, 12)``: each replica's gradient in its guide's parameters (float64, for the statistics)."""
        for p in (self.w, self.c, *self.guide_params):
            p.grad = None
        torch.manual_seed(seed)
        elbo.loss_and_grads(self.model, self.guide)
        return torch.cat([p.grad.view(self.replicas, -1) for p in self.guide_params], 1).double()


class Chain(Replicas):
    r"""Two latent layers, :math:`z_2 \to z_1 \to x`, inferred bottom-up: :math:`q(z_1) = \mathcal N(\mu,
    \sigma_1^2)`, :math:`q(z_2 \mid z_1) = \mathcal N(a z_1 + b, \sigma_2^2)`, per replica (30 coordinates)."""

    def __init__(self, replicas: int) -> None:
        super().__init__(replicas)
        g = torch.Generator().manual_seed(2)
        self.v = torch.randn(2, 2, generator=g)
        self.guide_params = [torch.zeros(3 * replicas, 2, requires_grad=True) for _ in range(5)]
        with torch.no_grad():
            self.guide_params[2].fill_(1.0)  # a

    def model(self) -> None:
        pyro.param("w", self.w)
        with pyro.plate("data", len(self.x)):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.v.T, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z1 @ self.w.T).to_event(1), obs=self.x)

    def guide(self) -> None:
        loc, log_scale, a, b, log_scale2 = self.guide_params
        pyro.param("loc", loc)
        with pyro.plate("data", len(self.x)):
            z1 = pyro.sample("z1", dist.Normal(loc, log_scale.exp()).to_event(1))
            pyro.sample("z2", dist.Normal(a * z1 + b, log_scale2.exp()).to_event(1))


class PathOnly(DoublyReparameterizedIWAE):
    """The negative control: w~ along the path instead of w~^2 (IWAE's gradient without its score term, "STL"),
    biased for K > 1."""

    def _path_factor(self, weights, scale):
        return torch.ones_like(weights)


class ScaleIgnored(DoublyReparameterizedIWAE):
    """The negative control of scaled sites: w~^2 as if unscaled."""

    def _path_factor(self, weights, scale):
        return weights


class NoParents(DoublyReparameterizedIWAE):
    """The negative control of several latent sites: log q(z2 | z1) with its parameters detached as a whole."""

    def loss_and_grads(self, *args, **kwargs):
        saved, dreg._parent_terms = dreg._parent_terms, lambda *a: torch.zeros(())
        try:
            return super().loss_and_grads(*args, **kwargs)
        finally:
            dreg._parent_terms = saved


def paired_z(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per coordinate, the z of the mean difference of paired draws (the same noise)."""
    d = a - b
    return d.mean(0) / (d.std(0) / math.sqrt(len(d)))


def snr(g: torch.Tensor) -> float:
    """|mean| / std per coordinate, averaged over the coordinates."""
    return (g.mean(0).abs() / g.std(0)).mean().item()


def test_the_mean_encoder_gradient_is_iwaes_and_the_path_only_one_is_not():
    """2,000 draws of K = 5 particles (the same noise for the three): DReG's mean encoder gradient within Z_LIMIT
    standard errors of RenyiELBO's on every coordinate (observed max |z| 1.7); STL's off by CONTROL_Z or more
    (observed max |z| 100, every coordinate beyond 8)."""
    model = Replicas(2000)
    iwae = model.guide_gradients(renyi(5))
    ours = paired_z(model.guide_gradients(DoublyReparameterizedIWAE(5, max_plate_nesting=1)), iwae)
    control = paired_z(model.guide_gradients(PathOnly(5, max_plate_nesting=1)), iwae)
    assert ours.abs().max() < Z_LIMIT, ours
    assert control.abs().max() > CONTROL_Z, control


def test_with_two_latent_layers_the_mean_encoder_gradient_is_iwaes_and_without_the_parents_terms_it_is_not():
    """20,000 draws (cheap: one call), K = 5: DReG within Z_LIMIT on all 30 coordinates (observed max |z| 1.85); with
    q(z2 | z1)'s parameters detached as a whole, z1's guide parameters are off (observed max |z| 28)."""
    model = Chain(20_000)
    iwae = model.guide_gradients(renyi(5))
    ours = paired_z(model.guide_gradients(DoublyReparameterizedIWAE(5, max_plate_nesting=1)), iwae)
    control = paired_z(model.guide_gradients(NoParents(5, max_plate_nesting=1)), iwae)
    assert ours.abs().max() < Z_LIMIT, ours
    assert control.abs().max() > CONTROL_Z, control
    assert control[12:].abs().max() < Z_LIMIT  # (z2's own parameters have no parent: the same either way)


@pytest.mark.parametrize("scale,everywhere", [(0.5, False), (2.0, True)])
def test_scaled_sites_keep_the_mean_gradient_of_renyis_scaled_bound(scale, everywhere):
    """The latents scaled by b (as a KL weight would), or every site (as subsampling would): the path factor
    1 - b + b w~ keeps the mean gradient RenyiELBO's (observed max |z| 1.7, 2.0); w~ as if unscaled does not
    (18, 20)."""
    model = Replicas(2000, scale, everywhere)
    iwae = model.guide_gradients(renyi(5))
    ours = paired_z(model.guide_gradients(DoublyReparameterizedIWAE(5, max_plate_nesting=1)), iwae)
    control = paired_z(model.guide_gradients(ScaleIgnored(5, max_plate_nesting=1)), iwae)
    assert ours.abs().max() < Z_LIMIT, ours
    assert control.abs().max() > CONTROL_Z, control


def test_the_encoders_signal_to_noise_ratio_grows_with_k_where_iwaes_falls():
    """Rainforth et al. (2018): IWAE's encoder SNR falls as K grows, DReG's does not. Observed (1,000 draws): IWAE
    0.27 at K = 5, 0.066 at K = 64; DReG 0.42 and 1.07."""
    model = Replicas(1000)
    ratios = {
        (name, k): snr(model.guide_gradients(elbo(k)))
        for k in (5, 64)
        for name, elbo in (("iwae", renyi), ("dreg", lambda k: DoublyReparameterizedIWAE(k, max_plate_nesting=1)))
    }
    assert ratios["dreg", 64] > 5 * ratios["iwae", 64], ratios
    assert ratios["iwae", 64] < ratios["iwae", 5] / 2 and ratios["dreg", 64] > ratios["dreg", 5], ratios


# -- in training ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
def test_shards_give_the_whole_batch_loss_and_gradients(structure):
    """A job's processes each score their rows with the whole batch's noise: the losses and gradients add up."""
    vae, x, loss = _vae(structure), torch.rand(10, 16).bernoulli(), DoublyReparameterizedIWAE(4, max_plate_nesting=1)
    torch.manual_seed(0)
    whole, grads = _grads(vae, loss, x, seed=0)
    parts, summed = 0.0, {}
    for rows in (slice(0, 4), slice(4, 10)):
        with GlobalBatchNoise(rows, 10):
            part, g = _grads(vae, loss, x[rows], seed=0)
        parts += part
        summed = {n: summed.get(n, 0) + g[n] for n in g}
    assert parts == pytest.approx(whole, rel=1e-6)
    for name in grads:
        assert torch.allclose(summed[name], grads[name], atol=1e-4, rtol=1e-4), name


def test_the_objective_is_an_option_and_makes_the_estimator():
    assert "iwae-dreg" in OBJECTIVES
    made = ObjectiveConfig(kind="iwae-dreg", particles=7).make()
    assert isinstance(made, DoublyReparameterizedIWAE) and made.num_particles == 7 and made.max_plate_nesting == 2
    for bad in ({"beta": 2.0}, {"warmup_epochs": 1}):
        with pytest.raises(ConfigError, match="iwae-dreg objective is a bound on log p"):
            ObjectiveConfig(kind="iwae-dreg", **bad).validate()


def test_guides_it_cannot_serve_are_refused_when_the_config_is_read():
    for family in (DiagonalGaussianGuide, LadderGuide, FullCovGaussianGuide):
        check_guide_family(family)
    with pytest.raises(ConfigError, match="--guide iaf"):
        check_guide_family(IAFGuide)
    with pytest.raises(ConfigError, match="--guide iaf"):
        RunConfig.from_dict({"objective": {"kind": "iwae-dreg"}, "model": {"guide": {"name": "iaf"}}})
    with pytest.raises(ConfigError, match="--objective iwae-dreg does not apply"):
        SemiSupervisedVAE.check_objective("iwae-dreg", DiagonalGaussianGuide)
    layered = {"structure": "hierarchical", "latent_dims": [4, 2]}
    assert RunConfig.from_dict({"objective": {"kind": "iwae-dreg"}, "model": layered}).objective.kind == "iwae-dreg"


def test_what_the_estimator_cannot_do_is_a_config_error():
    with pytest.raises(ConfigError, match="Gamma"):
        stop_gradient(dist.Gamma(torch.ones(2), torch.ones(2)))
    normal = stop_gradient(dist.Normal(torch.zeros(3, requires_grad=True), torch.ones(3)).expand((2, 3)).to_event(1))
    assert normal.batch_shape == (2,) and normal.event_shape == (3,) and not normal.base_dist.loc.requires_grad
    x = torch.zeros(3)

    def model():
        with pyro.plate("data", 3):
            pyro.sample("c", dist.Bernoulli(0.5 * torch.ones(3)))
            pyro.sample("z", dist.Normal(0.0, 1.0))

    def discrete_guide():
        p = pyro.param("p", torch.full((3,), 0.5), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", 3):
            pyro.sample("c", dist.Bernoulli(p))
            pyro.sample("z", dist.Normal(x, 1.0))

    with pytest.raises(ConfigError, match="site 'c' is not"):
        DoublyReparameterizedIWAE(3, max_plate_nesting=1).loss_and_grads(model, discrete_guide)

    def scaled_model():
        with pyro.plate("data", 3):
            pyro.sample("a", dist.Normal(0.0, 1.0))
            with poutine.scale(scale=0.5):
                pyro.sample("z", dist.Normal(0.0, 1.0))

    def unevenly_scaled_guide():
        loc = pyro.param("loc", torch.zeros(3))
        with pyro.plate("data", 3):
            pyro.sample("a", dist.Normal(loc, 1.0))
            with poutine.scale(scale=0.5):
                pyro.sample("z", dist.Normal(loc, 1.0))

    with pytest.raises(ConfigError, match="scaled alike"):
        DoublyReparameterizedIWAE(3, max_plate_nesting=1).loss_and_grads(scaled_model, unevenly_scaled_guide)


def test_a_short_run_of_the_command_and_its_refusals(tmp_path, data_dir, capsys):
    tiny = ["--train-limit", "300", "--val-size", "100", "--hidden", "32", "--latent-dim", "4", "--batch-size", "100"]
    common = ["train", "--data-dir", str(data_dir), "--epochs", "1", "--no-progress", *tiny]

    def run(*args):
        with pytest.raises(SystemExit) as exc:
            main([*common, *map(str, args)])
        return exc.value.code, capsys.readouterr().err

    code, err = run("--out", tmp_path / "run", "--objective", "iwae-dreg", "--particles", "3")
    assert code == 0, err
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["objective"]["kind"] == "iwae-dreg" and ckpt["config"]["objective"]["particles"] == 3
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and math.isfinite(metrics[0]["train_loss"]) and metrics[0]["val_elbo"] < 0
    refusals = {
        "iaf": (["--guide", "iaf"], "--guide iaf"),
        "m2": (["--structure", "semi-supervised", "--labelled", "100"], "does not apply"),
        "beta": (["--beta", "2"], "--beta and --warmup-epochs apply"),
    }
    for name, (extra, message) in refusals.items():
        code, err = run("--out", tmp_path / name, "--objective", "iwae-dreg", "--particles", "3", *extra)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("pyro-vae: error: "), err
        assert message in lines[0] and not (tmp_path / name).exists(), err
