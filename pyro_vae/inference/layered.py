r"""The hand-written ELBO of a model with several latent layers (:mod:`pyro_vae.model.hierarchical`), layer by layer:
the yardstick its Pyro program is checked against.

With the guide's draws :math:`z_{1:L}` made in plain torch from the same standard-normal noise Pyro's guide draws
(in the guide's order: ``z_1`` first bottom-up, ``z_L`` first top-down),

.. math::
    \mathrm{ELBO}(x) = \mathbb E_q[\log p(x \mid z_1)] - \sum_{l=1}^{L} \mathrm{KL}_l,

where each layer's term is the expectation of :math:`\log q(z_l \mid \cdot) - \log p(z_l \mid z_{l+1})`:

* **top-down (ladder)**: :math:`\mathrm{KL}_l = \mathrm{KL}\big(q(z_l \mid z_{l+1}, x) \,\|\, p(z_l \mid z_{l+1})\big)`
  in closed form at the sampled parent (the guide and the model condition on the same :math:`z_{l+1}`), and
  :math:`\mathrm{KL}_L = \mathrm{KL}(q(z_L \mid x) \,\|\, p(z_L))` by the prior's closed form;
* **bottom-up**: the top layer is drawn last, so :math:`\mathrm{KL}_L = \mathrm{KL}(q(z_L \mid z_{L-1}) \,\|\, p(z_L))`
  in closed form; a lower layer's :math:`q(z_l \mid z_{l-1})` and :math:`p(z_l \mid z_{l+1})` condition on different
  variables, one of which is drawn after :math:`z_l`, so there is no closed form and that term is Monte Carlo,
  :math:`\log q(z_l \mid z_{l-1}) - \log p(z_l \mid z_{l+1})` on the same draws (``kl_method``: "partly
  monte-carlo").

A prior without a closed-form KL makes the top term Monte Carlo too. Densities and KLs are written by hand
(:func:`~pyro_vae.model.priors.diagonal_gaussian_kl`, :func:`~pyro_vae.model.guides.standard_normal_log_density`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model.guides import standard_normal_log_density
from ..model.hierarchical import HierarchicalVAE
from ..model.priors import diagonal_gaussian_kl
from .analytic import AnalyticELBO


def diagonal_normal_log_density(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    r""":math:`\log \mathcal N(z; \mu, \mathrm{diag}\,\sigma^2)`, summed over the last dimension."""
    return standard_normal_log_density((z - loc) / scale) - torch.log(scale).sum(-1)


def analytic_layered_elbo(
    vae: HierarchicalVAE, batch: Tensor, num_particles: int = 1, eps: list[Tensor] | None = None, kl_scale: float = 1.0
) -> AnalyticELBO:
    """ELBO per image from ``num_particles`` joint draws, with each layer's term (``layer_kl``, ``(L, n)``)."""
    n = batch.shape[0]
    if eps is None:
        eps = [torch.randn(num_particles, n, d, dtype=batch.dtype, device=batch.device) for d in vae.draw_dims]
    layers = vae.sample_layers(batch, eps)
    recon = vae.likelihood.log_prob(vae.decode(layers[0].z), batch).mean(0)
    terms, methods = [], set()
    for layer in layers:
        closed = layer.p is None or vae.top_down
        if layer.p is None:  # the top layer against the prior
            kl = vae.prior.kl(layer.q_loc, torch.diag_embed(layer.q_scale))
            if kl is None:
                closed = False
                kl = diagonal_normal_log_density(layer.z, layer.q_loc, layer.q_scale) - vae.prior.log_density(layer.z)
        elif closed:
            kl = diagonal_gaussian_kl(layer.q_loc, layer.q_scale, *layer.p)
        else:
            kl = diagonal_normal_log_density(layer.z, layer.q_loc, layer.q_scale) - diagonal_normal_log_density(
                layer.z, *layer.p
            )
        methods.add("analytic" if closed else "monte-carlo")
        terms.append(kl.expand(eps[0].shape[:-1]).mean(0))  # (the top-down guide's top layer has no particles)
    layer_kl = torch.stack(terms)
    kl = layer_kl.sum(0)
    kl_method = methods.pop() if len(methods) == 1 else "partly monte-carlo"
    return AnalyticELBO(elbo=recon - kl_scale * kl, recon=recon, kl=kl, kl_method=kl_method, layer_kl=layer_kl)
