r"""Pictures of a trained VAE: reconstructions, prior samples, the latent space, the 2-D manifold,
interpolations, and training curves.

Each decoded image is the likelihood's mean :math:`\mathbb E[x \mid z]` (for a Bernoulli, the pixel
probabilities), which shows what the decoder believes better than one noisy draw; reconstructions
and interpolations decode the posterior mean :math:`\mathbb E_q[z \mid x]`. Image grids are tiled by
torchvision's ``make_grid``; figures with axes are drawn by matplotlib on its Agg canvas (no display
and no pyplot global state). Every file is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from .data.sources import class_name
from .errors import ConfigError
from .inference.latents import posterior_moments
from .model.vae import VAE
from .runtime.atomic import atomic_path

PAD_VALUE = 0.5  # grey lines between tiles: visible against black backgrounds and white strokes


@torch.no_grad()
def decode(vae: VAE, z: Tensor, labels: Tensor | None = None) -> Tensor:
    r""":math:`\mathbb E[x \mid z]` (:math:`\mathbb E[x \mid z, y]` in a structure with labels) as images
    ``(n, C, H, W)`` clipped to [0, 1]."""
    return vae.likelihood.mean(vae.decode(z, labels)).clamp(0, 1).reshape(-1, *vae.image_shape)


def class_cycle(vae: VAE, n: int, start: int = 0) -> Tensor | None:
    """Labels ``start, start + 1, ...`` modulo the classes, for ``n`` samples of a structure with labels (``None``
    for one without): what a sample grid shows when no class is chosen."""
    if not vae.needs_labels:
        return None
    device = next(vae.parameters()).device
    return (torch.arange(start, start + n, device=device) % len(vae.class_names)).long()


@torch.no_grad()
def sample_images(vae: VAE, n: int, pixels: str = "mean", labels: Tensor | None = None) -> Tensor:
    r"""``n`` images from the model, ``(n, C, H, W)``: ``z ~ p(z)``, then :math:`\mathbb E[x \mid z]`
    (``pixels="mean"``) or a draw ``x ~ p(x | z)`` (``pixels="sample"``). Uses the global torch RNG. A structure
    with labels draws class ``labels[i]`` for image ``i`` (default: the classes in turn, :func:`class_cycle`)."""
    z = vae.generate(n)
    labels = class_cycle(vae, n) if labels is None else labels
    if pixels == "mean":
        return decode(vae, z, labels)
    if pixels == "sample":
        return vae.likelihood(vae.decode(z, labels)).sample().reshape(-1, *vae.image_shape)
    raise ConfigError(f"pixels must be 'mean' or 'sample', got {pixels!r}")


def sample_chunks(
    vae: VAE, n: int, pixels: str = "mean", chunk: int = 4096, label: int | None = None
) -> Iterator[Tensor]:
    """:func:`sample_images` for ``n`` images, ``chunk`` at a time, each piece on the CPU (with one piece
    the images are exactly :func:`sample_images`'s); ``label``: every image of that class (a structure with
    labels; else the classes in turn)."""
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        labels = class_cycle(vae, size, start)
        if labels is not None and label is not None:
            labels = torch.full_like(labels, label)
        yield sample_images(vae, size, pixels, labels).cpu()


def tile(images: Tensor, per_row: int | None = None) -> Tensor:
    """Images ``(n, C, H, W)`` clipped to [0, 1] as one grid, ``per_row`` to a row (default: square)."""
    per_row = per_row or math.ceil(math.sqrt(images.shape[0]))
    return make_grid(images.clamp(0, 1).cpu(), nrow=per_row, pad_value=PAD_VALUE)


def sample_grid(vae: VAE, n: int = 64, per_row: int = 8, labels: Tensor | None = None) -> Tensor:
    r"""``n`` decoder means :math:`\mathbb E[x \mid z]`, ``z ~ p(z)``, tiled ``per_row`` to a row."""
    return tile(sample_images(vae, n, labels=labels), per_row)


def reconstruction_grid(vae: VAE, x: Tensor, per_row: int = 8, labels: Tensor | None = None) -> Tensor:
    """Rows of ``per_row`` inputs, each directly above the row of their reconstructions (``x``: ``(n, C*H*W)``;
    images beyond the last full row are left out; ``labels``: theirs, for a structure with labels)."""
    per_row = min(per_row, x.shape[0])
    batch = vae.observations(x, labels)
    recon = decode(vae, posterior_moments(vae, batch)[0], vae.completed_labels(batch))
    rows, shape = x.shape[0] // per_row, vae.image_shape
    inputs = x[: rows * per_row].reshape(rows, 1, per_row, *shape)
    outputs = recon[: rows * per_row].reshape(rows, 1, per_row, *shape)
    tiles = torch.cat([inputs, outputs], dim=1).reshape(-1, *shape)
    return make_grid(tiles.cpu(), nrow=per_row, pad_value=PAD_VALUE)


def interpolation_grid(
    vae: VAE,
    x_from: Tensor,
    x_to: Tensor,
    steps: int = 10,
    labels_from: Tensor | None = None,
    labels_to: Tensor | None = None,
) -> Tensor:
    r"""One row per pair: the first image, decodings along the straight line between the two posterior
    means (:math:`z_t = (1-t)\,\mu_a + t\,\mu_b` for ``steps`` values of ``t`` from 0 to 1), the second image.
    A structure with labels encodes each image with its label and decodes the whole row with the first's."""
    batch_a = vae.observations(x_from, labels_from)
    mu_a = posterior_moments(vae, batch_a)[0]
    mu_b = posterior_moments(vae, vae.observations(x_to, labels_to))[0]
    labels_from = vae.completed_labels(batch_a)
    t = torch.linspace(0, 1, steps, device=mu_a.device).view(1, steps, 1)
    z = (1 - t) * mu_a.unsqueeze(1) + t * mu_b.unsqueeze(1)  # (pairs, steps, d)
    shape = vae.image_shape
    along = None if labels_from is None else labels_from.repeat_interleave(steps)
    middle = decode(vae, z.reshape(-1, z.shape[-1]), along).reshape(x_from.shape[0], steps, *shape)
    ends = lambda x: x.reshape(-1, 1, *shape)  # noqa: E731
    rows = torch.cat([ends(x_from), middle, ends(x_to)], dim=1)
    return make_grid(rows.reshape(-1, *shape).cpu(), nrow=steps + 2, pad_value=PAD_VALUE)


def manifold_values(n: int = 20, lowest: float = 0.05) -> Tensor:
    r"""``n`` latent values :math:`\Phi^{-1}(p)` for ``p`` evenly spaced in ``[lowest, 1 - lowest]``:
    equal steps of prior probability mass (Kingma & Welling 2014, fig. 4)."""
    p = torch.linspace(lowest, 1 - lowest, n, dtype=torch.float64)
    return torch.distributions.Normal(0.0, 1.0).icdf(p).float()


def _layers(vae: VAE) -> str:
    return " + ".join(map(str, vae.latent_dims))


def manifold_grid(vae: VAE, n: int = 20, mass: float = 0.9, label: int = 0) -> tuple[Tensor, Tensor]:
    """The decoder over an ``n`` x ``n`` grid of :func:`manifold_values` spanning the central ``mass`` of the
    prior on each axis (z=2 only): the image grid, with :math:`z_1` increasing to the right and :math:`z_2`
    upwards, and the values used (a structure with labels: decoded as class ``label``)."""
    if vae.latent_dims != (2,):
        raise ConfigError(f"the manifold plot needs one 2-D latent layer; this model has {_layers(vae)}")
    values = manifold_values(n, (1 - mass) / 2)
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")  # row 0 is the top: largest z2
    device = next(vae.parameters()).device
    labels = torch.full((n * n,), label, device=device) if vae.needs_labels else None
    images = decode(vae, torch.stack([z1, z2], dim=-1).reshape(-1, 2).to(device), labels)
    return make_grid(images.cpu(), nrow=n, padding=0), values


@torch.no_grad()
def class_style_grid(vae: VAE, styles: int = 8) -> Tensor:
    r"""A structure with labels: one row per class, one column per ``z ~ p(z)`` (``styles`` draws from the global
    torch RNG), each tile :math:`\mathbb E[x \mid z, y]`: down a column the same style in every class."""
    if not vae.needs_labels:
        raise ConfigError(f"the class-by-style grid needs a structure with labels (this model is {vae.structure})")
    classes = len(vae.class_names)
    z = vae.generate(styles).repeat(classes, 1)
    labels = torch.arange(classes, device=z.device).repeat_interleave(styles)
    return make_grid(decode(vae, z, labels).cpu(), nrow=styles, pad_value=PAD_VALUE)


@torch.no_grad()
def layer_grid(vae: VAE, tops: int = 8, draws: int = 8) -> Tensor:
    r"""A model with several latent layers: one row per top-layer draw :math:`z_L \sim p(z_L)` (``tops`` of them), one
    column per draw of the layers below from :math:`p(z_l \mid z_{l+1})` (``draws``), each tile
    :math:`\mathbb E[x \mid z_1]`: what stays the same along a row is what the top layer encodes."""
    if len(vae.latent_dims) < 2:
        raise ConfigError(f"the layer grid needs several latent layers (this model has {_layers(vae)})")
    top = vae.prior().sample((tops,)).repeat_interleave(draws, dim=0)
    return make_grid(decode(vae, vae.descend(top)).cpu(), nrow=draws, pad_value=PAD_VALUE)


def pca_2d(points: Tensor) -> tuple[Tensor, Tensor]:
    """The projection of ``points`` ``(n, d)`` onto their first two principal components, and the
    fraction of variance each explains (a component the points do not have, one point's second say, is 0)."""
    centred = points.double() - points.double().mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    total = s.pow(2).sum()
    explained = s.pow(2) / total if total > 0 else torch.zeros_like(s)
    xy, explained = centred @ v[:2].T, explained[:2]
    missing = 2 - xy.shape[1]
    return torch.nn.functional.pad(xy, (0, missing)).float(), torch.nn.functional.pad(explained, (0, missing)).float()


def _figure(width: float, height: float):
    """A matplotlib ``Figure`` not attached to pyplot (figures below return it; see :func:`save_figure`)."""
    from matplotlib.figure import Figure  # imported here: only the plotting commands need matplotlib

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def grid_figure(grid: Tensor, title: str, row_labels: list[str] | None = None):
    """A ``make_grid`` image with a title and, when given, a label beside each row of tiles."""
    height, width = grid.shape[1:]
    fig = _figure(width / 60 + (1.6 if row_labels else 0.4), height / 60 + 0.6)
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    tile = height / len(row_labels) if row_labels else 0
    ax.set_yticks([tile * (i + 0.5) for i in range(len(row_labels or []))], row_labels or [], fontsize=8)
    ax.tick_params(length=0)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """A matplotlib figure as a PNG (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path


def save_grid(grid: Tensor, path: str | Path) -> Path:
    """A ``make_grid`` image as a PNG (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_image(grid, tmp, format=path.suffix.lstrip(".") or "png")
    return path


def latent_scatter(means: Tensor, labels: Tensor | None, class_names: list[str] | None, title: str = ""):
    """Posterior means coloured by label (one colour without labels): the two coordinates when z=2, else a 2-D
    PCA projection (the axes say which, with the variance explained); z=1 is shown against the label (against a
    jitter without labels)."""
    means = means.cpu()
    unlabelled = labels is None
    labels = torch.zeros(len(means), dtype=torch.long) if unlabelled else labels.cpu()
    d = means.shape[1]
    if d == 2:
        xy, axes = means, (r"$z_1$ (posterior mean)", r"$z_2$ (posterior mean)")
    elif d == 1:
        jitter = 0.3 * (torch.rand(len(labels), generator=torch.Generator().manual_seed(0)) - 0.5)
        xy, axes = (
            torch.stack([means[:, 0], labels.float() + jitter], 1),
            (r"$z_1$ (posterior mean)", "jitter" if unlabelled else "label"),
        )
    else:
        xy, explained = pca_2d(means)
        axes = tuple(f"PC{i + 1} of the {d}-D posterior means ({100 * explained[i]:.0f}% of variance)" for i in (0, 1))
    fig = _figure(7.5, 6.5)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    colours = colormaps["tab10"]
    for label in labels.unique().tolist():
        keep = labels == label
        name = None if unlabelled else class_name(class_names, label)
        ax.scatter(xy[keep, 0], xy[keep, 1], s=3, alpha=0.6, color=colours(label % 10), label=name, rasterized=True)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title or f"latent space of {len(labels)} images")
    if not unlabelled:
        ax.legend(markerscale=4, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    return fig


def confusion_figure(predictions: Tensor, labels: Tensor, class_names: list[str] | None, classes: int, title: str = ""):
    """The confusion matrix of a classifier over ``classes`` classes: rows the true class, columns the predicted one,
    each row as fractions of its images (the diagonal is each class's accuracy), with the counts written in."""
    counts = torch.zeros(classes, classes, dtype=torch.long)
    counts.index_put_((labels.cpu(), predictions.cpu()), torch.ones(len(labels), dtype=torch.long), accumulate=True)
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    fig = _figure(1.0 + 0.55 * classes, 0.8 + 0.5 * classes)
    ax = fig.add_subplot()
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    names = [class_name(class_names, i) for i in range(classes)]
    ax.set_xticks(range(classes), names, rotation=90, fontsize=8)
    ax.set_yticks(range(classes), names, fontsize=8)
    ax.set_xlabel("predicted class (most probable under q(y|x))")
    ax.set_ylabel("true class")
    for i in range(classes):
        for j in range(classes):
            if counts[i, j]:
                colour = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7, color=colour)
    accuracy = float(counts.diag().sum()) / max(1, len(labels))
    ax.set_title(title or f"classifier on {len(labels)} images: accuracy {100 * accuracy:.2f}%", fontsize=10)
    return fig


def manifold_figure(vae: VAE, n: int = 20, title: str = "", mass: float = 0.9, label: int = 0):
    """:func:`manifold_grid` with its latent values on the axes, so it lines up with the scatter."""
    grid, values = manifold_grid(vae, n, mass, label)
    fig = _figure(7, 7)
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), extent=(0, n, 0, n), interpolation="nearest")
    ticks = sorted({round(i * (n - 1) / 4) for i in range(5)})  # both ends, the middle, the quartiles
    ax.set_xticks([i + 0.5 for i in ticks], [f"{values[i]:.2f}" for i in ticks])
    ax.set_yticks([i + 0.5 for i in ticks], [f"{values[i]:.2f}" for i in ticks])
    ax.set_xlabel(r"$z_1 = \Phi^{-1}(p)$")
    ax.set_ylabel(r"$z_2 = \Phi^{-1}(p)$")
    ax.set_title(title or r"decoder mean $\mathbb{E}[x \mid z]$ over the latent grid")
    return fig


def training_curves(metrics: list[dict], objective: str = "trace"):
    """Train objective and validation ELBO per epoch, and β in a second panel when it is not always 1."""
    epochs = [m["epoch"] for m in metrics]
    betas = [m.get("beta", 1.0) for m in metrics]
    annealed = any(b != 1.0 for b in betas)
    from matplotlib.ticker import MaxNLocator

    fig = _figure(7, 6 if annealed else 4.5)
    ax = fig.add_subplot(2 if annealed else 1, 1, 1)
    train_label = {
        "iwae": "train IWAE bound (−loss)",
        "iwae-dreg": "train IWAE bound (−loss)",
        "meanfield": "train ELBO (−loss, closed-form KL)",
    }.get(objective, "train ELBO (−loss)")
    if annealed:
        train_label += ", β-weighted KL"
    ax.plot(epochs, [-m["train_loss"] for m in metrics], "o-", label=train_label)
    val = [(m["epoch"], m["val_elbo"]) for m in metrics if m.get("val_elbo") is not None]
    if val:
        ax.plot(*zip(*val), "s-", label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("nats per image (higher is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    if annealed:
        beta_ax = fig.add_subplot(2, 1, 2, sharex=ax)
        beta_ax.plot(epochs, betas, "o-", color="tab:red")
        beta_ax.set_ylabel("β (KL weight) at epoch end")
        beta_ax.set_xlabel("epoch")
        beta_ax.grid(alpha=0.3)
    return fig
