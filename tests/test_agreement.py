"""The Pyro ELBO against the hand-written analytic-KL ELBO, and the bounds against Pyro's own ELBOs."""

import pyro
import pytest
import torch
from conftest import small_run
from helper_components import WrongKLPrior, WrongLogProbBernoulli
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import VAE, Bernoulli, ContinuousBernoulli, Gaussian, NetConfig, StandardNormal, analytic_loss, evaluate
from pyro_vae.errors import AgreementError
from pyro_vae.inference.bounds import iwae_bound, log_weights
from pyro_vae.model.likelihoods import Beta, DiscretizedLogistic, Laplace

LIKELIHOODS = {
    "bernoulli": (Bernoulli, {}, "dynamic"),
    "continuous-bernoulli": (ContinuousBernoulli, {}, "none"),
    "beta": (Beta, {}, "none"),
    "gaussian-fixed": (Gaussian, {"sigma": 0.1}, "none"),
    "gaussian-learned": (Gaussian, {"sigma": 0.2, "learn_sigma": True, "data_dim": 784}, "none"),
    "laplace-learned": (Laplace, {"sigma": 0.2, "learn_sigma": True, "data_dim": 784}, "none"),
    "discretized-logistic": (DiscretizedLogistic, {}, "none"),
}


def _vae(name, kind="mlp"):
    cls, kwargs, _ = LIKELIHOODS[name]
    return VAE(NetConfig(kind=kind, hidden=(64,)), StandardNormal(8), cls(**kwargs), image_shape=(1, 28, 28))


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("name", LIKELIHOODS)
def test_meanfield_elbo_equals_handwritten_loss_with_same_draws(name, kind, test_images):
    x = test_images[LIKELIHOODS[name][2]][:64]
    vae = _vae(name, kind)
    pyro.set_rng_seed(7)
    pyro_loss = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(7)
    hand_loss = analytic_loss(vae, x).item()
    assert pyro_loss == pytest.approx(hand_loss, rel=2e-6)


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_log_weights_are_the_summands_of_trace_elbo(name, test_images):
    x = test_images[LIKELIHOODS[name][2]][:64]
    vae = _vae(name)
    pyro.set_rng_seed(3)
    expected = Trace_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    # The sum cancels large terms (continuous likelihoods), so compare at float32 resolution of the terms.
    assert -log_weights(vae, x).sum().item() == pytest.approx(expected, rel=1e-6, abs=1e-3)


def test_iwae_bound_equals_renyi_alpha_zero(test_images):
    x = test_images["dynamic"][:32]
    vae = _vae("bernoulli")
    pyro.set_rng_seed(5)
    renyi = RenyiELBO(alpha=0, num_particles=9, vectorize_particles=True, max_plate_nesting=1)
    expected = renyi.loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(5)
    assert -iwae_bound(vae, x, 9).sum().item() == pytest.approx(expected, rel=1e-6)


def test_iwae_bound_is_the_same_in_particle_chunks(test_images, monkeypatch):
    x = test_images["dynamic"][:16]
    vae = _vae("bernoulli")
    torch.manual_seed(0)
    whole = iwae_bound(vae, x, 50)
    monkeypatch.setattr("pyro_vae.inference.bounds._ELEMENTS_PER_CHUNK", 16 * 784 * 7)  # 7 particles per chunk
    torch.manual_seed(0)
    chunked = iwae_bound(vae, x, 50)
    assert chunked.shape == whole.shape == (16,)
    # Different draws, same estimand: close, and each a valid bound of the same size.
    assert abs(chunked.mean() - whole.mean()).item() < 3.0


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_agreement_on_untrained_model(name, test_images):
    x = test_images[LIKELIHOODS[name][2]]
    result = evaluate(_vae(name), x, iw_samples=0, seed=11)
    assert abs(result.agreement_z) < 4, result.summary()
    assert result.kl_method == "analytic"
    result.check_agreement()


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_agreement_on_trained_model(name, tmp_path, data_dir, test_images):
    cls, kwargs, binarize = LIKELIHOODS[name]
    trainer = small_run(tmp_path, data_dir, epochs=1, likelihood=cls(**kwargs), binarize=binarize, train_limit=1500)
    trainer.fit()
    for seed in (0, 1):
        result = evaluate(trainer.vae, test_images[binarize], iw_samples=0, seed=seed)
        assert abs(result.agreement_z) < 4, result.summary()


def test_negative_control_wrong_kl_fails_loudly(trained, test_images):
    vae = VAE(trained.vae.net_config, WrongKLPrior(8), Bernoulli(), image_shape=(1, 28, 28))
    vae.load_state_dict(trained.vae.state_dict())
    result = evaluate(vae, test_images["dynamic"], iw_samples=0)
    assert abs(result.agreement_z) > 20, result.summary()
    with pytest.raises(AgreementError, match="disagree"):
        result.check_agreement()
    # ... while the same weights with the right KL agree.
    evaluate(trained.vae, test_images["dynamic"], iw_samples=0).check_agreement()


def test_negative_control_wrong_log_likelihood_fails_loudly(trained, test_images):
    vae = VAE(trained.vae.net_config, StandardNormal(8), WrongLogProbBernoulli(), image_shape=(1, 28, 28))
    vae.load_state_dict(trained.vae.state_dict())
    with pytest.raises(AgreementError):
        evaluate(vae, test_images["dynamic"], iw_samples=0).check_agreement()


def test_iwae_is_above_elbo_and_grows_with_k(trained, test_images):
    x = test_images["dynamic"][:300]
    bounds = {k: evaluate(trained.vae, x, iw_samples=k, seed=4) for k in (1, 10, 100)}
    elbo = bounds[1].elbo.mean().item()
    iwae = {k: b.iwae.mean().item() for k, b in bounds.items()}
    stderr = bounds[1].summary()["elbo_stderr"]
    assert iwae[1] == pytest.approx(elbo, abs=3 * stderr)  # K=1 is an ELBO estimate
    # Per-image differences are far less noisy than the bounds themselves.
    assert iwae[10] > iwae[1] + 1.0
    assert iwae[100] > iwae[10] + 0.3
    assert iwae[100] > elbo


def test_evaluation_is_deterministic_for_a_seed(trained, test_images):
    x = test_images["dynamic"][:200]
    a = evaluate(trained.vae, x, iw_samples=5, seed=9).summary()
    b = evaluate(trained.vae, x, iw_samples=5, seed=9).summary()
    c = evaluate(trained.vae, x, iw_samples=5, seed=10).summary()
    assert a == b and a["elbo"] != c["elbo"]
