r"""Encoder and decoder networks.

An *encoder* maps a flattened image batch ``(..., D)`` to the guide family's parameters, shape
``(..., num_params)`` (see :mod:`pyro_vae.model.guides`). A *decoder* maps ``z`` of shape
``(..., latent_dim)`` to the likelihood's parameters, shape ``(..., num_params, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from torch import Tensor, nn

from ..options import Option, check_fields

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky-relu": nn.LeakyReLU,
}

IMAGE_SHAPE = (1, 28, 28)  # MNIST and Fashion-MNIST
DATA_DIM = 784
MAX_HIDDEN_LAYERS = 100


@dataclass
class NetConfig:
    """Architecture of the encoder/decoder pair (the latent size is the model's, see :class:`ModelConfig`)."""

    KEY: ClassVar[str] = "model.net"
    kind: Annotated[Literal["mlp", "conv"], Option("encoder/decoder architecture", flag="--net")] = "mlp"
    hidden: Annotated[tuple[int, ...], Option("MLP hidden widths (e.g. 512,256); for conv, the dense layer's width",
                                              min=1, max_items=MAX_HIDDEN_LAYERS)] = (400,)  # fmt: skip
    activation: Annotated[Literal[tuple(ACTIVATIONS)], Option("nonlinearity between layers")] = "relu"

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
    """``D -> hidden... -> num_params``."""

    def __init__(self, num_params: int, hidden: tuple[int, ...], activation: str, data_dim: int = DATA_DIM):
        super().__init__()
        self.net = _mlp([data_dim, *hidden, num_params], activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """``latent_dim -> reversed(hidden)... -> num_params * D``."""

    def __init__(
        self, latent_dim: int, hidden: tuple[int, ...], activation: str, num_params: int, data_dim: int = DATA_DIM
    ):
        super().__init__()
        self.num_params, self.data_dim = num_params, data_dim
        self.net = _mlp([latent_dim, *reversed(hidden), num_params * data_dim], activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).unflatten(-1, (self.num_params, self.data_dim))


class ConvEncoder(nn.Module):
    """28x28 -> strided conv 32@14x14 -> 64@7x7 -> dense ``hidden`` -> ``num_params``."""

    def __init__(self, num_params: int, hidden: int, activation: str):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1), act(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), act(),
        )  # fmt: skip
        self.dense = nn.Sequential(nn.Linear(64 * 7 * 7, hidden), act(), nn.Linear(hidden, num_params))

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[:-1]
        h = self.conv(x.reshape(-1, *IMAGE_SHAPE)).flatten(1)
        return self.dense(h).unflatten(0, batch)


class ConvDecoder(nn.Module):
    """``latent_dim`` -> dense ``hidden`` -> 64@7x7 -> transposed conv 32@14x14 -> ``num_params``@28x28."""

    def __init__(self, latent_dim: int, hidden: int, activation: str, num_params: int):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.num_params = num_params
        self.dense = nn.Sequential(nn.Linear(latent_dim, hidden), act(), nn.Linear(hidden, 64 * 7 * 7), act())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), act(),
            nn.ConvTranspose2d(32, num_params, 4, stride=2, padding=1),
        )  # fmt: skip

    def forward(self, z: Tensor) -> Tensor:
        batch = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).view(-1, 64, 7, 7)
        return self.deconv(h).flatten(2).unflatten(0, batch)


def make_encoder(config: NetConfig, num_params: int) -> nn.Module:
    """The encoder for ``config``, producing ``num_params`` guide parameters per image."""
    if config.kind == "mlp":
        return MLPEncoder(num_params, config.hidden, config.activation)
    return ConvEncoder(num_params, config.hidden[0], config.activation)


def make_decoder(config: NetConfig, latent_dim: int, num_params: int) -> nn.Module:
    """The decoder for ``config``, from ``latent_dim`` to ``num_params`` likelihood parameters per pixel."""
    if config.kind == "mlp":
        return MLPDecoder(latent_dim, config.hidden, config.activation, num_params)
    return ConvDecoder(latent_dim, config.hidden[0], config.activation, num_params)
