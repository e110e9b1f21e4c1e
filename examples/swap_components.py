import sys

import pyro.distributions as dist
import torch

from pyro_vae import VAE, DataConfig, Likelihood, NetConfig, Prior, RunConfig, Trainer, VAEData, evaluate


class LaplacePrior(Prior):  # a sparse code; no closed-form KL, so the cross-check uses a Monte Carlo KL
    def forward(self):
        return dist.Laplace(torch.zeros(self.latent_dim), 1.0).to_event(1)


class StudentTLikelihood(Likelihood):  # heavy-tailed grey-level pixels
    def forward(self, params):
        return dist.StudentT(3.0, torch.sigmoid(params[..., 0, :]), 0.1).to_event(1)


torch.manual_seed(0)  # the initial weights
data = VAEData(DataConfig("mnist", binarize="none", train_limit=5000), sys.argv[1] if sys.argv[1:] else None)
vae = VAE(NetConfig(), LaplacePrior(16), StudentTLikelihood(), image_shape=data.image_shape)
Trainer(vae, data, RunConfig().updated({"schedule.epochs": 2}), "runs/swap").fit()
print(evaluate(vae, data.images["test"][:500], iw_samples=10).summary())
