"""Annealed importance sampling against a gold standard: log p(x) of a model with a 2-D latent by quadrature on a
grid. IWAE-K and AIS converge to it; AIS with a wrong prior density does not (the negative control)."""

import json
import math

import pytest
import torch

from pyro_vae import Bernoulli, NetConfig, StandardNormal
from pyro_vae.errors import ConfigError
from pyro_vae.inference.ais import ais_log_likelihood, sigmoid_schedule
from pyro_vae.inference.bounds import evaluate, iwae_bound
from pyro_vae.model.vae import VAE

TOLERANCE = 0.05  # nats, on the mean over the images


def _small_model() -> VAE:
    """8x8 images, a 2-D latent, an untrained MLP whose decoder is made sharper (a posterior unlike the prior)."""
    torch.manual_seed(0)
    vae = VAE(NetConfig(hidden=(16,)), StandardNormal(2), Bernoulli(), image_shape=(1, 8, 8))
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(3)
    return vae


def quadrature_log_likelihood(vae: VAE, x: torch.Tensor, half_width: float = 6.0, points: int = 600) -> torch.Tensor:
    r""":math:`\log \int p(z) p(x \mid z) dz` per image by the midpoint rule on a ``points`` x ``points`` grid."""
    grid = torch.linspace(-half_width, half_width, points)
    step = (grid[1] - grid[0]).item()
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2).expand(-1, x.shape[0], 2)
    with torch.no_grad():
        log_joint = vae.prior.log_density(z) + vae.likelihood.log_prob(vae.decode(z), x)
    return torch.logsumexp(log_joint, 0) + 2 * math.log(step)


@pytest.fixture(scope="module")
def gold():
    vae = _small_model()
    torch.manual_seed(1)
    x = torch.bernoulli(torch.rand(6, 64))
    return vae, x, quadrature_log_likelihood(vae, x)


def test_the_schedule_runs_from_zero_to_one_and_rises():
    betas = sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and bool((betas.diff() > 0).all())
    with pytest.raises(ValueError):
        sigmoid_schedule(0)


def test_the_quadrature_itself_has_converged(gold):
    vae, x, exact = gold
    assert torch.allclose(quadrature_log_likelihood(vae, x, half_width=8.0, points=800), exact, atol=1e-3)


@pytest.mark.slow
def test_iwae_and_ais_converge_to_the_quadrature(gold):
    vae, x, exact = gold
    torch.manual_seed(2)
    with torch.no_grad():
        iwae = iwae_bound(vae, x, 20_000)
    assert abs((iwae - exact).mean()) < TOLERANCE, iwae - exact
    torch.manual_seed(4)
    found = ais_log_likelihood(vae, x, steps=300, chains=128)
    error = found.log_likelihood - exact
    assert abs(error.mean()) < TOLERANCE and bool((error.abs() < 3 * TOLERANCE).all()), error
    assert 0.3 < found.acceptance.mean() < 1.0
    # fewer steps: AIS is a stochastic lower bound, further below on average
    torch.manual_seed(4)
    few = ais_log_likelihood(vae, x, steps=5, chains=8)
    assert (few.log_likelihood - exact).mean() < error.mean()


class WrongPriorDensity(VAE):
    """The negative control: AIS told a prior twice as wide as the model's."""

    def log_densities(self, batch):
        right = super().log_densities(batch)

        def densities(z):
            log_joint, log_q = right(z)
            wide = torch.distributions.Normal(0.0, 2.0).log_prob(z).sum(-1)
            return log_joint - self.prior.log_density(z) + wide, log_q

        return densities


@pytest.mark.slow
def test_negative_control_ais_with_a_wrong_prior_density_misses_the_quadrature(gold):
    vae, x, exact = gold
    wrong = WrongPriorDensity(NetConfig(hidden=(16,)), StandardNormal(2), Bernoulli(), image_shape=(1, 8, 8))
    wrong.load_state_dict(vae.state_dict())
    torch.manual_seed(4)
    error = ais_log_likelihood(wrong, x, steps=300, chains=128).log_likelihood - exact
    assert abs(error.mean()) > 5 * TOLERANCE, error


def test_evaluate_reports_ais_next_to_iwae_and_the_check(gold):
    vae, x, _ = gold
    result = evaluate(vae, x, iw_samples=50, ais_steps=30, ais_chains=8, seed=1)
    s = result.summary()
    assert s["ais_steps"] == 30 and s["ais_chains"] == 8 and 0 < s["ais_acceptance"] <= 1
    assert s["ais_minus_iwae_stderr"] > 0 and math.isfinite(s["ais_minus_iwae"])
    again = evaluate(vae, x, iw_samples=50, ais_steps=30, ais_chains=8, seed=1)
    assert torch.equal(again.ais, result.ais)  # seeded per batch, like the other passes


def test_a_trajectory_that_blows_up_is_rejected_not_raised(gold):
    vae, x, _ = gold
    torch.manual_seed(0)
    found = ais_log_likelihood(vae, x, steps=3, chains=2, step_size=1e30)
    assert bool(torch.isfinite(found.log_likelihood).all())


def test_ais_refuses_what_it_cannot_move():
    from pyro_vae.model.guides import IAFGuide
    from pyro_vae.model.semi_supervised import SemiSupervisedVAE

    m2 = SemiSupervisedVAE(
        NetConfig(hidden=(16,)), StandardNormal(2), Bernoulli(), image_shape=(1, 8, 8), class_names=("a", "b")
    )
    with pytest.raises(ConfigError, match="discrete latent"):
        ais_log_likelihood(m2, m2.bound_batch(torch.zeros(1, 64)), steps=2)

    iaf = VAE(NetConfig(hidden=(16,)), StandardNormal(2), Bernoulli(), IAFGuide(2), image_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="one-pass density"):
        iaf.log_densities(torch.zeros(1, 64))


def test_ais_moves_a_two_layer_model(gold):
    from pyro_vae.model.guides import LadderGuide
    from pyro_vae.model.hierarchical import HierarchicalVAE

    _, x, _ = gold
    for guide in (None, LadderGuide(3)):
        torch.manual_seed(0)
        vae = HierarchicalVAE(
            NetConfig(hidden=(16,)), StandardNormal(2), Bernoulli(), guide, image_shape=(1, 8, 8), latent_dims=(3, 2)
        )
        result = evaluate(vae, x, iw_samples=2000, ais_steps=100, ais_chains=16, seed=0)
        s = result.summary()  # near the prior, IWAE-2000 is close to log p(x): so must AIS be, having moved
        assert abs(s["ais"] - s["iwae"]) < 2 * TOLERANCE, (s["ais"], s["iwae"], s["elbo"])
        assert 0.3 < s["ais_acceptance"] < 1


@pytest.mark.slow
def test_the_command_line_reports_ais_and_refuses_bad_values(trained, capsys):
    from test_cli import assert_one_line_error, run_cli

    ckpt = trained.out_dir / "ckpt.pt"
    args = ["elbo", "--checkpoint", ckpt, "--limit", "20", "--iw-samples", "10", "--ais", "10", "--ais-chains", "2"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "AIS, 10 steps x 2 chains" in stdout and "AIS - IWAE (paired)" in stdout, err
    code, stdout, _ = run_cli([*args, "--json"], capsys)
    found = json.loads(stdout)
    assert code == 0 and found["ais_steps"] == 10 and math.isfinite(found["ais"]) and "ais_minus_iwae" in found
    code, _, err = run_cli(["elbo", "--checkpoint", ckpt, "--ais", "-3"], capsys)
    assert_one_line_error(code, err, "--ais")
    assert code == 2
