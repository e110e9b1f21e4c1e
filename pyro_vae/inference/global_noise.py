r"""The guide's random draws of one process's share of a batch, taken from the draws of the whole batch.

In a job of several processes each one runs Pyro's ``Trace_ELBO`` on its rows of the global batch
(:mod:`pyro_vae.runtime.distributed`). For the job to follow the same trajectory as one process at any world
size, the latent sample of image :math:`i` must not depend on which process holds it. Every reparameterised
guide here draws standard-normal noise and transforms it,

.. math:: z = \mu + L\,\epsilon, \qquad \epsilon \sim \mathcal N(0, I) \qquad (\text{then any flow}),

so :class:`GlobalBatchNoise` draws :math:`\epsilon` for the *whole* batch, exactly as one process's
``rsample`` would (same call, same shape, same random stream: every rank's stream stays in step), keeps this
process's rows, and sets the site's value to the same transform of them. The model then replays that value as
usual; the value is a differentiable function of the guide's parameters, as ``rsample``'s is, so the loss and
its gradients are ``Trace_ELBO``'s. The extra cost is the noise of the other rows: batch x latent size normals.

It sits *outside* the ELBO call, below Pyro's own plates (the vectorised-particles plate included), so it sees
each latent site fully broadcast. Observed and replayed sites are left alone.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from torch import Tensor

from ..errors import ConfigError
from ..runtime.compat import scale_tril, standard_normal


def reparameterize(fn: dist.Distribution, eps: Tensor) -> Tensor:
    """``fn.rsample()`` computed from the standard-normal noise ``eps`` it would have drawn (shape ``fn.shape()``)."""
    if isinstance(fn, dist.Independent):
        return reparameterize(fn.base_dist, eps)
    if isinstance(fn, dist.TransformedDistribution):
        z = reparameterize(fn.base_dist, eps)
        for transform in fn.transforms:
            z = transform(z)
        return z
    if isinstance(fn, dist.Normal):
        return fn.loc + eps * fn.scale
    if isinstance(fn, dist.MultivariateNormal):
        return fn.loc + torch.matmul(scale_tril(fn), eps.unsqueeze(-1)).squeeze(-1)
    raise ConfigError(
        f"training in several processes draws the guide's noise for the whole batch, which needs a "
        f"Normal or MultivariateNormal guide (or a flow on one), not {type(fn).__name__}"
    )


class GlobalBatchNoise(Messenger):
    """Latent draws of rows ``rows`` of a batch of ``total`` images, the images being plate ``plate``."""

    def __init__(self, rows: slice, total: int, plate: str = "data") -> None:
        super().__init__()
        self.rows, self.total, self.plate = rows, total, plate

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or msg["value"] is not None:
            return
        fn = msg["fn"]
        frames = [f for f in msg["cond_indep_stack"] if f.name == self.plate]
        if not frames:
            return
        shape = list(fn.shape())
        dim = len(shape) + frames[0].dim - len(fn.event_shape)  # the images' axis in the sample
        if shape[dim] != self.rows.stop - self.rows.start:
            raise ValueError(f"site {msg['name']} has {shape[dim]} images, its rows {self.rows} of {self.total}")
        shape[dim] = self.total
        loc = _innermost(fn).loc
        eps = standard_normal(shape, dtype=loc.dtype, device=loc.device)  # as Normal.rsample draws
        msg["value"] = reparameterize(fn, eps.narrow(dim, self.rows.start, self.rows.stop - self.rows.start))


def _innermost(fn: dist.Distribution) -> dist.Distribution:
    while isinstance(fn, (dist.Independent, dist.TransformedDistribution)):
        fn = fn.base_dist
    return fn
