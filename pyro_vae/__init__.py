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

from importlib import import_module

from .version import __version__

# Each public name by the module that defines it, imported on first use (PEP 562): importing one part of the
# package (pyro_vae.model.priors) does not load the trainer, the pipeline and the sharing code.
_EXPORTS = {
    "config": ["RunConfig"],
    "data.vae_data": ["DataConfig", "VAEData"],
    "model.config": ["ModelConfig", "ComponentConfig"],
    "model.networks": ["NetConfig"],
    "inference.objectives": ["ObjectiveConfig"],
    "training.schedule": ["OptimizerConfig", "ScheduleConfig"],
    "options": ["Option"],
    "model.vae": ["VAE"],
    "training.trainer": ["Trainer"],
    "training.callbacks": ["Callback", "TensorBoard", "MLflowLogger"],
    "inference.fast_svi": ["FastSVI", "make_adam"],
    "sharing": ["load", "export_checkpoint"],
    "model.priors": ["Prior", "StandardNormal", "LearnedGaussian", "MixtureOfGaussians", "VampPrior", "FlowPrior"],
    "model.likelihoods": [
        "Likelihood",
        "Bernoulli",
        "ContinuousBernoulli",
        "Beta",
        "Gaussian",
        "Laplace",
        "DiscretizedLogistic",
        "LogisticMixture",
    ],
    "model.guides": ["Guide", "DiagonalGaussianGuide", "FullCovGaussianGuide", "IAFGuide"],
    "inference.analytic": ["analytic_elbo", "analytic_loss"],
    "inference.bounds": ["evaluate", "Evaluation", "iwae_bound", "log_weights"],
    "inference.latents": ["posterior_moments", "active_units"],
    "training.runs": ["start_run", "resume_run"],
    "runtime.policy": ["RuntimePolicy", "runtime_policy"],
    "pipeline": [
        "load_model",
        "evaluate_checkpoint",
        "plot_checkpoint",
        "sample_checkpoint",
        "encode_checkpoint",
        "write_samples",
    ],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_WHERE]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # (once: the next lookup finds it directly)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
