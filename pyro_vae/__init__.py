"""pyro-vae: variational autoencoders as Pyro model/guide pairs, trained with SVI.

Where things are: priors in :mod:`pyro_vae.priors`, likelihoods in :mod:`pyro_vae.likelihoods`,
guide families q(z|x) in :mod:`pyro_vae.guides`,
encoder/decoder networks in :mod:`pyro_vae.networks`, the model/guide in :mod:`pyro_vae.vae`,
the hand-written analytic-KL ELBO in :mod:`pyro_vae.analytic`, bounds and evaluation in :mod:`pyro_vae.bounds`,
posterior means and active units in :mod:`pyro_vae.latents`, pictures in :mod:`pyro_vae.plots`,
the SVI loop in :mod:`pyro_vae.train`, checkpoints in :mod:`pyro_vae.checkpoint` (rebuilt, trusting only
the modules you name, by :mod:`pyro_vae.rebuild`), size checks before allocation in :mod:`pyro_vae.limits`,
the run folder's lock in :mod:`pyro_vae.run_lock`, clean stops on SIGINT/SIGTERM in :mod:`pyro_vae.stopping`.
"""

__version__ = "0.2.0"

from .inference.analytic import analytic_elbo, analytic_loss  # noqa: E402
from .data.mnist import DataConfig, VAEData  # noqa: E402
from .inference.fast_svi import FastSVI, make_adam  # noqa: E402
from .inference.bounds import Evaluation, evaluate, iwae_bound, log_weights  # noqa: E402
from .inference.latents import active_units, posterior_moments  # noqa: E402
from .model.guides import DiagonalGaussianGuide, FullCovGaussianGuide, Guide, IAFGuide  # noqa: E402
from .model.likelihoods import (  # noqa: E402
    Bernoulli, Beta, ContinuousBernoulli, DiscretizedLogistic, Gaussian, Laplace, Likelihood,
)  # fmt: skip
from .model.networks import NetConfig  # noqa: E402
from .pipeline import (  # noqa: E402
    encode_checkpoint, evaluate_checkpoint, load_model, plot_checkpoint, resume_run, sample_checkpoint, start_run,
    write_samples,
)  # fmt: skip
from .model.priors import FlowPrior, LearnedGaussian, MixtureOfGaussians, Prior, StandardNormal, VampPrior  # noqa: E402
from .training.trainer import TrainConfig, Trainer  # noqa: E402
from .model.vae import VAE  # noqa: E402

__all__ = [
    "VAE", "NetConfig", "DataConfig", "VAEData", "TrainConfig", "Trainer", "FastSVI", "make_adam",
    "Prior", "StandardNormal", "LearnedGaussian", "MixtureOfGaussians", "VampPrior", "FlowPrior",
    "Likelihood", "Bernoulli", "ContinuousBernoulli", "Beta", "Gaussian", "Laplace", "DiscretizedLogistic",
    "Guide", "DiagonalGaussianGuide", "FullCovGaussianGuide", "IAFGuide",
    "analytic_elbo", "analytic_loss", "evaluate", "Evaluation", "iwae_bound", "log_weights",
    "posterior_moments", "active_units",
    "start_run", "resume_run", "load_model", "evaluate_checkpoint", "plot_checkpoint", "sample_checkpoint",
    "encode_checkpoint", "write_samples",
]  # fmt: skip
