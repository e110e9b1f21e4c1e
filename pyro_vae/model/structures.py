"""The model structures by name: the programs a ``model.structure`` (``--structure``) chooses between.

* ``vae``: ``z ~ p(z)``, ``x ~ p(x | z)``; guide ``q(z | x)`` (:class:`~pyro_vae.model.vae.VAE`);
* ``conditional``: the label given, ``x ~ p(x | z, y)``; guide ``q(z | x, y)``
  (:class:`~pyro_vae.model.conditional.ConditionalVAE`);
* ``semi-supervised``: M2, ``y ~ Cat(1/K)`` observed where labelled, ``x ~ p(x | y, z)``; guide ``q(y | x)``
  (enumerated where not given) and ``q(z | x, y)`` (:class:`~pyro_vae.model.semi_supervised.SemiSupervisedVAE`);
* ``hierarchical``: L latent layers, ``z_L ~ p(z_L)``, ``z_l ~ p(z_l | z_{l+1})``, ``x ~ p(x | z_1)``; guide bottom-up
  (``--guide diagonal``) or top-down (``--guide ladder``) (:class:`~pyro_vae.model.hierarchical.HierarchicalVAE`).

Each is one class with the interface :mod:`pyro_vae.model.vae` describes; priors, likelihoods and guide families
are swapped inside each. :func:`check_structure` refuses, in one line, a combination a structure cannot run.
"""

from __future__ import annotations

from ..errors import ConfigError
from .components import REGISTRY
from .conditional import ConditionalVAE
from .hierarchical import HierarchicalVAE
from .semi_supervised import SemiSupervisedVAE
from .vae import VAE

STRUCTURES: dict[str, type[VAE]] = {
    cls.structure: cls for cls in (VAE, ConditionalVAE, SemiSupervisedVAE, HierarchicalVAE)
}


def structure_class(name: str) -> type[VAE]:
    try:
        return STRUCTURES[name]
    except KeyError:
        known = ", ".join(STRUCTURES)
        raise ConfigError(f"model.structure (--structure) must be one of {known}, got {name!r}") from None


def check_structure(name: str, prior: type, guide: type) -> None:
    """The rules between a structure and its components (``prior``, ``guide``: their classes)."""
    if structure_class(name).needs_labels and prior.uses_guide_density:
        raise ConfigError(
            f"--structure {name} with --prior {prior.name}: that prior is a mixture of the guide's posteriors of "
            "learned pseudo-images, which have no label to give q(z | x, y); choose another prior"
        )
    layered = name == HierarchicalVAE.structure
    if layered and guide.layers is None:
        serve = ", ".join(n for n, cls in REGISTRY["guide"].items() if cls.layers)
        raise ConfigError(
            f"--structure {name} with --guide {guide.name}: that family cannot serve a layer ({serve} can)"
        )
    if not layered and guide.layers == "top-down":
        raise ConfigError(
            f"--guide {guide.name} infers several latent layers top-down: it needs --structure hierarchical"
        )
    if layered and prior.uses_guide_density:
        raise ConfigError(
            f"--structure {name} with --prior {prior.name}: that prior needs the guide's density of the top layer, "
            "which a hierarchical guide does not have in closed form; choose another top prior"
        )
