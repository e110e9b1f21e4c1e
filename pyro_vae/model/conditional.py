r"""The conditional VAE (Sohn, Lee & Yan 2015): the label is given, and both networks read it.

.. math::
    p_\theta(x, z \mid y) = p(z)\, p_\theta(x \mid z, y), \qquad
    q_\phi(z \mid x, y) = \text{guide family}\big(\mathrm{encoder}_\phi(x, y)\big)

so the bound it trains and reports is on :math:`\log p(x \mid y)`:
:math:`\mathbb E_q[\log p(x \mid z, y)] - \mathrm{KL}(q(z \mid x, y) \,\|\, p(z))`. The label enters each network as
a one-hot vector: beside the pixels (or the conv features) in the encoder, beside ``z`` in the decoder. With the
class in ``y``, ``z`` is left to hold the style: the same ``z`` decoded with each ``y`` draws one style in every
class, and ``z ~ p(z)`` with a chosen ``y`` draws that class.

A batch is the images with their labels packed in (:mod:`pyro_vae.model.labels`); every image must have one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from .labels import MAX_CLASSES, one_hot, pack, unpack
from .networks import beside
from .vae import VAE


class ConditionalVAE(VAE):
    """:class:`~pyro_vae.model.vae.VAE`'s program with the label ``y`` given to the encoder and the decoder."""

    structure = "conditional"
    needs_labels = True
    bound_of = "log p(x | y)"
    terms = ("E_q[log p(x|z,y)]", "KL(q(z|x,y) || p(z))")

    def _check_classes(self) -> None:
        if not 2 <= len(self.class_names) <= MAX_CLASSES:
            got = len(self.class_names)
            raise ConfigError(f"the {self.structure} structure needs 2 to {MAX_CLASSES} classes, got {got}")

    def _no_labels(self) -> DataError:
        return DataError(f"--structure {self.structure} needs a label for each image, and these images have none")

    def check_labels(self, labels: Tensor | None, n: int) -> None:
        if labels is None:
            raise self._no_labels()
        if labels.shape != (n,):
            raise DataError(f"{labels.numel()} labels for {n} images")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= len(self.class_names)):
            raise DataError(
                f"labels {int(labels.min())}..{int(labels.max())} outside this model's classes "
                f"0..{len(self.class_names) - 1}"
            )

    def observations(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise self._no_labels()
        return pack(x, labels)

    def split(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        return unpack(batch)

    def guide_params(self, batch: Tensor) -> Tensor:
        x, labels = unpack(batch)
        return self.encoder(x, self.one_hot(labels, x.dtype))

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("the conditional decoder needs the labels")
        return self.decoder(beside(z, self.one_hot(labels, z.dtype)))

    def one_hot(self, labels: Tensor, dtype: torch.dtype) -> Tensor:
        return one_hot(labels, len(self.class_names), dtype)
