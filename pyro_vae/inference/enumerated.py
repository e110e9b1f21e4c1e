r"""Bounds of a structure whose label is summed out (M2, :mod:`pyro_vae.model.semi_supervised`), read off Pyro traces
with the label enumerated, and the hand-written cross-check.

With ``y`` enumerated in parallel in the guide and ``P`` particles of ``z`` for each value of ``y``, the traces give
for every class ``y``, particle ``p`` and image ``i`` the log weight
:math:`\log w_{y p i} = \log p(x_i, y, z_{y p i}) - \log q(z_{y p i} \mid x_i, y)` and :math:`\log q(y \mid x_i)`.
From them:

.. math::
    \mathcal U(x) = \sum_y q(y \mid x)\, \frac1P \sum_p \log w_{yp} + \mathcal H(q(y \mid x)), \qquad
    \mathrm{IWAE}_P = \log \frac1P \sum_p \sum_y w_{yp},

the first ``TraceEnum_ELBO``'s per-image objective (what M2 trains), the second an importance-weighted bound with
``y`` summed exactly (:math:`\sum_y \frac1P \sum_p w_{yp}` is an unbiased estimate of :math:`p(x)`). By Jensen's
inequality over :math:`q(y \mid x)`, :math:`\mathrm{IWAE}_1 \ge \mathcal U` on the same draws (not equal, as
for the plain VAE).

The cross-check, :func:`analytic_enumerated_elbo`, forms :math:`\mathcal U` with no Pyro: the classifier's
probabilities, the hand-written sample :math:`z = \mu_y + \sigma_y \epsilon` from the same noise (drawn in the shape
the enumerated guide draws it, ``(K, P, n, d)``), the likelihood, and the closed-form KL per class.
"""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor

from ..model.vae import VAE
from .analytic import AnalyticELBO

ENUM_DIM = -3  # the particles plate is dim -2 and the data plate dim -1: the label's values go left of both


def enumerated_log_weights(vae: VAE, batch: Tensor, num_particles: int = 1) -> tuple[Tensor, Tensor]:
    r""":math:`\log w` of shape ``(K, P, n)`` and :math:`\log q(y \mid x)` of shape ``(K, n)`` for the batch's images
    with their labels hidden (the bounds are on log p(x)), from a guide trace with ``y`` enumerated and the model
    replayed on it."""
    batch = vae.bound_batch(vae.split(batch)[0])
    with pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(poutine.enum(vae.guide, first_available_dim=ENUM_DIM)).get_trace(batch)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(batch)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    log_q_y = guide_trace.nodes["y_unlabelled"]["log_prob"]  # (K, 1 or P, n)
    total = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            total = total + site["log_prob"]
    total = total - guide_trace.nodes["z_unlabelled"]["log_prob"]
    k, n = log_q_y.shape[0], batch.shape[0]
    return total.expand(k, num_particles, n), log_q_y[:, 0, :]


def enumerated_elbo(vae: VAE, batch: Tensor, num_particles: int = 1) -> Tensor:
    r""":math:`\mathcal U(x)` per image, ``(n,)``, from Pyro's traces."""
    log_w, log_q_y = enumerated_log_weights(vae, batch, num_particles)
    q_y = log_q_y.exp()
    return (q_y * (log_w.mean(1) - log_q_y)).sum(0)


def enumerated_iwae_log_weights(vae: VAE, batch: Tensor, num_particles: int = 1) -> Tensor:
    r""":math:`\log \sum_y w_{yp}` of shape ``(P, n)``: log-sum-exp over ``P`` of it, minus :math:`\log P`, is
    :math:`\mathrm{IWAE}_P`."""
    return torch.logsumexp(enumerated_log_weights(vae, batch, num_particles)[0], dim=0)


def analytic_enumerated_elbo(
    vae: VAE, batch: Tensor, num_particles: int = 1, eps: Tensor | None = None
) -> AnalyticELBO:
    r""":math:`\mathcal U(x)` written by hand: :math:`\sum_y q(y \mid x)\,[\mathbb E \log p(x \mid y, z) + \log p(y)
    - \mathrm{KL}(q(z \mid x, y) \,\|\, p(z))] + \mathcal H(q(y \mid x))`, with the closed-form KL where the prior
    and guide have one (else a Monte Carlo KL on the same draws). ``recon`` is the first term; ``kl`` the KL of
    :math:`q(y, z \mid x)` to :math:`p(y, z)`."""
    x, _ = vae.split(batch)  # (any labels are hidden: the bound is on log p(x))
    k, n = len(vae.class_names), x.shape[0]
    log_q_y = torch.log_softmax(vae.classifier(x), -1).T  # (K, n)
    labels = torch.arange(k, device=x.device)
    params = vae.encoder(x, vae.one_hot(labels, x.dtype)[:, None, :])  # (K, n, .): x broadcast against each class
    if eps is None:
        eps = torch.randn(k, num_particles, n, vae.latent_dim, dtype=x.dtype, device=x.device)
    z, log_q = vae.guide_family.rsample_with_log_q(params[:, None], eps)  # (K, P, n, d), (K, P, n)
    recon_y = vae.likelihood.log_prob(vae.decode(z, labels[:, None, None]), x).mean(1)  # (K, n)
    gaussian = vae.guide_family.gaussian(params)
    kl_y = vae.prior.kl(*gaussian) if gaussian is not None else None
    kl_method = "analytic"
    if kl_y is None:
        kl_y, kl_method = (log_q - vae.prior.log_density(z)).mean(1), "monte-carlo"
    q_y = log_q_y.exp()
    recon = (q_y * recon_y).sum(0)
    kl = (q_y * (kl_y + log_q_y + math.log(k))).sum(0)  # KL(q(y|x) q(z|x,y) || p(y) p(z)), p(y) = 1/K
    return AnalyticELBO(elbo=recon - kl, recon=recon, kl=kl, kl_method=kl_method)


def classifier_predictions(vae: VAE, x: Tensor, batch_size: int = 500) -> Tensor:
    """The classifier's most probable class for each image, ``(n,)``."""
    with torch.no_grad():
        return torch.cat([vae.classifier(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])
