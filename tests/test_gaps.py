"""The inference gaps against closed forms: a linear-Gaussian model, whose log p(x), posterior and best diagonal
Gaussian are known exactly. The SVI-fitted q* must reach the family's optimum (full covariance: the posterior
itself, approximation gap 0; diagonal: the gap is KL(best diagonal || posterior)); an under-fitted q* must not
(the negative control)."""

import json
import math

import pytest
import torch
from helper_components import IdentityMeanGaussian

from pyro_vae import NetConfig, StandardNormal
from pyro_vae.errors import ConfigError
from pyro_vae.inference.gaps import check_gap_family, elbo_of, fit_local_guides, inference_gaps
from pyro_vae.model.guides import FullCovGaussianGuide
from pyro_vae.model.vae import VAE

SIGMA = 0.5
SHAPE = (1, 2, 3)
TOLERANCE = 0.05  # nats, mean over the images
W = torch.tensor([[1.0, 0.8], [0.9, 1.0], [1.1, 0.9], [0.5, 0.7], [1.0, 1.2], [0.8, 0.6]])  # correlated posterior


def _linear_gaussian(guide=None) -> VAE:
    """x = W z + b + 0.5 noise, z ~ N(0, I_2), 6 pixels; the encoder an untrained MLP (q* starts far away)."""
    torch.manual_seed(0)
    vae = VAE(NetConfig(hidden=(4,)), StandardNormal(2), IdentityMeanGaussian(sigma=SIGMA), guide, image_shape=SHAPE)
    vae.decoder.net = torch.nn.Sequential(torch.nn.Linear(2, 6))
    with torch.no_grad():
        vae.decoder.net[0].weight.copy_(W)
    return vae


def posterior_encoder_model() -> VAE:
    """The linear-Gaussian model with a linear encoder that outputs the exact posterior (mean and log-variances)."""
    vae = _linear_gaussian()
    precision = torch.eye(2) + W.T @ W / SIGMA**2
    covariance = torch.linalg.inv(precision)
    gain = covariance @ W.T / SIGMA**2  # E[z | x] = gain (x - b)
    b = vae.decoder.net[0].bias.detach()
    vae.encoder.net = torch.nn.Sequential(torch.nn.Linear(6, 4))
    with torch.no_grad():
        vae.encoder.net[0].weight.copy_(torch.cat([gain, torch.zeros(2, 6)]))
        vae.encoder.net[0].bias.copy_(torch.cat([-gain @ b, torch.diagonal(covariance).log()]))
    return vae.eval()


@pytest.fixture(scope="module")
def exact():
    vae = _linear_gaussian()
    torch.manual_seed(1)
    x = vae.likelihood(vae.decode(vae.generate(5))).sample()
    b = vae.decoder.net[0].bias.detach()
    log_p = torch.distributions.MultivariateNormal(b, W @ W.T + SIGMA**2 * torch.eye(6)).log_prob(x)
    precision = torch.eye(2) + W.T @ W / SIGMA**2
    mean = (torch.linalg.inv(precision) @ W.T @ (x - b).T).T / SIGMA**2
    posterior = torch.distributions.MultivariateNormal(mean, precision_matrix=precision)
    best_diagonal = torch.distributions.MultivariateNormal(mean, torch.diag(1 / torch.diagonal(precision)))
    return {"vae": vae, "x": x, "log_p": log_p, "mean": mean, "posterior": posterior, "best_diagonal": best_diagonal}


def _elbo(vae, x, fit):
    torch.manual_seed(2)
    return elbo_of(vae, x, fit.distribution(), 20_000)


def test_the_full_covariance_q_star_is_the_posterior(exact):
    vae, x = exact["vae"], exact["x"]
    torch.manual_seed(3)
    fit = fit_local_guides(vae, x, "full-cov")
    assert fit.converged
    gap = exact["log_p"] - _elbo(vae, x, fit)  # the family holds the posterior: no approximation gap
    assert abs(gap.mean()) < TOLERANCE and bool((gap.abs() < 2 * TOLERANCE).all()), gap
    assert torch.allclose(fit.loc, exact["mean"], atol=0.2)


def test_the_diagonal_q_star_is_the_best_diagonal_gaussian(exact):
    vae, x = exact["vae"], exact["x"]
    torch.manual_seed(3)
    fit = fit_local_guides(vae, x, "diagonal")
    kl = torch.distributions.kl_divergence(exact["best_diagonal"], exact["posterior"])  # the gap, in closed form
    assert kl.mean() > 0.5  # (the posterior is correlated: a diagonal q* cannot reach it)
    error = exact["log_p"] - kl - _elbo(vae, x, fit)
    assert abs(error.mean()) < TOLERANCE and bool((error.abs() < 2 * TOLERANCE).all()), error


def test_negative_control_an_under_fitted_q_star_misses_the_optimum(exact):
    vae, x = exact["vae"], exact["x"]
    torch.manual_seed(3)
    fit = fit_local_guides(vae, x, "full-cov", max_steps=50)
    assert fit.steps == 50
    assert (exact["log_p"] - _elbo(vae, x, fit)).mean() > 10 * TOLERANCE


def test_the_gaps_add_up(exact):
    vae, x = exact["vae"], exact["x"]
    torch.manual_seed(4)
    gaps = inference_gaps(vae, x, ais_steps=1000, ais_chains=16, full_cov=True, eval_particles=2000)
    s = gaps.summary()
    # AIS from an encoder 37 nats off: within 0.035 of the exact log p(x) over seeds 4 and 20 to 23
    assert abs(s["log_likelihood"] - exact["log_p"].mean().item()) < 2 * TOLERANCE
    assert s["amortization_gap"] > 1 and abs(s["approximation_gap_full_cov"]) < 2 * TOLERANCE
    assert s["approximation_gap"] > 10 * TOLERANCE
    assert math.isclose(s["inference_gap"], s["approximation_gap"] + s["amortization_gap"], abs_tol=1e-4)


@pytest.mark.parametrize("fixed", [True, False])
def test_the_fit_leaves_the_model_and_the_param_store_as_they_were(fixed, monkeypatch):
    """The model's ``pyro.param`` statements are kept away from SVI: without that (the negative control) the
    param store hands SVI the decoder's parameters, which it then trains."""
    import pyro
    from pyro.poutine.messenger import Messenger
    from test_ais import _small_model

    import pyro_vae.inference.gaps as gaps

    if not fixed:
        monkeypatch.setattr(gaps, "_FixedParameters", type("PassThrough", (Messenger,), {}))
    vae = _small_model()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    torch.manual_seed(0)
    fit_local_guides(vae, torch.bernoulli(torch.rand(4, 64)), "diagonal", max_steps=100)
    unchanged = all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert unchanged == fixed and all(p.requires_grad for p in vae.parameters())
    assert all(p.grad is None for p in vae.parameters()) == fixed
    assert "q_star_loc" not in pyro.get_param_store()


def test_a_full_covariance_guide_gets_a_full_covariance_q_star_and_others_are_refused():
    assert check_gap_family(_linear_gaussian(FullCovGaussianGuide(2))) == "full-cov"
    from pyro_vae.model.guides import IAFGuide
    from pyro_vae.model.hierarchical import HierarchicalVAE

    parts = (NetConfig(hidden=(4,)), StandardNormal(2), IdentityMeanGaussian())
    with pytest.raises(ConfigError, match="amortised guide's family"):
        check_gap_family(VAE(*parts, IAFGuide(2), image_shape=SHAPE))
    two = HierarchicalVAE(*parts, latent_dims=(3, 2), image_shape=SHAPE)
    with pytest.raises(ConfigError, match="one latent layer"):
        check_gap_family(two)


@pytest.mark.slow
def test_the_command_line_reports_the_gaps_and_refuses_bad_values(trained, capsys):
    from test_cli import assert_one_line_error, run_cli

    ckpt = trained.out_dir / "ckpt.pt"
    args = ["gaps", "--checkpoint", ckpt, "--limit", "8", "--ais", "20", "--max-steps", "200", "--eval-particles", "10"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "amortization gap, L[q*] - L[q]" in stdout, err
    code, stdout, _ = run_cli([*args, "--json", "--full-cov"], capsys)
    found = json.loads(stdout)
    assert code == 0 and found["n"] == 8 and "approximation_gap_full_cov" in found and found["svi_steps"]
    assert math.isclose(found["inference_gap"], found["approximation_gap"] + found["amortization_gap"], abs_tol=1e-3)
    code, _, err = run_cli(["gaps", "--checkpoint", ckpt, "--ais", "0"], capsys)
    assert_one_line_error(code, err, "--ais")
    assert code == 2
