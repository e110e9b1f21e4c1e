r"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015; Wu et al. 2017): the measured error of AIS, on data
simulated from the model.

Draw :math:`(z^\star, x) \sim p(z)\, p(x \mid z)`. Then :math:`z^\star` is an exact sample of the posterior
:math:`p(z \mid x)`, which is what reverse AIS needs: started at :math:`z^\star` and annealed from
:math:`p(z \mid x)` back to :math:`q(z \mid x)` along the same bridges in the opposite order
(:func:`~pyro_vae.inference.ais.anneal`), its weights have :math:`\mathbb E[w_{\text{rev}}] = 1 / p(x)`, so

.. math::
    \underbrace{\log \tfrac1C \textstyle\sum_c w_c}_{\text{forward AIS}}
    \;\lesssim\; \log p(x) \;\lesssim\;
    \underbrace{-\log \tfrac1C \textstyle\sum_c w_{\text{rev}, c}}_{\text{reverse AIS}}

(each in expectation, by Jensen). The sandwich's width bounds the forward estimate's error on such data: when it is
small, AIS with this many steps is accurate *for this model*, and so, in Wu et al.'s argument, on real data from a
distribution near the model's. All ``C`` reverse chains start at the one exact sample each image has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.vae import VAE
from .ais import (
    DEFAULT_CHAINS,
    DEFAULT_LEAPFROG,
    DEFAULT_STEP_SIZE,
    AISResult,
    anneal,
    first_step_sizes,
    sigmoid_schedule,
)
from .summaries import mean_stderr


@dataclass
class BDMCResult:
    """Per-image forward and reverse AIS on simulated images."""

    forward: AISResult
    reverse: AISResult  # its log weights estimate log 1/p(x)

    @property
    def lower(self) -> Tensor:
        r"""Forward AIS, :math:`\log \frac1C \sum_c w_c`, ``(n,)``: a stochastic lower bound."""
        return self.forward.log_likelihood

    @property
    def upper(self) -> Tensor:
        r"""Reverse AIS, :math:`-\log \frac1C \sum_c w_{\text{rev},c}`, ``(n,)``: a stochastic upper bound."""
        return -self.reverse.log_likelihood

    @property
    def width(self) -> Tensor:
        """The sandwich's width per image, upper - lower (at most the forward estimate's error, in expectation)."""
        return self.upper - self.lower


def simulate(vae: VAE, n: int, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""``n`` draws :math:`(z^\star, x) \sim p(z) p(x \mid z)` from the global torch RNG: the structure's batch (the
    images, with ``labels`` where the structure has them) and the latent vectors ``(n, latent_dim)``. The images are
    draws of the likelihood, not its means (a Bernoulli likelihood gives binary images)."""
    with torch.no_grad():
        z = vae.generate(n)
        x = vae.likelihood(vae.decode(z, labels)).sample()
    return vae.observations(x, labels), z


def bidirectional_ais(
    vae: VAE,
    batch: Tensor,
    exact: Tensor,
    steps: int = 1000,
    chains: int = DEFAULT_CHAINS,
    *,
    leapfrog: int = DEFAULT_LEAPFROG,
    step_size: float = DEFAULT_STEP_SIZE,
) -> BDMCResult:
    r"""Forward AIS from :math:`q(z \mid x)` and reverse AIS from ``exact`` (``(n, latent_dim)``, one exact
    posterior sample per image: :func:`simulate`'s latents) over the same ``steps`` bridges, ``chains`` chains
    each way."""
    densities = vae.log_densities(batch)
    betas = sigmoid_schedule(steps)
    eps = first_step_sizes(vae, batch, step_size)
    with torch.no_grad():
        start = vae.draw_latents(batch, chains)
    forward = anneal(densities, start, betas, eps, leapfrog)
    reverse = anneal(densities, exact.expand(chains, *exact.shape), betas.flip(0), eps, leapfrog)
    return BDMCResult(forward=forward, reverse=reverse)


def sandwich_summary(result: BDMCResult) -> dict:
    """Means and standard errors over images of the lower and upper estimates and the width, and the widest image."""
    out = {"n": result.width.numel()}
    for name in ("lower", "upper", "width"):
        out[name], out[name + "_stderr"] = mean_stderr(getattr(result, name))
    out["width_max"] = result.width.max().item()
    out["forward_acceptance"] = result.forward.acceptance.mean().item()
    out["reverse_acceptance"] = result.reverse.acceptance.mean().item()
    return out
