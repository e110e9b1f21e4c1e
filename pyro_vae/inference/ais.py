r"""Annealed importance sampling (Neal 2001) for :math:`\log p(x)`, as Wu, Burda, Salakhutdinov & Grosse (2017)
evaluate decoder-based models: from the guide :math:`q(z \mid x)` to the posterior along geometric bridges,

.. math::
    f_t(z) = q(z \mid x)^{1 - \beta_t}\, p(x, z)^{\beta_t}, \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

starting from :math:`z_0 \sim q(z \mid x)` and moving each chain by a Hamiltonian Monte Carlo transition that leaves
:math:`f_t` invariant. The log weight of a chain,

.. math:: \log w = \sum_{t=1}^{T} (\beta_t - \beta_{t-1}) \big[\log p(x, z_{t-1}) - \log q(z_{t-1} \mid x)\big],

has :math:`\mathbb E[w] = p(x)`, so :math:`\log \frac1C \sum_c w_c` over ``C`` chains is a stochastic lower bound
on :math:`\log p(x)` (Jensen), which tightens as the steps grow; with one step it is IWAE-C.

Each transition is ``leapfrog`` leapfrog steps with an identity mass matrix and a Metropolis correction, every chain
of every image at once. Each image has its own step size, adapted after every transition (×1.02 when its chains'
acceptance was above ``target_acceptance``, else ×0.98), as Wu et al.'s code does. The densities are the structure's
(:meth:`~pyro_vae.model.vae.VAE.log_densities`); the schedule of :math:`\beta` is sigmoidal (:func:`sigmoid_schedule`),
which spends more steps near both ends.

The adaptation reads the acceptance of the same chains that carry the weights, so, strictly, the transitions
depend on the chains' past and :math:`\mathbb E[w] = p(x)` holds only up to that dependence (as in Wu et al.'s
code); it fades as the chains grow in number. Trajectories that leave the finite numbers are rejected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.vae import VAE

Densities = Callable[[Tensor], tuple[Tensor, Tensor]]  # z -> (log p(x, z), log q(z | x)): VAE.log_densities
DEFAULT_CHAINS = 4
DEFAULT_LEAPFROG = 5
DEFAULT_STEP_SIZE = 0.05  # the most an image's first step may be (else its guide's narrowest scale)
SCALE_DRAWS = 16  # draws for the guide's scales where they have no closed form
TARGET_ACCEPTANCE = 0.65


def sigmoid_schedule(steps: int, radius: float = 4.0) -> Tensor:
    r""":math:`\beta_0 = 0, \dots, \beta_T = 1` (``steps + 1`` values, float64): a sigmoid over
    :math:`[-\text{radius}, \text{radius}]`, rescaled to end exactly at 0 and 1."""
    if steps < 1:
        raise ValueError(f"AIS needs at least 1 step, got {steps}")
    s = torch.sigmoid(torch.linspace(-radius, radius, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass
class AISResult:
    """Per-image results (``n`` images, ``C`` chains)."""

    log_weights: Tensor  # (C, n)
    acceptance: Tensor  # (n,): mean Metropolis acceptance over the transitions and chains
    step_size: Tensor  # (n,): the last adapted step size

    @property
    def log_likelihood(self) -> Tensor:
        r""":math:`\log \frac1C \sum_c w_c` per image, ``(n,)``."""
        return torch.logsumexp(self.log_weights, 0) - math.log(self.log_weights.shape[0])


@dataclass
class _Point:
    r"""Chains' states with :math:`\log p(x, z)`, :math:`\log q(z \mid x)` and their gradients in ``z``: enough for
    the energy :math:`U_\beta = -[(1-\beta) \log q + \beta \log p]` and its gradient at any :math:`\beta`."""

    z: Tensor
    log_joint: Tensor
    log_q: Tensor
    grad_joint: Tensor
    grad_q: Tensor

    def energy(self, beta: float) -> Tensor:
        return -((1 - beta) * self.log_q + beta * self.log_joint)

    def grad(self, beta: float) -> Tensor:
        return -((1 - beta) * self.grad_q + beta * self.grad_joint)

    def where(self, keep: Tensor, other: _Point) -> _Point:
        """Each chain's state from ``self`` where ``keep``, else from ``other``."""
        pick = lambda a, b: torch.where(keep[..., None] if a.dim() > keep.dim() else keep, a, b)  # noqa: E731
        return _Point(
            *(pick(getattr(self, f), getattr(other, f)) for f in ("z", "log_joint", "log_q", "grad_joint", "grad_q"))
        )


def _point(densities: Densities, z: Tensor) -> _Point:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_joint, log_q = densities(z)
        (grad_joint,) = torch.autograd.grad(log_joint.sum(), z, retain_graph=True)
        (grad_q,) = torch.autograd.grad(log_q.sum(), z)
    return _Point(z.detach(), log_joint.detach(), log_q.detach(), grad_joint, grad_q)


def ais_log_likelihood(
    vae: VAE,
    batch: Tensor,
    steps: int = 1000,
    chains: int = DEFAULT_CHAINS,
    *,
    leapfrog: int = DEFAULT_LEAPFROG,
    step_size: float = DEFAULT_STEP_SIZE,
    target_acceptance: float = TARGET_ACCEPTANCE,
    start: Tensor | None = None,
) -> AISResult:
    r"""AIS from :math:`q(z \mid x)` to :math:`p(z \mid x)` in ``steps`` transitions, ``chains`` chains per image of
    ``batch`` (the structure's batch: images, and labels where it has them). ``start``: initial states
    ``(chains, n, latent_dim)`` drawn from :math:`q` (else drawn here, from the global torch RNG)."""
    densities = vae.log_densities(batch)  # (first: a structure AIS cannot move says so)
    with torch.no_grad():
        if start is None:
            start = vae.draw_latents(batch, chains)
    betas = sigmoid_schedule(steps)
    return anneal(densities, start, betas, first_step_sizes(vae, batch, step_size), leapfrog, target_acceptance)


def first_step_sizes(vae: VAE, batch: Tensor, most: float = DEFAULT_STEP_SIZE) -> Tensor:
    """Each image's first HMC step size, ``(n,)``: its guide's narrowest scale, at most ``most`` (a sharp q would
    reject every larger move)."""
    with torch.no_grad():
        return vae.moments(batch, SCALE_DRAWS)[1].min(-1).values.clamp(max=float(most))


def anneal(
    densities: Densities,
    start: Tensor,
    betas: Tensor,
    step_size: Tensor,
    leapfrog: int = DEFAULT_LEAPFROG,
    target_acceptance: float = TARGET_ACCEPTANCE,
) -> AISResult:
    r"""Move the chains ``start`` ``(C, n, d)``, drawn from :math:`f_{\beta_0}`, through the bridges of ``betas``
    (any sequence from 0 to 1 or from 1 to 0): the log weights
    :math:`\sum_t (\beta_t - \beta_{t-1}) [\log p(x, z_{t-1}) - \log q(z_{t-1} \mid x)]` estimate
    :math:`\log Z_{\beta_T} / Z_{\beta_0}`; ``step_size``: each image's first step size ``(n,)``."""
    betas = betas.tolist()
    point = _point(densities, start)
    eps = step_size.to(point.z.dtype)[:, None]
    log_w = torch.zeros(point.z.shape[:-1], dtype=torch.float64, device=point.z.device)
    accepted = torch.zeros(start.shape[1], dtype=torch.float64, device=point.z.device)
    for t in range(1, len(betas)):
        log_w += (betas[t] - betas[t - 1]) * (point.log_joint - point.log_q).double()
        point, accept = _hmc(densities, point, eps, betas[t], leapfrog)
        rate = accept.double().mean(0)  # (n,)
        accepted += rate
        eps = eps * torch.where(rate > target_acceptance, 1.02, 0.98).to(eps.dtype)[:, None]
    return AISResult(log_weights=log_w, acceptance=accepted / (len(betas) - 1), step_size=eps[:, 0])


def _hmc(densities: Densities, point: _Point, eps: Tensor, beta: float, leapfrog: int) -> tuple[_Point, Tensor]:
    r"""One HMC transition of every chain, leaving :math:`f_\beta` invariant: ``leapfrog`` leapfrog steps of size
    ``eps`` (per image), then the Metropolis test; returns the new states and which chains accepted."""
    momentum = torch.randn_like(point.z)
    p = momentum - 0.5 * eps * point.grad(beta)
    new, diverged = point, torch.zeros(point.z.shape[:-1], dtype=torch.bool, device=point.z.device)
    for i in range(leapfrog):
        z = new.z + eps * p
        lost = ~torch.isfinite(z).all(-1)  # a trajectory that blew up: rejected, never evaluated
        diverged = diverged | lost
        new = _point(densities, torch.where(lost[..., None], point.z, z))
        if i < leapfrog - 1:
            p = p - eps * new.grad(beta)
    p = p - 0.5 * eps * new.grad(beta)
    log_accept = point.energy(beta) + 0.5 * momentum.pow(2).sum(-1) - new.energy(beta) - 0.5 * p.pow(2).sum(-1)
    log_accept = torch.nan_to_num(log_accept, nan=-math.inf).masked_fill(diverged, -math.inf)
    accept = torch.log(torch.rand_like(log_accept)) < log_accept
    return new.where(accept, point), accept
