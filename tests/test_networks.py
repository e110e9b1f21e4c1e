"""The transposed convolution computed as phases of one ordinary convolution (PhaseConvTranspose2d)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyro_vae.model.networks import ConvDecoder, PhaseConvTranspose2d


def _pair(n_in: int, n_out: int, bias: bool = True) -> tuple[nn.ConvTranspose2d, PhaseConvTranspose2d]:
    torch.manual_seed(0)
    plain = nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, bias=bias)
    phased = PhaseConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, bias=bias)
    phased.load_state_dict(plain.state_dict())  # same parameter names: old checkpoints load
    return plain, phased


@pytest.mark.parametrize("n_in, n_out, height, width, bias", [(32, 1, 14, 14, True), (5, 3, 3, 6, True),
                                                              (4, 2, 1, 1, False), (2, 4, 7, 2, True)])
def test_phases_give_the_transposed_convolution_and_its_gradients(n_in, n_out, height, width, bias):
    plain, phased = _pair(n_in, n_out, bias)
    x = torch.randn(6, n_in, height, width, requires_grad=True)
    want, got = plain(x), phased(x)
    assert got.shape == want.shape == (6, n_out, 2 * height, 2 * width)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(want)  # a loss that weighs every output pixel differently
    for g_plain, g_phased in zip(torch.autograd.grad((want * weights).sum(), [x, *plain.parameters()]),
                                 torch.autograd.grad((got * weights).sum(), [x, *phased.parameters()])):
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
