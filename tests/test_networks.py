"""The conv networks: the transposed convolution computed as phases of one ordinary convolution
(PhaseConvTranspose2d), the Keras layout and Glorot initialisation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pyro_vae import RunConfig, start_run
from pyro_vae.model.networks import ConvDecoder, PhaseConvTranspose2d


def _pair(n_in: int, n_out: int, bias: bool = True) -> tuple[nn.ConvTranspose2d, PhaseConvTranspose2d]:
    torch.manual_seed(0)
    plain = nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, bias=bias)
    phased = PhaseConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, bias=bias)
    phased.load_state_dict(plain.state_dict())  # same parameter names: old checkpoints load
    return plain, phased


@pytest.mark.parametrize(
    "n_in, n_out, height, width, bias",
    [(32, 1, 14, 14, True), (5, 3, 3, 6, True), (4, 2, 1, 1, False), (2, 4, 7, 2, True)],
)
def test_phases_give_the_transposed_convolution_and_its_gradients(n_in, n_out, height, width, bias):
    plain, phased = _pair(n_in, n_out, bias)
    x = torch.randn(6, n_in, height, width, requires_grad=True)
    want, got = plain(x), phased(x)
    assert got.shape == want.shape == (6, n_out, 2 * height, 2 * width)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(want)  # a loss that weighs every output pixel differently
    for g_plain, g_phased in zip(
        torch.autograd.grad((want * weights).sum(), [x, *plain.parameters()]),
        torch.autograd.grad((got * weights).sum(), [x, *phased.parameters()]),
    ):
        torch.testing.assert_close(g_phased, g_plain, rtol=1e-4, atol=1e-4)


def test_other_devices_and_explicit_sizes_take_the_plain_transposed_convolution():
    plain, phased = _pair(8, 1)
    on_meta = PhaseConvTranspose2d(8, 1, 4, stride=2, padding=1, device="meta")  # size estimates, no memory
    assert on_meta(torch.empty(2, 8, 7, 7, device="meta")).shape == (2, 1, 14, 14)
    x = torch.randn(2, 8, 7, 7)
    torch.testing.assert_close(phased(x, output_size=[14, 14]), plain(x))


def test_the_decoder_phases_only_its_last_few_channel_kernel_4_layer():
    even = ConvDecoder(20, 64, "relu", 1, (1, 28, 28), (32, 64))
    kinds = [type(m) for m in even.deconv if isinstance(m, nn.ConvTranspose2d)]
    assert kinds == [nn.ConvTranspose2d, PhaseConvTranspose2d]  # 64 -> 32 channels stays oneDNN's
    odd = ConvDecoder(20, 64, "relu", 1, (1, 27, 27), (32, 64))  # kernel 3 on odd sides
    assert not any(isinstance(m, PhaseConvTranspose2d) for m in odd.modules())


# --- the Keras layout and Glorot initialisation (issue 32) ----------------------------------------------------------

KERAS_Z2 = Path(__file__).resolve().parents[1] / "configs" / "tutorial-keras-conv-z2.toml"


def test_the_keras_config_builds_the_keras_network():
    """keras-io's examples/generative/vae.py, layer by layer: 134,165 parameters (Keras's model summaries: encoder
    69,076, decoder 65,089); the mirror layout's differs (kernel 4, a dense layer both ways)."""
    config = RunConfig.read_toml(KERAS_Z2)
    vae = config.build_model()
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    assert shapes(vae.encoder) == [(32, 1, 3, 3), (32,), (64, 32, 3, 3), (64,), (16, 3136), (16,), (4, 16), (4,)]
    assert shapes(vae.decoder) == [
        (3136, 2),
        (3136,),
        (64, 64, 3, 3),
        (64,),
        (64, 32, 3, 3),
        (32,),
        (1, 32, 3, 3),
        (1,),
    ]
    assert sum(p.numel() for p in vae.encoder.parameters()) == 69_076
    assert sum(p.numel() for p in vae.decoder.parameters()) == 65_089
    mirror = config.updated({"model.net.layout": "mirror"}).build_model()
    assert sum(p.numel() for p in mirror.parameters()) == 170_309


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 27, 31), (2, 5, 6), (1, 1, 1)])
def test_the_keras_layout_works_at_any_size(shape):
    from pyro_vae.model.networks import ConvEncoder

    encoder = ConvEncoder(6, 16, "relu", shape, (8, 16), layout="keras")
    decoder = ConvDecoder(3, 16, "relu", 2, shape, (8, 16), layout="keras")
    assert encoder(torch.rand(5, math.prod(shape))).shape == (5, 6)
    assert decoder(torch.randn(4, 5, 3)).shape == (4, 5, 2, math.prod(shape))


def test_glorot_initialisation_draws_keras_s_start():
    """Every weight uniform within sqrt(6 / (fan-in + fan-out)) and filling it (a uniform's max is near its bound),
    biases zero; ``torch`` leaves PyTorch's own start, bit for bit (the reference runs do not move)."""
    from pyro_vae.model.networks import initialise

    config = RunConfig.read_toml(KERAS_Z2)
    vae = config.build_model()
    for name, p in vae.named_parameters():
        if name.endswith("bias"):
            assert not p.any(), name
        else:
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(p)
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert bound * 0.9 < p.abs().max() <= bound, name
    torch.manual_seed(1)
    plain = ConvDecoder(2, 16, "relu", 1, (1, 28, 28), (32, 64))
    torch.manual_seed(1)
    kept = initialise(ConvDecoder(2, 16, "relu", 1, (1, 28, 28), (32, 64)), "torch")
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), kept.parameters()))
    # Negative control: PyTorch's start of the encoder's 3136 -> 16 layer is far inside Glorot's bound (0.018
    # against 0.044), and the check above would refuse it.
    from pyro_vae.model.networks import ConvEncoder

    first = ConvEncoder(4, 16, "relu", (1, 28, 28), (32, 64)).dense[0]
    assert first.weight.abs().max() < 0.5 * math.sqrt(6 / (16 + 3136)) and first.bias.any()


def _short_config(data_dir, **overrides) -> RunConfig:
    """The Keras z = 2 config with Glorot's start in the (ten times cheaper) mirror layout, 8 and 16 channels, 2
    epochs of 8,000 images in batches of 64."""
    return RunConfig.read_toml(
        KERAS_Z2,
        {
            "data.root": str(data_dir),
            "data.train_limit": 8000,
            "data.val_size": 0,
            "model.net.layout": "mirror",
            "model.net.channels": [8, 16],
            "optimizer.batch_size": 64,
            "schedule.epochs": 2,
            **overrides,
        },
    )


def _score_pyro_vae(config: RunConfig, out, test) -> dict:
    from conv_replica import bernoulli_log_likelihood, pyro_vae_decoder, test_scores

    trainer = start_run(config, out, device="cpu", progress=False)
    trainer.fit()
    return test_scores(trainer.vae.encoder, pyro_vae_decoder(trainer.vae), test, bernoulli_log_likelihood)


def test_a_short_conv_run_keeps_every_unit_the_reference_keeps(data_dir, tmp_path, monkeypatch):
    """The guard of issue 32: a z = 2 conv model that pyro-vae trains keeps each latent unit that the same network,
    weights and batches keep in the hand-written loop of benchmarks/conv_replica.py, and comes near its ELBO (within
    10 nats: the two draw their own latent noise, and this early runs differ by a few nats). Negative control: a KL
    weight of 30 in pyro-vae (a stand-in for a path that pushes the posterior onto the prior) loses units the
    reference keeps, and the comparison says so."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from conv_replica import bernoulli_log_likelihood, copy_weights, replica_networks, train_replica

    from pyro_vae import VAEData

    config = _short_config(data_dir)
    data = VAEData(config.data, data_dir, splits=("train", "test"))
    test = data.observed("test")[:1000]
    encoder, decoder = replica_networks(config, (1, 28, 28), outputs=1)
    initial = config.build_model()  # the weights start_run starts from
    copy_weights(initial.encoder, encoder)
    copy_weights(initial.decoder, decoder)
    reference = train_replica(config, data, encoder, decoder, test, bernoulli_log_likelihood, 2, config.seed)[-1]
    ours = _score_pyro_vae(config, tmp_path / "run", test)
    assert reference["active_units"] == ours["active_units"] == 2
    assert abs(ours["elbo"] - reference["elbo"]) < 10.0, (ours, reference)
    broken = _score_pyro_vae(_short_config(data_dir, **{"objective.beta": 30.0}), tmp_path / "broken", test)
    assert broken["active_units"] < reference["active_units"]
