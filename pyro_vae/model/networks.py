r"""Encoder and decoder networks.

An *encoder* maps a flattened image batch ``(..., D)`` to the guide family's parameters, shape
``(..., num_params)`` (see :mod:`pyro_vae.model.guides`). A *decoder* maps ``z`` of shape
``(..., latent_dim)`` to the likelihood's parameters, shape ``(..., num_params, D)``, ``D = C*H*W`` in the
images' ``(C, H, W)`` order. An encoder built with ``conditions=K`` also takes a ``(..., K)`` vector (a one-hot
label, :mod:`pyro_vae.model.structures`): the MLP reads it beside the pixels, the convolutional encoder beside its
flattened feature map, before the dense layers. A conditioned decoder is an ordinary one whose input is
``(z, condition)``. Both take the image shape from the data: the convolutional pair works at any
``H x W`` (each stride-2 stage rounds up, and the decoder retraces the same sizes exactly).

The convolutional pair has two layouts (``layout``), on 28x28 grey images with channels 32,64 and hidden 16:

* ``mirror``: encoder conv 4x4/2 to 32@14x14 and 64@7x7, dense 16, the guide's parameters; the decoder its mirror
  image: dense 16, dense to 64@7x7, transposed 4x4/2 convolutions to 32@14x14 and to the likelihood's maps.
* ``keras``: the Keras VAE example's network: 3x3/2 convolutions ('same' padding) to 32@14x14 and 64@7x7, dense 16,
  the guide's parameters; the decoder goes from z straight to 64@7x7, then transposed 3x3/2 convolutions to
  64@14x14 and 32@28x28 and a 3x3 stride-1 convolution to the likelihood's maps. (TensorFlow pads a stride-2
  'same' convolution by 0 before and 1 after; here it is 1 on both sides: a one-pixel shift, the same sizes.)
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
    kind: Annotated[
        Literal["mlp", "conv", "resnet"],
        Option(
            "encoder/decoder architecture: an MLP on the flattened image; strided convolutions; or strided "
            "convolutions each followed by a residual block",
            flag="--net",
        ),
    ] = "mlp"
    hidden: Annotated[
        tuple[int, ...],
        Option(
            "MLP hidden widths (e.g. 512,256); for conv/resnet, the dense layer's width",
            min=1,
            max_items=MAX_HIDDEN_LAYERS,
        ),
    ] = (400,)
    activation: Annotated[Literal[tuple(ACTIVATIONS)], Option("nonlinearity between layers")] = "relu"
    channels: Annotated[
        tuple[int, ...],
        Option(
            "conv/resnet: channels of each stride-2 stage (their number is the depth), e.g. 32,64,128",
            min=1,
            max=4096,
            max_items=MAX_CONV_STAGES,
            flag="--conv-channels",
        ),
    ] = (32, 64)
    init: Annotated[
        Literal["torch", "glorot"],
        Option(
            "initial weights: torch (PyTorch's defaults: uniform within 1/sqrt(fan-in), biases too) or glorot "
            "(Glorot-uniform weights, zero biases: Keras's defaults)",
            flag="--net-init",
        ),
    ] = "torch"
    layout: Annotated[
        Literal["mirror", "keras"],
        Option(
            "conv/resnet: mirror (4x4 stride-2 convolutions, the decoder the encoder's mirror image with its dense "
            "layer) or keras (the Keras VAE example's: 3x3 convolutions, the decoder from z straight to the feature "
            "map, a last "
            "stride-1 convolution)",
            flag="--conv-layout",
        ),
    ] = "mirror"

    def validate(self) -> None:
        check_fields(self)


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def beside(x: Tensor, condition: Tensor | None) -> Tensor:
    """``x`` and ``condition`` side by side, their leading dimensions broadcast (an enumerated label has its own)."""
    if condition is None:
        return x
    batch = torch.broadcast_shapes(x.shape[:-1], condition.shape[:-1])
    return torch.cat([x.expand(*batch, -1), condition.expand(*batch, -1)], -1)


class MLPEncoder(nn.Module):
    """``C*H*W (+ conditions) -> hidden... -> num_params``."""

    def __init__(
        self,
        num_params: int,
        hidden: tuple[int, ...],
        activation: str,
        image_shape: tuple[int, int, int],
        conditions: int = 0,
    ):
        super().__init__()
        self.net = _mlp([math.prod(image_shape) + conditions, *hidden, num_params], activation)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.net(beside(x, condition))


class MLPDecoder(nn.Module):
    """``latent_dim -> reversed(hidden)... -> num_params * C*H*W``."""

    def __init__(
        self,
        latent_dim: int,
        hidden: tuple[int, ...],
        activation: str,
        num_params: int,
        image_shape: tuple[int, int, int],
    ):
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


def _halving(n_in: int, n_out: int, height: int, width: int, transposed: bool, layout: str = "mirror") -> nn.Module:
    """A stride-2 convolution from ``(height, width)`` to their halves rounded up (or, ``transposed``, back), padding
    1. ``mirror``: kernel 4 on an even side (exact halving), 3 on an odd one (``2n - 1`` back). ``keras``: kernel 3
    ('same'); going back, an even side gets the one more row or column it needs as output padding."""
    if layout == "keras":
        if not transposed:
            return nn.Conv2d(n_in, n_out, 3, stride=2, padding=1)
        return nn.ConvTranspose2d(n_in, n_out, 3, stride=2, padding=1, output_padding=(1 - height % 2, 1 - width % 2))
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
        self.body = nn.Sequential(
            act(), nn.Conv2d(channels, channels, 3, padding=1), act(), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConvEncoder(nn.Module):
    """``(C, H, W)`` -> one stride-2 convolution per entry of ``channels`` (a residual block after each when
    ``residual``) -> dense ``hidden`` -> ``num_params``. On 28x28 with channels 32,64: 32@14x14 -> 64@7x7."""

    def __init__(
        self,
        num_params: int,
        hidden: int,
        activation: str,
        image_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        residual: bool = False,
        layout: str = "mirror",
        conditions: int = 0,
    ):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.image_shape = tuple(image_shape)
        heights, widths = stage_sizes(image_shape[1], len(channels)), stage_sizes(image_shape[2], len(channels))
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip((image_shape[0], *channels), channels)):
            layers += [_halving(n_in, n_out, heights[i], widths[i], transposed=False, layout=layout), act()]
            if residual:
                layers.append(ResidualBlock(n_out, activation))
        self.conv = nn.Sequential(*layers)
        flat = channels[-1] * heights[-1] * widths[-1]
        self.dense = nn.Sequential(nn.Linear(flat + conditions, hidden), act(), nn.Linear(hidden, num_params))

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        batch = x.shape[:-1]
        h = self.conv(x.reshape(-1, *self.image_shape)).flatten(1)
        if condition is None:
            return self.dense(h).unflatten(0, batch)
        return self.dense(beside(h.unflatten(0, batch), condition))


class ConvDecoder(nn.Module):
    """Back from ``latent_dim`` to ``num_params`` x C maps of exactly H x W through the encoder's sizes. ``mirror``:
    dense ``hidden`` -> the last stage's feature map -> transposed stride-2 convolutions, the last one to the maps.
    ``keras``: dense straight to the feature map -> transposed stride-2 convolutions keeping the channels
    (``reversed(channels)``) -> a 3x3 stride-1 convolution to the maps."""

    def __init__(
        self,
        latent_dim: int,
        hidden: int,
        activation: str,
        num_params: int,
        image_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        residual: bool = False,
        layout: str = "mirror",
    ):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.num_params, self.image_shape = num_params, tuple(image_shape)
        heights, widths = stage_sizes(image_shape[1], len(channels)), stage_sizes(image_shape[2], len(channels))
        self.start = (channels[-1], heights[-1], widths[-1])
        maps = num_params * image_shape[0]
        if layout == "keras":
            self.dense = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start)), act())
            outs = tuple(reversed(channels))
        else:
            self.dense = nn.Sequential(
                nn.Linear(latent_dim, hidden), act(), nn.Linear(hidden, math.prod(self.start)), act()
            )
            outs = (*reversed(channels[:-1]), maps)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip((channels[-1], *outs[:-1]), outs)):
            stage = len(channels) - 1 - i  # from stage + 1's size back to stage's
            if residual:
                layers.append(ResidualBlock(n_in, activation))
            layers.append(_halving(n_in, n_out, heights[stage], widths[stage], transposed=True, layout=layout))
            if i < len(channels) - 1 or layout == "keras":
                layers.append(act())
        if layout == "keras":
            layers.append(nn.Conv2d(outs[-1], maps, 3, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        batch = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).view(-1, *self.start)
        out = self.deconv(h)  # (n, num_params * C, H, W), parameter-major
        return out.unflatten(1, (self.num_params, self.image_shape[0])).flatten(2).unflatten(0, batch)


def make_encoder(
    config: NetConfig, num_params: int, image_shape: tuple[int, int, int], conditions: int = 0
) -> nn.Module:
    """The encoder for ``config`` and images of ``image_shape``, producing ``num_params`` guide parameters (from the
    image and a ``conditions``-long vector when ``conditions`` > 0)."""
    if config.kind == "mlp":
        return initialise(
            MLPEncoder(num_params, config.hidden, config.activation, image_shape, conditions), config.init
        )
    return initialise(
        ConvEncoder(
            num_params,
            config.hidden[0],
            config.activation,
            image_shape,
            config.channels,
            residual=config.kind == "resnet",
            layout=config.layout,
            conditions=conditions,
        ),
        config.init,
    )


def make_decoder(config: NetConfig, latent_dim: int, num_params: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """The decoder for ``config``, from ``latent_dim`` to ``num_params`` likelihood parameters per pixel value."""
    if config.kind == "mlp":
        return initialise(
            MLPDecoder(latent_dim, config.hidden, config.activation, num_params, image_shape), config.init
        )
    return initialise(
        ConvDecoder(
            latent_dim,
            config.hidden[0],
            config.activation,
            num_params,
            image_shape,
            config.channels,
            residual=config.kind == "resnet",
            layout=config.layout,
        ),
        config.init,
    )


def initialise(net: nn.Module, init: str) -> nn.Module:
    r"""``net`` with ``init``'s initial weights. ``torch`` keeps PyTorch's: weights and biases uniform within
    :math:`\pm 1/\sqrt{	ext{fan-in}}`. ``glorot`` draws every weight uniform within
    :math:`\pm\sqrt{6 / (	ext{fan-in} + 	ext{fan-out})}` and zeroes the biases. The difference matters for a
    narrow bottleneck after a wide layer: the conv net's 3136 -> 16 dense layer starts at :math:`\pm 0.018` under
    ``torch`` (its outputs barely depend on the image) and :math:`\pm 0.044` under ``glorot``. With z = 2,
    PyTorch's start left 1 or 0 of the 2 latent units active on 2 of 3 seeds, Glorot's 2 on every seed
    (``benchmarks/RESULTS.md``, "A conv VAE at z = 2")."""
    if init == "glorot":
        for module in net.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return net
