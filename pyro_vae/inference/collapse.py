r"""The KL term taken apart (Hoffman & Johnson 2016, "ELBO surgery"): per latent coordinate, and into what the code
says about the image and how far the codes as a whole stray from the prior.

Over the :math:`N` evaluated images, with the aggregate posterior :math:`q(z) = \frac1N \sum_n q(z \mid x_n)`,

.. math::
    \underbrace{\frac1N \sum_n \mathrm{KL}\big(q(z \mid x_n) \,\|\, p(z)\big)}_{\text{the ELBO's KL term}}
    = \underbrace{\frac1N \sum_n \mathbb E_{q(z \mid x_n)}\big[\log q(z \mid x_n) - \log q(z)\big]}_{I(x;\, z)}
    + \underbrace{\mathrm{KL}\big(q(z) \,\|\, p(z)\big)}_{\text{marginal KL}},

:math:`I(x; z)` being the mutual information between image and code when :math:`x` is drawn uniformly from the
evaluated images: :math:`0 \le I \le \log N`. A collapsed posterior (:math:`q(z \mid x)` the same for every image)
has :math:`I = 0`; a KL term spent on :math:`I` carries information, one spent on the marginal KL is a mismatch
between the codes and the prior, which sampling from :math:`p(z)` pays for.

**Per coordinate** (:func:`kl_per_dim`): :math:`\mathrm{KL}\big(q(z_u \mid x) \,\|\, p(z_u)\big)` of each
coordinate's marginals, in closed form, where both are known Gaussians: a Gaussian guide (diagonal: the
coordinate's own :math:`\mathcal N(\mu_u, \sigma_u^2)`; full covariance: the marginal
:math:`\mathcal N(\mu_u, \Sigma_{uu})`) and a prior that factorises into Gaussians per coordinate (standard normal,
learned diagonal Gaussian; :func:`factorised_gaussian_prior`). For a factorised prior
:math:`\mathrm{KL}(q \,\|\, p) = \sum_u \mathrm{KL}(q_u \,\|\, p_u) + \mathrm{KL}(q \,\|\, \prod_u q_u)`: the
coordinates' KLs add up to the whole KL term exactly for a diagonal guide, and to less by the posterior's total
correlation for a full covariance. Mixture, Vamp and flow priors do not factorise, an IAF guide's marginals are not
Gaussian, and in a model with several latent layers only one layer's :math:`q(z_l \mid x)` is Gaussian (``z_1``
bottom-up, ``z_L`` top-down) while its KL terms are conditional ones: there the per-coordinate KLs (and
:math:`I`) are absent, not approximated; the active units still count a hierarchy's units, layer by layer.

**Mutual information** (:func:`mutual_information`), for a guide that is Gaussian over the whole latent vector
(one latent layer, diagonal or full covariance): one draw :math:`z_i \sim q(z \mid x_i)` per image (or
``draws``), :math:`\log q(z_i \mid x_j)` for every pair in closed form from the guide's moments (no decoder, in
memory-bounded chunks), and

.. math:: \hat I = \frac1N \sum_i \Big[\log q(z_i \mid x_i) - \log \frac1N \sum_j q(z_i \mid x_j)\Big].

The aggregate is the exact mixture over the evaluated images, so :math:`\hat I` is unbiased for the mutual
information *of that set* (the evaluated images as the data distribution); each term is at most :math:`\log N`.
As an estimate of the mutual information under the data distribution it is biased downwards: its expectation is
the InfoNCE lower bound with the posterior as critic (van den Oord et al. 2018; Poole et al. 2019), close where
each posterior overlaps many images, and saturating at :math:`\log N` where posteriors are narrow beside the spacing
of the images (each image then owns its region of :math:`z`). The marginal KL (the KL term's mean minus
:math:`\hat I`) is correspondingly biased upwards: the aggregate of :math:`N` narrow posteriors is spikier than that
of the whole distribution. Compare either between models on the same images only. Its work is :math:`N^2` times
:math:`d` (diagonal) or :math:`d(d+3)/2` (full covariance) multiply-adds, in float64; beyond
:data:`MI_WORK` a random subset of the images (from the seed) is used, and its size is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence

from ..model.priors import Prior
from ..model.vae import VAE
from .latents import active_units, active_units_per_layer, posterior_moments

MI_WORK = 4e10  # multiply-adds for log q(z_i | x_j) over all pairs: ~10,000 images of a 20-d full-covariance guide
_ELEMENTS_PER_CHUNK = 1 << 21  # log q(z_i | x_j) held at once (16 MiB of float64)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class GaussianPosteriors:
    r""":math:`q(z \mid x_n) = \mathcal N(\mu_n, L_n L_n^\top)` of ``n`` images."""

    loc: Tensor  # (n, d): mu
    scale: Tensor  # (n, d): each coordinate's marginal standard deviation, sqrt((L L^T)_uu)
    scale_tril: Tensor | None = None  # (n, d, d): L, for a full covariance; None: diagonal (L = diag scale)

    def __len__(self) -> int:
        return self.loc.shape[0]

    def rows(self, index: Tensor) -> GaussianPosteriors:
        """These images' posteriors, in ``index``'s order."""
        tril = None if self.scale_tril is None else self.scale_tril[index]
        return GaussianPosteriors(self.loc[index], self.scale[index], tril)

    def to(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> GaussianPosteriors:
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return GaussianPosteriors(move(self.loc), move(self.scale), move(self.scale_tril))

    def columns(self) -> dict[str, Tensor]:
        """As named per-image columns (what an evaluation's batches gather): :meth:`from_columns` reads them back."""
        out = {"q_loc": self.loc, "q_scale": self.scale}
        return out if self.scale_tril is None else {**out, "q_scale_tril": self.scale_tril}

    @classmethod
    def from_columns(cls, columns: dict[str, Tensor]) -> GaussianPosteriors | None:
        if "q_loc" not in columns:
            return None
        return cls(columns["q_loc"], columns["q_scale"], columns.get("q_scale_tril"))


@torch.no_grad()
def gaussian_posteriors(vae: VAE, batch: Tensor) -> GaussianPosteriors | None:
    r""":math:`q(z \mid x)` of each image of ``batch`` when it is Gaussian over the whole latent vector (one latent
    layer, a guide with ``gaussian()`` parameters, no label summed out); else ``None``. A full-covariance factor
    with nothing below its diagonal is kept as diagonal."""
    if vae.enumerates or len(vae.latent_dims) != 1:
        return None
    gaussian = vae.guide_family.gaussian(vae.guide_params(batch))
    if gaussian is None:
        return None
    loc, scale_tril = gaussian
    scale = scale_tril.pow(2).sum(-1).sqrt()  # (L L^T)_uu is the squared norm of row u of L
    diagonal = not bool(scale_tril.tril(-1).any())
    return GaussianPosteriors(loc, scale, None if diagonal else scale_tril)


@torch.no_grad()
def factorised_gaussian_prior(prior: Prior) -> tuple[Tensor, Tensor] | None:
    r"""``(m, s)`` when :math:`p(z) = \prod_u \mathcal N(z_u; m_u, s_u^2)` (read off the prior's distribution: an
    ``Independent`` ``Normal``), each ``(d,)``; ``None`` for a prior that does not factorise so."""
    p = prior()
    if not (isinstance(p, Independent) and isinstance(p.base_dist, Normal) and p.batch_shape == ()):
        return None
    return p.base_dist.loc.expand(p.event_shape), p.base_dist.scale.expand(p.event_shape)


def kl_per_dim(posteriors: GaussianPosteriors, prior_loc: Tensor, prior_scale: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}\big(\mathcal N(\mu_{nu}, \sigma_{nu}^2) \,\|\, \mathcal N(m_u, s_u^2)\big)` for each image
    :math:`n` and coordinate :math:`u`, ``(n, d)``: torch's closed form, from each coordinate's marginal."""
    return kl_divergence(Normal(posteriors.loc, posteriors.scale), Normal(prior_loc, prior_scale))


@dataclass
class MutualInformation:
    r""":math:`\hat I` by image: ``terms[i]`` is :math:`\log q(z_i \mid x_i) - \log q(z_i)` (averaged over the
    draws) for the image ``rows[i]`` of those given; their mean is :math:`\hat I`."""

    terms: Tensor  # (m,) float64
    rows: Tensor  # (m,) int64, ascending

    @property
    def value(self) -> float:
        return self.terms.mean().item()


def mutual_information(
    posteriors: GaussianPosteriors,
    *,
    seed: int,
    draws: int = 1,
    max_images: int | None = None,
    work: float = MI_WORK,
) -> MutualInformation:
    r""":math:`\hat I(x; z)` over the images of ``posteriors`` (see the module), on the CPU in float64, the draws from
    a generator of its own seeded with ``seed`` (the global RNG is untouched). At most ``max_images`` images, and
    at most as many as keep the pairwise densities within ``work`` multiply-adds: a random subset beyond that."""
    n, d = posteriors.loc.shape
    m = min(n, max_images or n, images_within(work, _width(d, posteriors.scale_tril is not None) * draws))
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(n) if m == n else torch.randperm(n, generator=generator)[:m].sort().values
    q = posteriors.rows(rows.to(posteriors.loc.device)).to(torch.float64)  # (on the CPU)
    q.loc = q.loc - q.loc.mean(0)  # (a common shift changes no density, and keeps the expanded squares small)
    eps = torch.randn(draws, m, d, generator=generator, dtype=torch.float64)
    z = q.loc + (q.scale * eps if q.scale_tril is None else (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1))
    own = (-0.5 * eps.pow(2) - _HALF_LOG_2PI).sum(-1) - _log_det(q)  # log q(z_i | x_i), exactly, (draws, m)
    aggregate = torch.cat([_log_aggregate(q, z[k], own[k]) for k in range(draws)]).view(draws, m)
    return MutualInformation((own - aggregate).mean(0), rows)


def mutual_information_seed(seed: int) -> int:
    """The seed of :func:`mutual_information`'s draws for an evaluation (or a training record) seeded ``seed``: a
    stream apart from the evaluation's per-batch seeds (``seed * 1_000_003 + batch``)."""
    return seed * 1_000_003 + 600_000  # (apart from BDMC's groups, + 900_000, too)


def images_within(work: float, width: int) -> int:
    """How many images' pairwise densities, at ``width`` multiply-adds a pair, fit in ``work``."""
    return max(1, math.isqrt(int(work // width)))


def _width(d: int, full: bool) -> int:
    """Multiply-adds per pair of :func:`_log_aggregate`'s product: the quadratic terms, the linear terms, 1."""
    return (d * (d + 1) // 2 if full else d) + d + 1


def _log_det(q: GaussianPosteriors) -> Tensor:
    r""":math:`\log |L_n|` of each image, ``(n,)``."""
    scales = q.scale if q.scale_tril is None else torch.diagonal(q.scale_tril, dim1=-2, dim2=-1)
    return scales.log().sum(-1)


def _log_aggregate(q: GaussianPosteriors, z: Tensor, own: Tensor) -> Tensor:
    r""":math:`\log q(z_i) = \log \frac1m \sum_j q(z_i \mid x_j)` for each row ``z_i`` of ``z`` (``(m, d)``, drawn
    from image ``i``'s posterior, whose exact density there is ``own[i]``), in chunks of rows.

    With the precision :math:`P_j = (L_j L_j^\top)^{-1}`, :math:`(z - \mu_j)^\top P_j (z - \mu_j)` is one product of
    :math:`[\mathrm{quad}(z), z, 1]` with :math:`[P_j, -2 P_j \mu_j, \mu_j^\top P_j \mu_j]`, over the distinct
    entries of :math:`P_j` (only its diagonal for a diagonal guide)."""
    m, d = q.loc.shape
    precision, coefficients = _precision(q)
    linear = _times(precision, q.loc)  # P_j mu_j
    weights = torch.cat([coefficients, -2 * linear, (q.loc * linear).sum(-1, True)], -1)
    constant = -_log_det(q) - d * _HALF_LOG_2PI
    chunk = max(1, _ELEMENTS_PER_CHUNK // m)
    out = []
    for start in range(0, m, chunk):
        zc = z[start : start + chunk]
        features = torch.cat([_quadratic_features(zc, q.scale_tril is not None), zc, zc.new_ones(len(zc), 1)], -1)
        log_q = -0.5 * (features @ weights.T) + constant  # (chunk, m): log q(z_i | x_j)
        rows = torch.arange(len(zc))
        log_q[rows, rows + start] = own[start : start + chunk]  # (each row's own term exactly, not by difference)
        out.append(torch.logsumexp(log_q, -1) - math.log(m))
    return torch.cat(out)


def _precision(q: GaussianPosteriors) -> tuple[Tensor, Tensor]:
    """Each image's precision (``(m, d)`` diagonal, or ``(m, d, d)``) and its distinct entries as the weights of
    :func:`_quadratic_features` (off-diagonal ones doubled: each stands for two)."""
    if q.scale_tril is None:
        precision = q.scale.pow(-2)
        return precision, precision
    eye = torch.eye(q.loc.shape[-1], dtype=q.loc.dtype).expand_as(q.scale_tril)
    inverse = torch.linalg.solve_triangular(q.scale_tril, eye, upper=False)  # L^-1
    precision = inverse.transpose(-1, -2) @ inverse
    rows, cols = torch.triu_indices(*precision.shape[-2:])
    return precision, precision[:, rows, cols] * torch.where(rows == cols, 1.0, 2.0).to(precision.dtype)


def _quadratic_features(z: Tensor, full: bool) -> Tensor:
    r""":math:`z_u^2` (diagonal), or :math:`z_u z_v` for :math:`u \le v` (full), per row."""
    if not full:
        return z.pow(2)
    rows, cols = torch.triu_indices(z.shape[-1], z.shape[-1])
    return z[:, rows] * z[:, cols]


def _times(precision: Tensor, v: Tensor) -> Tensor:
    """``P v`` per image, for a diagonal (``(m, d)``) or a full (``(m, d, d)``) precision."""
    return precision * v if precision.dim() == 2 else (precision @ v.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def collapse_diagnostics(vae: VAE, batch: Tensor, *, seed: int) -> dict:
    r"""What training records of posterior collapse each epoch, on the images of ``batch`` (two at least, else
    nothing): ``active_units`` (and ``active_units_per_layer`` for several layers), and where defined
    ``kl_per_dim`` (the mean over the images) and ``mutual_information``, as plain numbers: for a Gaussian guide,
    the numbers :func:`~pyro_vae.inference.bounds.evaluate` gives for the same images and ``seed`` (:math:`I`'s
    draws come from :func:`mutual_information_seed`). Monte Carlo moments (IAF, several layers) draw from ``seed``
    under a forked RNG, so the caller's random state is untouched; the model is evaluated in eval mode."""
    if batch.shape[0] < 2:
        return {}
    was_training = vae.training
    vae.eval()
    try:
        with torch.random.fork_rng(devices=[batch.device] if batch.device.type == "cuda" else []):
            torch.manual_seed(seed)
            means = posterior_moments(vae, batch)[0]
        posteriors = gaussian_posteriors(vae, batch)
        prior = factorised_gaussian_prior(vae.prior) if posteriors is not None else None
    finally:
        vae.train(was_training)
    out: dict = {"active_units": active_units(means)}
    if len(vae.latent_dims) > 1:
        out["active_units_per_layer"] = active_units_per_layer(means, vae.latent_dims)
    if prior is not None:
        out["kl_per_dim"] = kl_per_dim(posteriors, *prior).double().mean(0).tolist()
    if posteriors is not None:
        out["mutual_information"] = mutual_information(posteriors, seed=mutual_information_seed(seed)).value
    return out
