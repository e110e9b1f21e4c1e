r"""The VAE as a Pyro model/guide pair.

.. math::
    p_\theta(x, z) = p(z)\, p_\theta(x \mid z), \qquad
    q_\phi(z \mid x) = \text{guide family}\big(\mathrm{encoder}_\phi(x)\big)

``model`` and ``guide`` are ordinary Pyro functions; the networks (and any trainable prior,
likelihood or guide-family parameters) are registered with ``pyro.module`` so ``SVI`` optimises them.

Both take ``kl_scale`` (:math:`\beta`): the latent site is wrapped in ``poutine.scale`` in the model
*and* the guide, so :math:`\log p(z)` and :math:`\log q(z \mid x)` are both weighted and the objective
is :math:`\mathbb E_q[\log p(x \mid z)] - \beta\,\mathrm{KL}`, also when ``TraceMeanField_ELBO``
computes the KL in closed form (it takes the scale from the guide's site).
"""

from __future__ import annotations

from contextlib import nullcontext

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
from pyro.params import param_with_module_name
from torch import Tensor, nn

from ..errors import ConfigError
from .guides import DiagonalGaussianGuide, Guide
from .likelihoods import Likelihood
from .networks import NetConfig, make_decoder, make_encoder
from .priors import Prior


def _kl_weight(kl_scale: float | Tensor):
    """``poutine.scale`` on the latent site; no handler at all for the usual weight of 1 (a tensor
    weight, as a traced step passes it, always gets the handler: its value is not known when tracing)."""
    return nullcontext() if isinstance(kl_scale, float) and kl_scale == 1.0 else poutine.scale(scale=kl_scale)


class VAE(nn.Module):
    """A VAE built from a network config, a :class:`Prior`, a :class:`Likelihood` and a :class:`Guide`
    family (default: diagonal Gaussian), for images of ``image_shape`` ``(C, H, W)``. The latent size is the prior's.

    :meth:`pyro_vae.model.config.ModelConfig.build` builds one from a config, passing the latent size to
    every component; a VAE put together by hand is checked to have one latent size throughout."""

    def __init__(
        self,
        net: NetConfig,
        prior: Prior,
        likelihood: Likelihood,
        guide: Guide | None = None,
        *,
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        net.validate()
        self.latent_dim = prior.latent_dim
        self.image_shape = tuple(image_shape)  # (C, H, W): x is flattened in this order
        guide = guide if guide is not None else DiagonalGaussianGuide(self.latent_dim)
        if guide.latent_dim != self.latent_dim:
            raise ConfigError(f"the guide has latent_dim={guide.latent_dim} but the prior {self.latent_dim}")
        self.net_config = net
        self.encoder = make_encoder(net, guide.num_params, self.image_shape)
        self.decoder = make_decoder(net, self.latent_dim, likelihood.num_params, self.image_shape)
        self.prior = prior
        self.likelihood = likelihood
        self.guide_family = guide
        prior.attach(self.posterior)
        self._pyro_modules = {
            "encoder": self.encoder,
            "decoder": self.decoder,
            "prior": prior,
            "likelihood": likelihood,
            "guide": guide,
        }
        self._pyro_params = {
            name: [(param_with_module_name(name, n), p) for n, p in module.named_parameters() if p.requires_grad]
            for name, module in self._pyro_modules.items()
        }

    def model(self, x: Tensor, kl_scale: float | Tensor = 1.0) -> None:
        """``z ~ p(z)``, ``x ~ p(x | z)`` for a batch of flattened images ``x``."""
        self._register("decoder", "prior", "likelihood")
        with pyro.plate("data", x.shape[0]):
            with _kl_weight(kl_scale):
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: Tensor, kl_scale: float | Tensor = 1.0) -> None:
        """``z ~ q(z | x)`` from the encoder and the guide family."""
        self._register("encoder", "guide")
        with pyro.plate("data", x.shape[0]), _kl_weight(kl_scale):
            pyro.sample("z", self.posterior(x))

    def _register(self, *names: str) -> None:
        """What ``pyro.module(name, part)`` does, for each named part: ``pyro.param`` on each trainable
        parameter under its module-qualified name. The (name, parameter) pairs are listed once, at
        construction, instead of walking the module tree at every step."""
        for name in names:
            for full_name, param in self._pyro_params[name]:
                pyro.param(full_name, param)

    def posterior(self, x: Tensor) -> dist.TorchDistribution:
        """:math:`q(z \\mid x)` for a batch of images."""
        return self.guide_family(self.encoder(x))

    def pyro_named_parameters(self) -> dict[str, nn.Parameter]:
        """Each trainable parameter under its param-store name (``"decoder$$$net.0.weight"``)."""
        return {full_name: p for pairs in self._pyro_params.values() for full_name, p in pairs}
