"""Closed-form pieces against independent computations."""

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_vae import Bernoulli, ContinuousBernoulli, Gaussian, StandardNormal
from pyro_vae.errors import DataError
from pyro_vae.model.distributions import continuous_bernoulli_log_normaliser as _log_cb_normaliser
from pyro_vae.model.likelihoods import Beta, DiscretizedLogistic, Laplace
from pyro_vae.model.priors import LearnedGaussian

LIKELIHOODS = {
    "bernoulli": lambda: Bernoulli(),
    "continuous-bernoulli": lambda: ContinuousBernoulli(),
    "beta": lambda: Beta(),
    "gaussian-fixed": lambda: Gaussian(sigma=0.3),
    "gaussian-learned": lambda: Gaussian(sigma=0.3, learn_sigma=True, data_dim=784),
    "laplace-fixed": lambda: Laplace(sigma=0.3),
    "laplace-learned": lambda: Laplace(sigma=0.3, learn_sigma=True, data_dim=784),
    "discretized-logistic": lambda: DiscretizedLogistic(),
}


def _data_for(name: str, shape) -> torch.Tensor:
    """Random data in each likelihood's support, including the edge values 0 and 1."""
    u = torch.rand(shape)
    if name == "bernoulli":
        return torch.bernoulli(u)
    u = torch.round(u * 255) / 255  # on the 256 levels (the discretized logistic needs that)
    u[..., :5], u[..., 5:10] = 0.0, 1.0
    return u


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_handwritten_log_prob_matches_distribution(name):
    torch.manual_seed(0)
    lik = LIKELIHOODS[name]()
    params = 3 * torch.randn(5, 7, lik.num_params, 784)  # particles x batch x num_params x pixels
    params[0, 0, 0, :10] = 0.0  # the continuous Bernoulli's 0/0 point
    x = _data_for(name, (7, 784))
    expected = lik(params).log_prob(x)
    assert expected.shape == (5, 7)
    torch.testing.assert_close(lik.log_prob(params, x), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("logit", [-12.0, -3.0, -0.5, -1e-3, 0.0, 2e-3, 0.7, 4.0, 12.0])
def test_continuous_bernoulli_density_integrates_to_one(logit):
    x = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    logits = torch.full_like(x, logit)
    log_density = x * logits - torch.nn.functional.softplus(logits) + _log_cb_normaliser(logits)
    assert torch.trapezoid(log_density.exp(), x).item() == pytest.approx(1.0, abs=1e-6)


def test_continuous_bernoulli_normaliser_is_smooth_at_series_switch():
    for edge in (1e-2, -1e-2):
        below = _log_cb_normaliser(torch.tensor(edge * (1 - 1e-9), dtype=torch.float64))
        above = _log_cb_normaliser(torch.tensor(edge * (1 + 1e-9), dtype=torch.float64))
        assert abs((below - above).item()) < 1e-12
    assert _log_cb_normaliser(torch.tensor(0.0)).item() == pytest.approx(math.log(2))


def test_gaussian_learned_sigma_is_trainable_and_floored():
    lik = Gaussian(sigma=0.2, learn_sigma=True, min_sigma=0.01, data_dim=784)
    assert [n for n, _ in lik.named_parameters()] == ["raw_sigma"]
    assert torch.allclose(lik.sigma(), torch.full((784,), 0.2))
    with torch.no_grad():
        lik.raw_sigma.fill_(-100.0)
    assert torch.all(lik.sigma() >= 0.01)
    assert list(Gaussian(sigma=0.2).parameters()) == []
    with pytest.raises(ValueError):
        Gaussian(sigma=0.0)


def test_likelihoods_reject_data_outside_their_support():
    grey = torch.rand(10, 784)
    with pytest.raises(DataError, match="binary"):
        Bernoulli().check_data(grey)
    Bernoulli().check_data(torch.bernoulli(grey))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ContinuousBernoulli().check_data(grey * 2)
    ContinuousBernoulli().check_data(grey)
    with pytest.raises(DataError):
        Gaussian().check_data(torch.full((2, 784), float("nan")))


@pytest.mark.parametrize("name", ["beta", "laplace-fixed", "discretized-logistic", "gaussian-fixed"])
def test_likelihood_mean_is_the_distribution_mean(name):
    torch.manual_seed(3)
    lik = LIKELIHOODS[name]()
    params = torch.randn(4, lik.num_params, 784)
    x = lik(params).sample((4000,))
    torch.testing.assert_close(lik.mean(params), x.mean(0), atol=0.03, rtol=0)


@pytest.mark.parametrize("loc", [-0.3, 0.0, 0.004, 0.5, 0.999, 1.4])
@pytest.mark.parametrize("scale", [1e-3, 0.02, 0.3, 5.0])
def test_discretized_logistic_sums_to_one_over_the_256_levels(loc, scale):
    from pyro_vae.model.distributions import DiscretizedLogistic as DL

    d = DL(torch.tensor([loc], dtype=torch.float64), torch.tensor([scale], dtype=torch.float64))
    assert d.level_log_probs().exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    # The likelihood's hand-written formula gives the same 256 probabilities.
    lik = DiscretizedLogistic(min_scale=1e-12)
    raw_scale = math.log(math.expm1(scale))  # inverse softplus
    logit = math.log(loc / (1 - loc)) if 0 < loc < 1 else (-30.0 if loc <= 0 else 30.0)
    params = torch.tensor([[logit], [raw_scale]], dtype=torch.float64).expand(2, 256).unsqueeze(0)
    grid = torch.linspace(0, 1, 256, dtype=torch.float64).unsqueeze(0)
    per_level = torch.stack([lik.log_prob(params[..., i : i + 1], grid[..., i : i + 1]) for i in range(256)])
    assert per_level.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_logistic_bits_per_dim_match_its_nats():
    from pyro_vae.inference.bounds import Evaluation

    nats = torch.tensor([-1000.0, -1200.0])
    ev = Evaluation(nats, nats, nats, nats * 0, nats, 1, 10, "analytic", 0, data_dim=784, discrete=True)
    s = ev.summary()
    assert s["elbo_bits_per_dim"] == pytest.approx(1100.0 / (784 * math.log(2)))
    assert s["iwae_bits_per_dim"] == pytest.approx(s["elbo_bits_per_dim"])
    assert (
        "elbo_bits_per_dim" not in Evaluation(nats, nats, nats, nats, None, 1, 0, "analytic", 0, data_dim=784).summary()
    )


@pytest.mark.parametrize("a_raw,b_raw", [(0.0, 0.0), (2.0, -1.0), (5.0, 5.0), (-3.0, 1.0)])
def test_beta_density_on_pixels_has_mass_at_most_one(a_raw, b_raw):
    """The squeezed Beta keeps the Beta's mass on [eps, 1 - eps]: 1 up to the tails beyond the end bins."""
    lik = Beta()
    x = torch.linspace(0, 1, 400_001, dtype=torch.float64)
    params = torch.tensor([a_raw, b_raw], dtype=torch.float64).reshape(1, 2, 1).expand(x.numel(), 2, 1)
    mass = torch.trapezoid(lik.log_prob(params, x.unsqueeze(-1)).exp(), x).item()
    a, b = torch.nn.functional.softplus(torch.tensor([a_raw, b_raw], dtype=torch.float64)) + 1e-3
    y = torch.linspace(lik.eps, 1 - lik.eps, 400_001, dtype=torch.float64)
    expected = torch.trapezoid(torch.distributions.Beta(a, b).log_prob(y).exp(), y).item()
    assert mass <= 1 + 1e-4 and mass == pytest.approx(expected, rel=1e-4)


def test_new_likelihoods_reject_data_outside_their_support():
    grey = torch.rand(10, 784)
    with pytest.raises(DataError, match="levels"):
        DiscretizedLogistic().check_data(grey)
    DiscretizedLogistic().check_data(torch.round(grey * 255) / 255)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        Beta().check_data(grey + 0.5)
    with pytest.raises(DataError):
        Laplace().check_data(torch.full((2, 784), float("inf")))


def _random_gaussian_q(full: bool, batch=50, d=6):
    loc = 2 * torch.randn(batch, d, dtype=torch.float64)
    scale_tril = torch.diag_embed(torch.rand(batch, d, dtype=torch.float64) * 2 + 0.05)
    if full:
        scale_tril = scale_tril + torch.tril(torch.randn(batch, d, d, dtype=torch.float64), diagonal=-1)
    return loc, scale_tril


@pytest.mark.parametrize("full", [False, True], ids=["diagonal-q", "full-cov-q"])
@pytest.mark.parametrize("prior_cls", [StandardNormal, LearnedGaussian])
def test_closed_form_kl_matches_torch_kl_divergence(prior_cls, full):
    torch.manual_seed(1)
    prior = prior_cls(6).double()
    if prior_cls is LearnedGaussian:
        with torch.no_grad():
            prior.loc.normal_()
            prior.log_scale.normal_(0, 0.5)
    loc, scale_tril = _random_gaussian_q(full)
    p = prior()
    p_mvn = torch.distributions.MultivariateNormal(p.mean, scale_tril=torch.diag(p.stddev))
    expected = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(loc, scale_tril=scale_tril), p_mvn
    )
    torch.testing.assert_close(prior.kl(loc, scale_tril), expected, rtol=1e-10, atol=1e-10)
    assert p.event_shape == (6,) and p.batch_shape == ()


def test_standard_normal_kl_matches_monte_carlo():
    torch.manual_seed(2)
    loc, scale = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, 2.0]])
    q = torch.distributions.Normal(loc, scale)
    z = q.sample((400_000,))
    mc = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1).mean(0)
    assert StandardNormal(2).kl(loc, torch.diag_embed(scale)).item() == pytest.approx(mc.item(), abs=0.01)


def test_continuous_bernoulli_stays_exact_for_saturated_logits():
    """A trained decoder reaches logits near -150 on MNIST's empty border; torch's normaliser, computed
    from clamped probabilities, is 2 nats too small there, which the agreement check caught."""
    from pyro_vae.model.distributions import ContinuousBernoulli

    logits = torch.tensor([-150.0, -40.0, -17.0, 17.0, 40.0, 150.0])
    x = torch.tensor([0.0, 0.01, 0.2, 0.8, 0.99, 1.0])
    l64, x64 = logits.double(), x.double()
    exact = x64 * l64 - torch.nn.functional.softplus(l64) + torch.log(l64 / torch.tanh(l64 / 2))
    torch.testing.assert_close(ContinuousBernoulli(logits=logits).log_prob(x).double(), exact, rtol=1e-6, atol=1e-5)
    torch_error = (torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x).double() - exact).abs()
    assert torch_error.max() > 1.0  # if torch fixes this, the subclass can go


def test_continuous_bernoulli_density_is_bounded_on_constant_pixels():
    """An all-zero pixel cannot push the log-density to infinity: it is capped at log C(max_logit)."""
    from pyro_vae.model.likelihoods import ContinuousBernoulli as CB

    lik = CB(max_logit=15.0)
    raw = torch.tensor([-1e4, -300.0, -150.0, -15.0, 0.0, 5.0]).view(6, 1, 1)  # batch x num_params x pixels
    x = torch.zeros(6, 1)
    cap = _log_cb_normaliser(torch.tensor(15.0, dtype=torch.float64)).item()
    values = lik.log_prob(raw, x)
    assert values.max().item() <= cap + 1e-5 and values[0].item() == pytest.approx(cap, abs=1e-4)
    torch.testing.assert_close(lik(raw).log_prob(x), values)


def test_independent_bernoulli_equals_torch_bernoulli_to_event():
    """The Bernoulli likelihood's distribution (sum before negation) against torch's own, with particles."""
    from pyro_vae.model.distributions import IndependentBernoulli

    logits = 4 * torch.randn(3, 5, 784)  # particles x batch x pixels
    x = torch.bernoulli(torch.rand(5, 784))
    ours = IndependentBernoulli(dist.Bernoulli(logits=logits), 1)
    theirs = dist.Bernoulli(logits=logits).to_event(1)
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=1e-6, atol=1e-4)
    expanded = ours.expand((2, 3, 5))
    assert type(expanded) is IndependentBernoulli and expanded.log_prob(x).shape == (2, 3, 5)
    with pytest.raises(ValueError):
        IndependentBernoulli(dist.Bernoulli(logits=logits, validate_args=True), 1, validate_args=True).log_prob(x / 2)
