"""pyro-vae: variational autoencoders as Pyro model/guide pairs, trained with SVI.

Where things are (the folders follow the architecture):

* ``model/``: the generative model and the guide: :mod:`~pyro_vae.model.priors`,
  :mod:`~pyro_vae.model.likelihoods`, guide families q(z|x) in :mod:`~pyro_vae.model.guides`, encoder/decoder
  :mod:`~pyro_vae.model.networks`, the model/guide pair :mod:`~pyro_vae.model.vae`, the component registry
  (:mod:`~pyro_vae.model.components`), the model's config and the trusted rebuild of components
  (:mod:`~pyro_vae.model.config`, :mod:`~pyro_vae.model.rebuild`);
* ``data/``: the images: sources (torchvision sets, folders, arrays), sizes, splits and binarization;
* ``inference/``: the SVI objectives, the fast SVI step, the bounds, the hand-written analytic-KL ELBO and
  posterior summaries;
* ``training/``: optimiser and schedule settings, the :class:`Trainer` and its callbacks (validation,
  checkpoints, best.pt, metrics, pictures, TensorBoard, MLflow), checkpoints, the run folder's lock, clean stops
  on SIGINT/SIGTERM;
* ``runtime/``: devices, size checks before allocation, atomic writes, the CPU thread budget, jobs of several
  processes under torchrun (:mod:`~pyro_vae.runtime.distributed`);
* :mod:`pyro_vae.config`: :class:`RunConfig`, one description of a run (command line, ``config.toml``,
  checkpoints); :mod:`pyro_vae.options`: how each setting is declared once;
* :mod:`pyro_vae.pipeline`: what the commands run; :mod:`pyro_vae.plots`: pictures; :mod:`pyro_vae.sharing`:
  exported safetensors folders and the Hugging Face Hub;
  ``pyro_vae.cli``: the ``pyro-vae`` command line (``python -m pyro_vae``).
"""

__version__ = "0.2.0"

from .config import RunConfig  # noqa: E402
from .data.vae_data import DataConfig, VAEData  # noqa: E402
from .inference.analytic import analytic_elbo, analytic_loss  # noqa: E402
from .inference.bounds import Evaluation, evaluate, iwae_bound, log_weights  # noqa: E402
from .inference.fast_svi import FastSVI, make_adam  # noqa: E402
from .inference.latents import active_units, posterior_moments  # noqa: E402
from .inference.objectives import ObjectiveConfig  # noqa: E402
from .model.config import ComponentConfig, ModelConfig  # noqa: E402
from .model.guides import DiagonalGaussianGuide, FullCovGaussianGuide, Guide, IAFGuide  # noqa: E402
from .model.likelihoods import (  # noqa: E402
    Bernoulli, Beta, ContinuousBernoulli, DiscretizedLogistic, Gaussian, Laplace, Likelihood, LogisticMixture,
)  # fmt: skip
from .model.networks import NetConfig  # noqa: E402
from .model.priors import FlowPrior, LearnedGaussian, MixtureOfGaussians, Prior, StandardNormal, VampPrior  # noqa: E402
from .model.vae import VAE  # noqa: E402
from .options import Option  # noqa: E402
from .pipeline import (  # noqa: E402
    encode_checkpoint, evaluate_checkpoint, load_model, plot_checkpoint, resume_run, sample_checkpoint, write_samples,
)  # fmt: skip
from .sharing import export_checkpoint, load  # noqa: E402
from .training.callbacks import Callback, MLflowLogger, TensorBoard  # noqa: E402
from .training.schedule import OptimizerConfig, ScheduleConfig  # noqa: E402
from .training.trainer import Trainer  # noqa: E402

__all__ = [
    "RunConfig", "DataConfig", "ModelConfig", "NetConfig", "ComponentConfig", "ObjectiveConfig", "OptimizerConfig",
    "ScheduleConfig", "Option",
    "VAE", "VAEData", "Trainer", "Callback", "TensorBoard", "MLflowLogger", "FastSVI", "make_adam",
    "load", "export_checkpoint",
    "Prior", "StandardNormal", "LearnedGaussian", "MixtureOfGaussians", "VampPrior", "FlowPrior",
    "Likelihood", "Bernoulli", "ContinuousBernoulli", "Beta", "Gaussian", "Laplace", "DiscretizedLogistic", "LogisticMixture",
    "Guide", "DiagonalGaussianGuide", "FullCovGaussianGuide", "IAFGuide",
    "analytic_elbo", "analytic_loss", "evaluate", "Evaluation", "iwae_bound", "log_weights",
    "posterior_moments", "active_units",
    "resume_run", "load_model", "evaluate_checkpoint", "plot_checkpoint", "sample_checkpoint",
    "encode_checkpoint", "write_samples",
]  # fmt: skip
