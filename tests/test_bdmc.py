"""Bidirectional Monte Carlo against the quadrature gold standard (tests/test_ais.py's 2-D latent model): on data
simulated from the model, forward AIS lies below log p(x) and reverse AIS from the exact posterior sample above it,
the sandwich narrowing as the steps grow; reverse AIS from a draw that is not a posterior sample is no upper bound
(the negative control)."""

import json
import math

import pytest
import torch
from test_ais import TOLERANCE, _small_model, quadrature_log_likelihood

from pyro_vae.inference.bdmc import bidirectional_ais, sandwich_summary, simulate
from pyro_vae.inference.bounds import evaluate


@pytest.fixture(scope="module")
def simulated():
    vae = _small_model()
    torch.manual_seed(3)
    batch, exact_z = simulate(vae, 32)
    return vae, batch, exact_z, quadrature_log_likelihood(vae, batch)


def test_simulated_images_are_draws_of_the_likelihood(simulated):
    vae, batch, exact_z, _ = simulated
    assert batch.shape == (32, 64) and exact_z.shape == (32, 2)
    assert set(batch.unique().tolist()) <= {0.0, 1.0}  # Bernoulli draws, not means


def test_the_sandwich_holds_log_p_x_and_narrows_with_more_steps(simulated):
    vae, batch, exact_z, log_p = simulated
    torch.manual_seed(5)
    few = bidirectional_ais(vae, batch, exact_z, steps=10, chains=16)
    torch.manual_seed(5)
    many = bidirectional_ais(vae, batch, exact_z, steps=200, chains=16)
    # Over image seeds 3, 7, 11 and AIS seeds 5, 6, 7: 10 steps leave the upper side 1.0 to 1.3 nats above log p(x)
    # (the lower side is noisier: -0.84 to +0.21); 200 steps bring both within 0.06 of it (standard error 0.03).
    assert (few.upper - log_p).mean() > 0.5 and few.width.mean() > many.width.mean() + 0.5
    assert abs((many.lower - log_p).mean()) < 2 * TOLERANCE and abs((many.upper - log_p).mean()) < 2 * TOLERANCE
    assert many.width.mean() < 3 * TOLERANCE
    s = sandwich_summary(many)
    assert s["n"] == 32 and math.isclose(s["width"], s["upper"] - s["lower"], abs_tol=1e-9)
    assert 0.3 < s["reverse_acceptance"] <= 1 and s["width_max"] >= s["width"]


def test_negative_control_reverse_ais_from_a_prior_draw_is_no_upper_bound(simulated):
    vae, batch, _, log_p = simulated
    torch.manual_seed(6)
    not_posterior = vae.generate(batch.shape[0])  # z ~ p(z), unrelated to the images
    torch.manual_seed(5)
    wrong = bidirectional_ais(vae, batch, not_posterior, steps=10, chains=16)  # (the sandwich test's short chains)
    assert (wrong.upper - log_p).mean() < -5 * TOLERANCE  # "upper" falls below the truth: the sandwich breaks


@pytest.mark.slow
def test_the_command_line_reports_the_sandwich_and_refuses_bad_combinations(trained, capsys):
    from test_cli import assert_one_line_error, run_cli

    ckpt = trained.out_dir / "ckpt.pt"
    args = ["elbo", "--checkpoint", ckpt, "--bdmc", "--ais", "10", "--limit", "6", "--iw-samples", "20"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "reverse AIS from the exact z (upper)" in stdout and "split=simulated" in stdout, err
    code, stdout, _ = run_cli([*args, "--json"], capsys)
    found = json.loads(stdout)
    assert code == 0 and found["bdmc_n"] == 6 and found["n"] == 6 and math.isfinite(found["bdmc_width"])
    code, _, err = run_cli(["elbo", "--checkpoint", ckpt, "--bdmc"], capsys)
    assert_one_line_error(code, err, "--ais")
    assert code == 2
    code, _, err = run_cli([*args, "--by-class"], capsys)
    assert_one_line_error(code, err, "--bdmc")
    assert code == 2


def test_simulated_images_pass_the_agreement_check(trained):
    from pyro_vae.pipeline import bdmc_checkpoint

    result, sandwich, _ = bdmc_checkpoint(
        trained.out_dir / "ckpt.pt", n=3000, ais_steps=1, ais_chains=1, iw_samples=0, batch_size=3000
    )
    assert abs(result.agreement_z) < 4 and sandwich.width.numel() == 3000


def test_simulated_images_need_a_seed_of_their_own():
    """Drawn on the evaluation's seed, the guide's draws in the ELBO pass would be the very draws that made the
    images (eps = z* under a standard-normal prior) and the Monte Carlo KL would be biased: the two ELBOs disagree (the
    negative control). A model whose encoder is the exact posterior shows it plainly."""
    from test_gaps import posterior_encoder_model

    from pyro_vae.pipeline import SIMULATION_SEED

    vae = posterior_encoder_model()
    found = {}
    for offset in (SIMULATION_SEED, 0):
        torch.manual_seed(offset)
        batch, _ = simulate(vae, 2000)
        found[offset] = evaluate(vae, batch, iw_samples=0, batch_size=2000, seed=0, latent_means=False).agreement_z
    assert abs(found[SIMULATION_SEED]) < 4 < abs(found[0]), found
