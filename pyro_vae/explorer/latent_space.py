r"""The computations behind ``pyro-vae explore``: a trained model and one split's posterior means, and what the page
asks of them (the scatter, a point's code, decodings along a coordinate or between two points, prior samples).

Contract: :class:`LatentSpace` holds a model in evaluation mode, the split's images (as 8-bit pictures), labels and
posterior means :math:`\mathbb E_q[z \mid x]` (all latent layers side by side, ``z_1`` first, exactly what
``pyro-vae encode`` writes), and the range the sliders span: per coordinate, the central 99% of 10,000 draws from
the model (ancestral for several layers). Every method takes checked arguments (:mod:`.endpoints` checks them) and
returns tensors on the CPU; decoded pictures are the decoder's mean :math:`\mathbb E[x \mid z]` clipped to [0, 1]
(:func:`pyro_vae.plots.decode`), ``(n, C, H, W)``. Seeded draws run under a forked torch RNG, so nothing here
changes the process's random state or any other process-wide setting.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..inference.latents import posterior_moments
from ..model.hierarchical import HierarchicalVAE, loc_scale
from ..model.vae import VAE
from ..plots import class_cycle, decode, pca_2d
from .png import to_bytes

PRIOR_DRAWS = 10_000  # draws of the model's latent vector that set the sliders' range
PRIOR_MASS = 0.99  # the central share of those draws each slider spans
RANGE_SEED = 0
MOMENTS_SEED = 0  # what `pyro-vae encode` uses by default (only sampled moments depend on it)


@dataclass
class LatentSpace:
    """A model and one split's points in its latent space (see the module's contract)."""

    vae: VAE
    pictures: Tensor  # (n, C, H, W) uint8 on the CPU: the images as the model sees them
    labels: Tensor | None  # (n,) the data's labels, None when it has none
    decode_labels: Tensor | None  # (n,) the class each point decodes with (a model with labels), else None
    class_names: list[str] | None  # the data's names of its classes (None: numbers)
    means: Tensor  # (n, d) posterior means on the CPU
    scales: Tensor  # (n, d) posterior marginal standard deviations on the CPU
    low: Tensor  # (d,) each slider's lowest value
    high: Tensor  # (d,) each slider's highest value
    description: str  # what the points are, in words

    @property
    def count(self) -> int:
        return self.means.shape[0]

    @property
    def latent_dims(self) -> tuple[int, ...]:
        return tuple(self.vae.latent_dims)

    @property
    def classes(self) -> list[str]:
        """The names of the classes the model decodes (empty for a model without labels)."""
        return list(self.vae.class_names) if self.has_classes else []

    @property
    def has_classes(self) -> bool:
        return bool(self.vae.needs_labels)

    def coordinate_names(self) -> list[str]:
        """``z[0]``, ... for one layer; ``z1[0]``, ..., ``z2[0]``, ... for several."""
        if len(self.latent_dims) == 1:
            return [f"z[{u}]" for u in range(self.latent_dims[0])]
        return [f"z{layer + 1}[{u}]" for layer, size in enumerate(self.latent_dims) for u in range(size)]

    def layer_of(self, coordinate: int) -> int:
        """The latent layer (1 is next to the data) that holds ``coordinate`` of the whole vector."""
        ends = torch.tensor(self.latent_dims).cumsum(0)
        return int((ends <= coordinate).sum()) + 1

    def points(self, view: str, x: int = 0, y: int = 1) -> tuple[Tensor, Tensor, list[str]]:
        """The scatter's ``(x, y)`` coordinates and axis names: two coordinates of the means (``view="coords"``),
        their 2-D PCA (``"pca"``), or for one latent coordinate that against the label plus a fixed jitter
        (``"label"``; a jitter alone without labels)."""
        names = self.coordinate_names()
        if view == "coords":
            return self.means[:, x], self.means[:, y], [f"{names[x]} (posterior mean)", f"{names[y]} (posterior mean)"]
        if view == "pca":
            xy, explained = pca_2d(self.means)
            axes = [f"PC{i + 1} of the means ({100 * float(explained[i]):.0f}% of variance)" for i in (0, 1)]
            return xy[:, 0], xy[:, 1], axes
        jitter = 0.3 * (torch.rand(self.count, generator=torch.Generator().manual_seed(0)) - 0.5)
        base = torch.zeros(self.count) if self.labels is None else self.labels.float()
        second = "label" if self.labels is not None else "jitter"
        return self.means[:, x], base + jitter, [f"{names[x]} (posterior mean)", second]

    @torch.no_grad()
    def decode(self, z: Tensor, label: int | None = None, layer: int = 1) -> Tensor:
        r"""Pictures of latent vectors ``z`` ``(n, d)``: :math:`\mathbb E[x \mid z]`, as class ``label`` for a model
        with labels. ``layer`` > 1 (several layers): ``z``'s values of that layer are kept and each layer below is
        replaced by its conditional mean given the one above (what the sliders of that layer move)."""
        z = self._from_layer(z.to(self._device), layer)
        labels = None if label is None else torch.full((z.shape[0],), label, device=self._device)
        return decode(self.vae, z, labels).cpu()

    def _from_layer(self, z: Tensor, layer: int) -> Tensor:
        if layer == 1:
            return z
        assert isinstance(self.vae, HierarchicalVAE)
        layers = list(z.split(list(self.latent_dims), dim=-1))
        for i in reversed(range(layer - 1)):  # p(z_{i+1} | z_{i+2}) in 1-based names: its mean
            layers[i] = loc_scale(self.vae.conditionals[i](layers[i + 1]))[0]
        return torch.cat(layers, -1)

    def traverse(self, z: Tensor, coordinate: int, steps: int, label: int | None = None) -> tuple[Tensor, Tensor]:
        """Decodings of ``z`` ``(d,)`` with ``coordinate`` set to ``steps`` values evenly spaced over its slider's
        range, decoded from that coordinate's layer (see :meth:`decode`); returns them and the values."""
        values = torch.linspace(float(self.low[coordinate]), float(self.high[coordinate]), steps)
        along = z.reshape(1, -1).repeat(steps, 1)
        along[:, coordinate] = values
        return self.decode(along, label, self.layer_of(coordinate)), values

    def interpolate(self, a: int, b: int, steps: int, mode: str, label: int | None = None) -> Tensor:
        """``steps`` decodings between the posterior means of points ``a`` and ``b`` (both ends included), along the
        straight line (``mode="linear"``) or the great circle (``"spherical"``); a model with labels decodes with
        ``label``, by default point ``a``'s class."""
        t = torch.linspace(0, 1, steps).unsqueeze(1)
        z = (slerp if mode == "spherical" else lerp)(self.means[a], self.means[b], t)
        return self.decode(z, self.default_label(a) if label is None else label)

    @torch.no_grad()
    def sample(self, n: int, seed: int, label: int | None = None) -> Tensor:
        """``n`` pictures of ``z ~ p(z)`` drawn with ``seed`` (as ``pyro-vae sample --seed``); a model with labels
        draws class ``label``, by default the classes in turn."""
        with _seeded(seed, self._device):
            z = self.vae.generate(n)
        labels = class_cycle(self.vae, n)
        if labels is not None and label is not None:
            labels = torch.full_like(labels, label)
        return decode(self.vae, z, labels).cpu()

    def default_label(self, index: int) -> int | None:
        """The class point ``index`` decodes with (its label; M2: the classifier's where hidden), None without."""
        return None if self.decode_labels is None else int(self.decode_labels[index])

    @property
    def _device(self) -> torch.device:
        return next(self.vae.parameters()).device


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Points ``(1 - t) a + t b`` for each ``t`` ``(steps, 1)``."""
    return (1 - t) * a + t * b


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    r"""Spherical interpolation (White 2016): :math:`\frac{\sin((1-t)\Omega)}{\sin\Omega} a +
    \frac{\sin(t\Omega)}{\sin\Omega} b`, :math:`\Omega` the angle between ``a`` and ``b``; the straight line when
    they are (nearly) parallel or one is zero."""
    cosine = torch.dot(a, b) / (a.norm() * b.norm()).clamp(min=1e-12)
    omega = torch.arccos(cosine.clamp(-1, 1))
    if float(torch.sin(omega)) < 1e-6:
        return lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global torch RNG seeded with ``seed`` inside, and as it was after (``torch.random.fork_rng``)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def slider_range(vae: VAE, draws: int = PRIOR_DRAWS, mass: float = PRIOR_MASS) -> tuple[Tensor, Tensor]:
    """Each coordinate's central ``mass`` of ``draws`` latent vectors drawn from the model (a fixed seed)."""
    device = next(vae.parameters()).device
    with _seeded(RANGE_SEED, device):
        z = vae.generate(draws).float().cpu()
    tail = (1 - mass) / 2
    return torch.quantile(z, tail, dim=0), torch.quantile(z, 1 - tail, dim=0)


@torch.no_grad()
def latent_space(
    vae: VAE, x: Tensor, labels: Tensor | None, class_names: list[str] | None, description: str, batch_size: int = 500
) -> LatentSpace:
    """The :class:`LatentSpace` of images ``x`` ``(n, C*H*W)`` (on the model's device) with their ``labels``: their
    posterior means and scales as :func:`pyro_vae.pipeline.encode_checkpoint` computes them (the same seed). Puts
    ``vae`` in evaluation mode."""
    vae.eval()
    vae.check_labels(labels, len(x))
    batch = vae.observations(x, labels)
    with _seeded(MOMENTS_SEED, x.device):
        means, scales = posterior_moments(vae, batch, batch_size=batch_size)
    decode_labels = None
    if vae.needs_labels:
        decode_labels = torch.cat(
            [vae.completed_labels(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)]
        ).cpu()
    low, high = slider_range(vae)
    return LatentSpace(
        vae=vae,
        pictures=to_bytes(x.reshape(-1, *vae.image_shape)),
        labels=None if labels is None else labels.cpu(),
        decode_labels=decode_labels,
        class_names=class_names,
        means=means.float().cpu(),
        scales=scales.float().cpu(),
        low=low,
        high=high,
        description=description,
    )


def load_latent_space(
    checkpoint: str | Path,
    *,
    data_dir: str | Path | None = None,
    split: str = "test",
    limit: int | None = None,
    device: str = "auto",
    trust_modules: Iterable[str] = (),
) -> LatentSpace:
    """The :class:`LatentSpace` of a checkpoint's model (loaded by :func:`pyro_vae.pipeline.load_model`, under its
    trust rules) and the first ``limit`` images of ``split`` of its data (``data_dir``: the same kind of data in
    another place)."""
    from ..config import RunConfig
    from ..pipeline import checkpoint_data, load_model

    vae, ckpt = load_model(checkpoint, device, trust_modules)
    config = RunConfig.from_checkpoint(ckpt, trust_modules)
    x, labels, data_config, class_names = checkpoint_data(config, split, data_dir, next(vae.parameters()).device, limit)
    description = f"{data_config.describe()}, {split} split, {len(x)} images; checkpoint epoch {ckpt['epoch']}"
    return latent_space(vae, x, labels, class_names, description)


def layer_bounds(latent_dims: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(first coordinate, size)`` of each latent layer in the whole vector, ``z_1`` first."""
    starts = [0, *torch.tensor(latent_dims).cumsum(0).tolist()[:-1]]
    return [(int(s), int(n)) for s, n in zip(starts, latent_dims)]


def finite_span(low: Tensor, high: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
    """The values a request may give each coordinate: the slider's range and every posterior mean, widened on each
    side by the slider's width (so any point of the page is accepted, and a value far outside is refused)."""
    lo, hi = torch.minimum(low, means.min(0).values), torch.maximum(high, means.max(0).values)
    width = (high - low).clamp(min=1e-3)
    return lo - width, hi + width
