"""pyro-vae: variational autoencoders as Pyro model/guide pairs, trained with SVI.

The public names are importable from here (``from pyro_vae import RunConfig, start_run, evaluate``); where each
lives, and what every module is for, is in ``docs/code-layout.md``.
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
    "inference.dreg": ["DoublyReparameterizedIWAE"],
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
    "model.guides": ["Guide", "DiagonalGaussianGuide", "LadderGuide", "FullCovGaussianGuide", "IAFGuide"],
    "model.hierarchical": ["HierarchicalVAE"],
    "inference.analytic": ["analytic_elbo", "analytic_loss"],
    "inference.layered": ["analytic_layered_elbo"],
    "inference.ais": ["ais_log_likelihood", "AISResult"],
    "inference.bdmc": ["bidirectional_ais", "simulate", "BDMCResult"],
    "inference.gaps": ["inference_gaps", "fit_local_guides", "InferenceGaps"],
    "inference.bounds": ["evaluate", "Evaluation", "iwae_bound", "log_weights"],
    "inference.latents": ["posterior_moments", "active_units"],
    "inference.collapse": ["mutual_information", "kl_per_dim", "gaussian_posteriors", "collapse_diagnostics"],
    "training.runs": ["start_run", "resume_run"],
    "runtime.policy": ["RuntimePolicy", "runtime_policy"],
    "pipeline": [
        "load_model",
        "evaluate_checkpoint",
        "plot_checkpoint",
        "sample_checkpoint",
        "encode_checkpoint",
        "write_samples",
        "bdmc_checkpoint",
        "gaps_checkpoint",
    ],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_WHERE]
_SUBMODULES = {
    "config",
    "data",
    "errors",
    "inference",
    "model",
    "options",
    "pipeline",
    "plots",
    "runtime",
    "sharing",
    "training",
    "version",
}


def __getattr__(name: str):
    if name in _SUBMODULES:  # ``import pyro_vae; pyro_vae.pipeline.load_model(...)``
        return import_module(f".{name}", __name__)
    if name not in _WHERE:
        raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # (once: the next lookup finds it directly)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
