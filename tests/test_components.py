"""Priors and guide families: densities, hand-written pieces against Pyro, every pairing cross-checked."""

import math

import pyro
import pytest
import torch
from helper_components import NoJacobianIAFGuide
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import VAE, Bernoulli, NetConfig, analytic_elbo, analytic_loss, evaluate
from pyro_vae.errors import AgreementError
from pyro_vae.model.components import REGISTRY
from pyro_vae.model.guides import DiagonalGaussianGuide, FullCovGaussianGuide, IAFGuide
from pyro_vae.model.priors import FlowPrior, LearnedGaussian, MixtureOfGaussians, StandardNormal, VampPrior

GUIDES = {  # the one-layer families (the ladder infers several layers: tests/test_hierarchical.py)
    name: cls
    for name, cls in REGISTRY["guide"].items()
    if cls.__module__.startswith("pyro_vae") and cls.layers != "top-down"
}

D = 4
PRIORS = {
    "standard-normal": lambda: StandardNormal(D),
    "learned-gaussian": lambda: LearnedGaussian(D),
    "mog": lambda: MixtureOfGaussians(D, num_components=5),
    "vamp": lambda: VampPrior(D, num_components=20, data_dim=784),
    "flow-affine": lambda: FlowPrior(D),
    "flow-spline": lambda: FlowPrior(D, transform="spline"),
}
PAIRS = [(p, g) for p in PRIORS for g in GUIDES if not (p == "vamp" and g == "iaf")]
NET = NetConfig(hidden=(64,))


def _vae(prior: str, guide: str) -> VAE:
    torch.manual_seed(0)
    vae = VAE(NET, PRIORS[prior](), Bernoulli(), GUIDES[guide](D), image_shape=(1, 28, 28))
    if prior == "learned-gaussian":  # move it away from N(0, I) so its KL formula is exercised
        with torch.no_grad():
            vae.prior.loc.normal_()
            vae.prior.log_scale.normal_(0, 0.3)
    return vae


@pytest.mark.parametrize("guide", GUIDES)
def test_handwritten_guide_sample_and_density_match_pyro(guide):
    """Under one seed the Pyro guide draws the hand-written z, and its log_prob is the hand-written log q."""
    torch.manual_seed(0)
    family = GUIDES[guide](D)
    params = torch.randn(7, family.num_params)
    pyro.set_rng_seed(4)
    z_pyro = family(params).rsample((3,))
    pyro.set_rng_seed(4)
    z, log_q = family.rsample_with_log_q(params, torch.randn(3, 7, D))
    torch.testing.assert_close(z, z_pyro)
    fresh = GUIDES[guide](D)  # same weights, empty transform caches: log_prob must invert the flow
    fresh.load_state_dict(family.state_dict())
    torch.testing.assert_close(fresh(params).log_prob(z), log_q, rtol=1e-4, atol=1e-4)
    assert family(params).event_shape == (D,) and family(params).batch_shape == (7,)


def test_full_covariance_guide_has_correlations():
    family = FullCovGaussianGuide(D)
    params = torch.randn(2, family.num_params)
    cov = family(params).covariance_matrix
    assert family.num_params == 2 * D + D * (D - 1) // 2
    assert (cov - torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))).abs().max() > 0.01


def test_mixture_log_density_by_hand_matches_pyro():
    prior = MixtureOfGaussians(D, num_components=5)
    with torch.no_grad():
        prior.logits.normal_()
        prior.log_scales.normal_(0, 0.5)
    z = 3 * torch.randn(6, 11, D)
    torch.testing.assert_close(prior.log_density(z), prior().log_prob(z), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prior", ["mog", "flow-affine", "flow-spline", "learned-gaussian"])
def test_prior_density_integrates_to_one_in_two_dimensions(prior):
    torch.manual_seed(0)
    p = {
        "mog": lambda: MixtureOfGaussians(2, 3),
        "flow-affine": lambda: FlowPrior(2),
        "flow-spline": lambda: FlowPrior(2, transform="spline"),
        "learned-gaussian": lambda: LearnedGaussian(2),
    }[prior]()
    grid = torch.linspace(-12, 12, 801)
    zz = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = p().log_prob(zz).exp().reshape(801, 801)
    mass = torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid).item()
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_flow_prior_samples_follow_its_density():
    """Sampling (the sequential inverse) and log_prob (one pass) are the two directions of one flow."""
    torch.manual_seed(0)
    prior = FlowPrior(2)
    with torch.no_grad():
        z = prior().sample((20000,))
        # E_p[log p(z)] is minus the entropy; compare with the grid entropy.
        grid = torch.linspace(-12, 12, 801)
        zz = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
        log_p = prior().log_prob(zz).reshape(801, 801)
        neg_entropy = torch.trapezoid(torch.trapezoid(log_p.exp() * log_p, grid, dim=1), grid).item()
        assert prior().log_prob(z).mean().item() == pytest.approx(neg_entropy, abs=0.05)


def test_vamp_prior_uses_the_vae_encoder_without_copying_it():
    vae = _vae("vamp", "diagonal")
    names = [n for n, _ in vae.named_parameters()]
    assert "prior.pseudo_logits" in names and not any(n.startswith("prior.") and "encoder" in n for n in names)
    mixture = vae.prior()
    assert mixture.event_shape == (D,) and mixture.batch_shape == ()
    loc, _ = vae.guide_family.loc_scale(vae.encoder(vae.prior.pseudo_inputs()))
    torch.testing.assert_close(mixture.component_distribution.mean, loc)
    with pytest.raises(RuntimeError, match="belong to a VAE"):
        VampPrior(D, 3, data_dim=784)()


@pytest.mark.parametrize("prior,guide", PAIRS)
def test_every_prior_and_guide_pair_agrees_with_the_handwritten_elbo(prior, guide, test_images):
    vae = _vae(prior, guide)
    result = evaluate(vae, test_images["dynamic"][:400], num_particles=2, iw_samples=5, seed=3)
    assert abs(result.agreement_z) < 4, result.summary()
    closed_form = prior in ("standard-normal", "learned-gaussian") and guide != "iaf"
    assert result.kl_method == ("analytic" if closed_form else "monte-carlo")
    assert result.iwae.mean() > result.elbo.mean()


@pytest.mark.parametrize("prior,guide", [("mog", "diagonal"), ("flow-affine", "iaf"), ("vamp", "full-cov")])
def test_monte_carlo_kl_loss_equals_pyro_with_the_same_draws(prior, guide, test_images):
    """Without a closed form both sides estimate the KL on the same z: the losses agree to rounding."""
    x = test_images["dynamic"][:64]
    vae = _vae(prior, guide)
    pyro.set_rng_seed(9)
    pyro_loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(9)
    assert analytic_elbo(vae, x).kl_method == "monte-carlo"
    pyro.set_rng_seed(9)
    assert pyro_loss == pytest.approx(analytic_loss(vae, x).item(), rel=1e-5)


def test_negative_control_iaf_density_without_jacobian_fails(test_images):
    torch.manual_seed(0)
    vae = VAE(NET, StandardNormal(D), Bernoulli(), NoJacobianIAFGuide(D), image_shape=(1, 28, 28))
    with torch.no_grad():  # positive weights: the flows stretch (log-Jacobian > 0), so the error is systematic
        for p in vae.guide_family.flows.parameters():
            p.fill_(0.05)
    result = evaluate(vae, test_images["dynamic"][:400], iw_samples=0)
    assert abs(result.agreement_z) > 10
    with pytest.raises(AgreementError):
        result.check_agreement()


@pytest.mark.parametrize("beta", [0.3, 2.0])
def test_kl_weight_reaches_the_closed_form_kl_of_the_meanfield_elbo(beta, test_images):
    """poutine.scale on the guide's site weights TraceMeanField_ELBO's analytic KL by beta, exactly."""
    x = test_images["dynamic"][:64]
    vae = _vae("standard-normal", "diagonal")
    pyro.set_rng_seed(2)
    pyro_loss = TraceMeanField_ELBO().loss(vae.model, vae.guide, x, beta)
    pyro.set_rng_seed(2)
    assert pyro_loss == pytest.approx(analytic_loss(vae, x, kl_scale=beta).item(), rel=2e-6)
    pyro.set_rng_seed(2)
    terms = analytic_elbo(vae, x)
    assert terms.kl_method == "analytic" and terms.kl.sum() > 1.0
    # float32 sums of ~3e4 carry ~0.01 of rounding; the KL term moves the loss by (beta - 1) * KL.
    assert pyro_loss + terms.elbo.sum().item() == pytest.approx((beta - 1) * terms.kl.sum().item(), abs=0.03)


def test_kl_weight_scales_the_monte_carlo_kl_of_trace_elbo(test_images):
    x = test_images["dynamic"][:64]
    vae = _vae("mog", "diagonal")
    losses = {}
    for beta in (1.0, 2.5):
        pyro.set_rng_seed(5)
        losses[beta] = Trace_ELBO().loss(vae.model, vae.guide, x, beta)
    pyro.set_rng_seed(5)
    kl = analytic_elbo(vae, x).kl.sum().item()
    assert losses[2.5] - losses[1.0] == pytest.approx(1.5 * kl, rel=1e-4)
    pyro.set_rng_seed(5)
    assert Trace_ELBO().loss(vae.model, vae.guide, x) == losses[1.0]  # beta = 1 is the plain ELBO, exactly


def test_components_reject_bad_arguments():
    for make in (
        lambda: MixtureOfGaussians(D, 0),
        lambda: VampPrior(D, 0, data_dim=784),
        lambda: FlowPrior(D, transform="x"),
        lambda: IAFGuide(D, num_flows=0),
    ):
        with pytest.raises(ValueError):
            make()
    with pytest.raises(Exception, match="latent_dim"):
        VAE(NET, StandardNormal(D), Bernoulli(), DiagonalGaussianGuide(D + 1), image_shape=(1, 28, 28))


def test_iwae_bound_beats_elbo_on_average_for_every_guide(test_images):
    for guide in GUIDES:
        result = evaluate(_vae("standard-normal", guide), test_images["dynamic"][:200], iw_samples=20)
        assert result.iwae.mean() > result.elbo.mean() and math.isfinite(result.iwae.mean().item())


def test_a_declared_bound_is_checked_when_python_builds_the_component():
    from typing import Annotated

    from pyro_vae import Option, Prior

    class Banded(Prior):  # declares its bound once, checks nothing by hand
        def __init__(self, latent_dim: int, bands: Annotated[int, Option("bands", min=2)] = 4) -> None:
            super().__init__(latent_dim)
            self.bands = bands

    assert Banded(3, bands=2).bands == 2
    with pytest.raises(ValueError, match=r"bands \(--prior-bands\) must be >= 2, got 1"):
        Banded(3, bands=1)
