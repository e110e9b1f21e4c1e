r"""Encoder and decoder networks.

An *encoder* maps a flattened image batch ``(..., D)`` to the guide family's parameters, shape
``(..., num_params)`` (see :mod:`pyro_vae.model.guides`). A *decoder* maps ``z`` of shape
``(..., latent_dim)`` to the likelihood's parameters, shape ``(..., num_params, D)``, ``D = C*H*W`` in the
images' ``(C, H, W)`` order. Both take the image shape from the data: the convolutional pair works at any
``H x W`` (each stride-2 stage rounds up, and the decoder retraces the same sizes exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..options import Option, check_fields

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky-relu": nn.LeakyReLU,
}

MAX_HIDDEN_LAYERS = 100
MAX_CONV_STAGES = 12


@dataclass
class NetConfig:
    """Architecture of the encoder/decoder pair (the latent size is the model's, see :class:`ModelConfig`; the
    image shape is the data's)."""

    KEY: ClassVar[str] = "model.net"
    kind: Annotated[Literal["mlp", "conv", "resnet"], Option(
        "encoder/decoder architecture: an MLP on the flattened image; strided convolutions; or strided convolutions "
        "each followed by a residual block", flag="--net")] = "mlp"  # fmt: skip
    hidden: Annotated[tuple[int, ...], Option("MLP hidden widths (e.g. 512,256); for conv/resnet, the dense layer's width",
                                              min=1, max_items=MAX_HIDDEN_LAYERS)] = (400,)  # fmt: skip
    activation: Annotated[Literal[tuple(ACTIVATIONS)], Option("nonlinearity between layers")] = "relu"
    channels: Annotated[tuple[int, ...], Option(
        "conv/resnet: channels of each stride-2 stage (their number is the depth), e.g. 32,64,128",
        min=1, max=4096, max_items=MAX_CONV_STAGES, flag="--conv-channels")] = (32, 64)  # fmt: skip

    def validate(self) -> None:
        check_fields(self)


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """``C*H*W -> hidden... -> num_params``."""

    def __init__(self, num_params: int, hidden: tuple[int, ...], activation: str, image_shape: tuple[int, int, int]):
        super().__init__()
        self.net = _mlp([math.prod(image_shape), *hidden, num_params], activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """``latent_dim -> reversed(hidden)... -> num_params * C*H*W``."""

    def __init__(self, latent_dim: int, hidden: tuple[int, ...], activation: str, num_params: int,
                 image_shape: tuple[int, int, int]):  # fmt: skip
        super().__init__()
        self.num_params, self.data_dim = num_params, math.prod(image_shape)
        self.net = _mlp([latent_dim, *reversed(hidden), num_params * self.data_dim], activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).unflatten(-1, (self.num_params, self.data_dim))


def stage_sizes(size: int, stages: int) -> list[int]:
    """Side lengths through ``stages`` stride-2 convolutions: each halves, rounding up (28 -> 14 -> 7 -> 4)."""
    sizes = [size]
    for _ in range(stages):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


class PhaseConvTranspose2d(nn.ConvTranspose2d):
    r"""``ConvTranspose2d(kernel 4, stride 2, padding 1)``, computed on the CPU as one ordinary convolution.

    Output row :math:`2m + a` of the transposed convolution sees only input rows :math:`m - 1 + a` and
    :math:`m + a`, through kernel rows 3 and 1 when :math:`a = 0` and rows 2 and 0 when :math:`a = 1`; columns
    likewise. So the four output phases :math:`(a, b)` are one 2x2 convolution with ``4 * out_channels`` filters
    over the input padded by 1, phase :math:`(a, b)` read at offset :math:`(a, b)`, then interleaved. Same
    parameters, same values up to float rounding. oneDNN's transposed convolution is slow with few output
    channels, the usual last layer of a decoder (1 channel: 138 -> 70 ms for 5,000 images; with 32 channels the
    interleaving costs more than it saves, see ``benchmarks/RESULTS.md``), so :func:`_halving` uses this class
    only there. Elsewhere than the CPU it is the plain transposed convolution.
    """

    TAPS = torch.tensor([[3, 1], [2, 0]])  # kernel index of tap d (0: the earlier input row) for output phase a

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or output_size is not None:
            return super().forward(x, output_size)
        n, _, height, width = x.shape
        taps = self.TAPS
        # weight (in, out, 4, 4) -> (out, a, b, in, dy, dx) = weight[in, out, TAPS[a][dy], TAPS[b][dx]]
        phases = self.weight[:, :, taps[:, :, None, None], taps[None, None]].permute(1, 2, 4, 0, 3, 5)
        y = F.conv2d(x, phases.reshape(-1, self.in_channels, 2, 2), padding=1)
        y = y.view(n, self.out_channels, 2, 2, height + 1, width + 1)
        rows = [torch.stack([y[:, :, a, b, a : a + height, b : b + width] for b in (0, 1)], -1) for a in (0, 1)]
        out = torch.stack(rows, -3).reshape(n, self.out_channels, 2 * height, 2 * width)
        return out if self.bias is None else out + self.bias.view(-1, 1, 1)


PHASE_MAX_CHANNELS = 4  # transposed layers with at most this many outputs use PhaseConvTranspose2d


def _halving(n_in: int, n_out: int, height: int, width: int, transposed: bool) -> nn.Module:
    """A stride-2 convolution from ``(height, width)`` to their halves rounded up (or, ``transposed``, back):
    kernel 4 on an even side (exact halving), 3 on an odd one (``2n - 1`` back), padding 1."""
    kernel = (4 if height % 2 == 0 else 3, 4 if width % 2 == 0 else 3)
    if not transposed:
        return nn.Conv2d(n_in, n_out, kernel, stride=2, padding=1)
    phased = kernel == (4, 4) and n_out <= PHASE_MAX_CHANNELS
    return (PhaseConvTranspose2d if phased else nn.ConvTranspose2d)(n_in, n_out, kernel, stride=2, padding=1)


class ResidualBlock(nn.Module):
    """``x + conv3x3(act(conv3x3(act(x))))``: same shape in and out."""

    def __init__(self, channels: int, activation: str):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.body = nn.Sequential(act(), nn.Conv2d(channels, channels, 3, padding=1), act(),
                                  nn.Conv2d(channels, channels, 3, padding=1))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConvEncoder(nn.Module):
    """``(C, H, W)`` -> one stride-2 convolution per entry of ``channels`` (a residual block after each when
    ``residual``) -> dense ``hidden`` -> ``num_params``. On 28x28 with channels 32,64: 32@14x14 -> 64@7x7."""

    def __init__(self, num_params: int, hidden: int, activation: str, image_shape: tuple[int, int, int],
                 channels: tuple[int, ...], residual: bool = False):  # fmt: skip
        super().__init__()
        act = ACTIVATIONS[activation]
        self.image_shape = tuple(image_shape)
        heights, widths = stage_sizes(image_shape[1], len(channels)), stage_sizes(image_shape[2], len(channels))
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip((image_shape[0], *channels), channels)):
            layers += [_halving(n_in, n_out, heights[i], widths[i], transposed=False), act()]
            if residual:
                layers.append(ResidualBlock(n_out, activation))
        self.conv = nn.Sequential(*layers)
        flat = channels[-1] * heights[-1] * widths[-1]
        self.dense = nn.Sequential(nn.Linear(flat, hidden), act(), nn.Linear(hidden, num_params))

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[:-1]
        h = self.conv(x.reshape(-1, *self.image_shape)).flatten(1)
        return self.dense(h).unflatten(0, batch)


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: ``latent_dim`` -> dense ``hidden`` -> the last stage's feature map ->
    transposed stride-2 convolutions back through the same sizes -> ``num_params`` x C maps of exactly H x W."""

    def __init__(self, latent_dim: int, hidden: int, activation: str, num_params: int,
                 image_shape: tuple[int, int, int], channels: tuple[int, ...], residual: bool = False):  # fmt: skip
        super().__init__()
        act = ACTIVATIONS[activation]
        self.num_params, self.image_shape = num_params, tuple(image_shape)
        heights, widths = stage_sizes(image_shape[1], len(channels)), stage_sizes(image_shape[2], len(channels))
        self.start = (channels[-1], heights[-1], widths[-1])
        self.dense = nn.Sequential(nn.Linear(latent_dim, hidden), act(), nn.Linear(hidden, math.prod(self.start)), act())
        outs = (*reversed(channels[:-1]), num_params * image_shape[0])
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(reversed(channels), outs)):
            stage = len(channels) - 1 - i  # from stage + 1's size back to stage's
            if residual:
                layers.append(ResidualBlock(n_in, activation))
            layers.append(_halving(n_in, n_out, heights[stage], widths[stage], transposed=True))
            if i < len(channels) - 1:
                layers.append(act())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        batch = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).view(-1, *self.start)
        out = self.deconv(h)  # (n, num_params * C, H, W), parameter-major
        return out.unflatten(1, (self.num_params, self.image_shape[0])).flatten(2).unflatten(0, batch)


def make_encoder(config: NetConfig, num_params: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """The encoder for ``config`` and images of ``image_shape``, producing ``num_params`` guide parameters."""
    if config.kind == "mlp":
        return MLPEncoder(num_params, config.hidden, config.activation, image_shape)
    return ConvEncoder(num_params, config.hidden[0], config.activation, image_shape, config.channels,
                       residual=config.kind == "resnet")  # fmt: skip


def make_decoder(config: NetConfig, latent_dim: int, num_params: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """The decoder for ``config``, from ``latent_dim`` to ``num_params`` likelihood parameters per pixel value."""
    if config.kind == "mlp":
        return MLPDecoder(latent_dim, config.hidden, config.activation, num_params, image_shape)
    return ConvDecoder(latent_dim, config.hidden[0], config.activation, num_params, image_shape, config.channels,
                       residual=config.kind == "resnet")  # fmt: skip
