"""A user's own prior and likelihood: each is a small class following pyro-vae's protocol.

Each class says what configs call it (``name``); its constructor's parameters (besides ``latent_dim``) are its
options. Importing this module registers both: ``ComponentConfig("laplace")`` then names the prior."""

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae import Likelihood, Prior


class LaplacePrior(Prior):
    """Sparse latent code: independent Laplace(0, 1) coordinates (KL has no closed form: checked by Monte Carlo)."""

    name = "laplace"

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self):
        return dist.Laplace(self.loc, torch.ones_like(self.loc)).to_event(1)


class LaplaceLikelihood(Likelihood):
    """Grey-level pixels as Laplace(sigmoid(decoder), b) with one learned scale b."""

    name = "laplace-one-scale"

    def __init__(self, init_scale: float = 0.1):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(init_scale).log())

    def forward(self, params):
        return dist.Laplace(torch.sigmoid(params[..., 0, :]), self.log_scale.exp()).to_event(1)
