"""Sizes are estimated before allocation; what can be done in pieces is, with the same numbers."""

import numpy as np
import pytest
import torch

from pyro_vae import (
    VAE,
    Bernoulli,
    DiagonalGaussianGuide,
    DiscretizedLogistic,
    FlowPrior,
    FullCovGaussianGuide,
    Gaussian,
    IAFGuide,
    LearnedGaussian,
    MixtureOfGaussians,
    NetConfig,
    StandardNormal,
    VampPrior,
    evaluate,
    pipeline,
)
from pyro_vae.errors import ResourceError
from pyro_vae.inference import bounds
from pyro_vae.runtime.limits import check_vae_fits, meta_module, tensor_bytes

PRIORS = [
    StandardNormal,
    LearnedGaussian,
    MixtureOfGaussians,
    lambda d: VampPrior(d, data_dim=784),
    FlowPrior,
    lambda d: FlowPrior(d, transform="spline"),
]
GUIDES = [DiagonalGaussianGuide, FullCovGaussianGuide, IAFGuide]


@pytest.mark.parametrize("make_prior", PRIORS)
@pytest.mark.parametrize("make_guide", GUIDES)
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_the_meta_estimate_is_the_real_size(make_prior, make_guide, kind):
    net = NetConfig(kind=kind, hidden=(300,))
    make = lambda: VAE(net, make_prior(6), DiscretizedLogistic(), make_guide(6), image_shape=(1, 28, 28))  # noqa: E731
    state = torch.get_rng_state()
    estimate = meta_module(make)
    assert torch.equal(state, torch.get_rng_state()), "the estimate draws nothing from the training stream"
    assert estimate is not None and tensor_bytes(estimate) == tensor_bytes(make())


def test_an_impossible_model_is_refused_without_allocating():
    def huge():
        return VAE(NetConfig(hidden=(10**5,)), StandardNormal(10**8), Bernoulli(), image_shape=(1, 28, 28))

    with pytest.raises(ResourceError, match=r"the model \(109.1 TiB of parameters\) needs 436.6 TiB .* lower --hidden"):
        check_vae_fits(huge, "cpu", training=True)
    check_vae_fits(
        lambda: VAE(NetConfig(), StandardNormal(20), Gaussian(), image_shape=(1, 28, 28)), "cpu", training=True
    )


def test_elbo_particles_in_chunks_keep_the_common_random_numbers(trained, test_images, monkeypatch):
    x = test_images["dynamic"][:50]
    whole = evaluate(trained.vae, x, num_particles=12, iw_samples=0, seed=4)
    monkeypatch.setattr(bounds, "_ELEMENTS_PER_CHUNK", 5 * 50 * 784)  # 5 particles a pass: 5 + 5 + 2
    chunked = evaluate(trained.vae, x, num_particles=12, iw_samples=0, seed=4)
    # The same estimator on other draws: equal within Monte Carlo noise, and still paired draw for draw.
    assert chunked.elbo.mean().item() == pytest.approx(whole.elbo.mean().item(), abs=1.0)
    assert abs(chunked.agreement_z) < 4 and torch.allclose(chunked.kl, whole.kl, atol=1e-4)
    # With a Monte Carlo KL on both sides, pairing makes the two ELBOs equal image by image.
    mog = VAE(NetConfig(hidden=(64,)), MixtureOfGaussians(8), Bernoulli(), image_shape=(1, 28, 28))
    paired = evaluate(mog, x, num_particles=12, iw_samples=0, seed=4)
    assert paired.kl_method == "monte-carlo" and torch.allclose(paired.elbo, paired.elbo_analytic, atol=1e-3)
    # One chunk is exactly the old single pass.
    monkeypatch.setattr(bounds, "_ELEMENTS_PER_CHUNK", 12 * 50 * 784)
    assert torch.equal(evaluate(trained.vae, x, num_particles=12, iw_samples=0, seed=4).elbo, whole.elbo)


def test_a_long_evaluation_says_how_long_it_will_take(trained, test_images, monkeypatch):
    monkeypatch.setattr(bounds._TimeLeft, "FIRST_LOOK", 0.0)
    monkeypatch.setattr(bounds._TimeLeft, "WORTH_SAYING", 0.0)
    said = []
    evaluate(trained.vae, test_images["dynamic"][:100], iw_samples=20, batch_size=50, log=said.append)
    assert len(said) == 1 and said[0].startswith("evaluating 100 images with K=20: about ") and "left" in said[0]


def test_samples_are_written_in_pieces_with_the_same_first_piece(trained, tmp_path, monkeypatch):
    one_pass = pipeline.sample_checkpoint(trained.checkpoint_path, 40, seed=2, device="cpu")
    monkeypatch.setattr(pipeline, "SAMPLE_PIECE_BYTES", 16 * 4 * 784 * 2)  # 16 images a piece
    out = pipeline.write_samples(trained.checkpoint_path, 40, tmp_path / "s.npy", seed=2, device="cpu")
    pieces = np.load(out)
    assert pieces.shape == (40, 1, 28, 28) and pieces.dtype == np.float32
    assert np.array_equal(pieces[:16], one_pass[:16].numpy())  # the first piece: the same draws
    assert [p.name for p in tmp_path.iterdir()] == ["s.npy"]
