r"""The VAE as a Pyro model/guide pair.

.. math::
    p_\theta(x, z) = p(z)\, p_\theta(x \mid z), \qquad
    q_\phi(z \mid x) = \mathcal N\big(\mu_\phi(x), \mathrm{diag}\,\sigma^2_\phi(x)\big)

``model`` and ``guide`` are ordinary Pyro functions; the networks (and any trainable prior or
likelihood parameters) are registered with ``pyro.module`` so ``SVI`` optimises them.
"""

from __future__ import annotations

from dataclasses import asdict

import pyro
import pyro.distributions as dist
from torch import Tensor, nn

from .components import spec
from .errors import ConfigError
from .likelihoods import Likelihood
from .networks import NetConfig, make_decoder, make_encoder
from .priors import Prior


class VAE(nn.Module):
    """A VAE built from a network config, a :class:`Prior` and a :class:`Likelihood`."""

    def __init__(self, net: NetConfig, prior: Prior, likelihood: Likelihood) -> None:
        super().__init__()
        net.validate()
        if getattr(prior, "latent_dim", net.latent_dim) != net.latent_dim:
            raise ConfigError(f"prior has latent_dim={prior.latent_dim} but the networks use {net.latent_dim}")
        self.net_config = net
        self.encoder = make_encoder(net)
        self.decoder = make_decoder(net, likelihood.num_params)
        self.prior = prior
        self.likelihood = likelihood

    def model(self, x: Tensor) -> None:
        """``z ~ p(z)``, ``x ~ p(x | z)`` for a batch of flattened images ``x``."""
        pyro.module("decoder", self.decoder)
        pyro.module("prior", self.prior)
        pyro.module("likelihood", self.likelihood)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: Tensor) -> None:
        """``z ~ q(z | x)``, a diagonal Gaussian from the encoder."""
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    def posterior(self, x: Tensor) -> dist.TorchDistribution:
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    def config(self) -> dict:
        """Plain data that rebuilds this model's architecture (see :mod:`pyro_vae.checkpoint`)."""
        return {"net": asdict(self.net_config), "prior": spec(self.prior), "likelihood": spec(self.likelihood)}
