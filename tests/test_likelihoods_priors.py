"""Closed-form pieces against independent computations."""

import math

import pytest
import torch

from pyro_vae import Bernoulli, ContinuousBernoulli, Gaussian, StandardNormal
from pyro_vae.errors import DataError
from pyro_vae.likelihoods import _log_cb_normaliser

LIKELIHOODS = {
    "bernoulli": lambda: Bernoulli(),
    "continuous-bernoulli": lambda: ContinuousBernoulli(),
    "gaussian-fixed": lambda: Gaussian(sigma=0.3),
    "gaussian-learned": lambda: Gaussian(sigma=0.3, learn_sigma=True),
}


def _data_for(name: str, shape) -> torch.Tensor:
    u = torch.rand(shape)
    return torch.bernoulli(u) if name == "bernoulli" else u


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_handwritten_log_prob_matches_distribution(name):
    torch.manual_seed(0)
    lik = LIKELIHOODS[name]()
    params = 3 * torch.randn(5, 7, 1, 784)  # particles x batch x num_params x pixels
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
    lik = Gaussian(sigma=0.2, learn_sigma=True, min_sigma=0.01)
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


def test_standard_normal_kl_matches_torch_kl_divergence():
    torch.manual_seed(1)
    loc, scale = 2 * torch.randn(50, 20), torch.rand(50, 20) * 3 + 0.01
    prior = StandardNormal(20)
    q = torch.distributions.Normal(loc, scale)
    p = torch.distributions.Normal(torch.zeros(20), torch.ones(20))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(prior.kl(loc, scale), expected, rtol=1e-5, atol=1e-5)
    assert prior().event_shape == (20,) and prior().batch_shape == ()


def test_standard_normal_kl_matches_monte_carlo():
    torch.manual_seed(2)
    loc, scale = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, 2.0]])
    q = torch.distributions.Normal(loc, scale)
    z = q.sample((400_000,))
    mc = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1).mean(0)
    assert StandardNormal(2).kl(loc, scale).item() == pytest.approx(mc.item(), abs=0.01)
