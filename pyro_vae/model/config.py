"""The model's part of a run's config: the latent size, the networks and the three components.

In a config file::

    [model]
    latent_dim = 20
    [model.net]
    kind = "mlp"
    hidden = [400]
    [model.prior]
    name = "mog"
    num_components = 10
    [model.likelihood]
    name = "bernoulli"
    [model.guide]
    name = "diagonal"

``latent_dim`` is stated once, here, and the image size comes from the data; :meth:`ModelConfig.build_components`
passes both to each component whose constructor takes them. A component from outside pyro-vae also records its
``module``, which is imported only when trusted (:mod:`pyro_vae.model.rebuild`): trust is decided once, when a
config is read (:meth:`ModelConfig.resolved`), and the resolved classes travel with it.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from ..errors import ConfigError
from ..options import Option, coerce, normalise_fields
from .components import REGISTRY, options_of
from .guides import Guide
from .hierarchical import DEFAULT_LAYER_HIDDEN, MAX_LAYERS, HierarchicalVAE
from .likelihoods import Likelihood
from .networks import MAX_HIDDEN_LAYERS, NetConfig
from .priors import Prior
from .rebuild import is_trusted, resolve
from .structures import STRUCTURES, check_structure, structure_class
from .vae import VAE

KINDS = ("prior", "likelihood", "guide")


def trust_parameter_deprecated(method: Callable) -> Callable:
    """For a method that took ``trust_modules`` before 0.3 and no longer decides trust: still accepted until 0.4,
    with a ``FutureWarning``; the method then runs on ``self.trusting(trust_modules)`` (its components resolved)."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, trust_modules: Iterable[str] | None = None, **kwargs: Any) -> Any:
        if args:
            if len(args) > 1 or trust_modules is not None:
                raise TypeError(f"{method.__qualname__} got trust_modules twice or other positional arguments")
            trust_modules = args[0]
        if trust_modules is not None:
            warnings.warn(
                f"{method.__qualname__}(trust_modules) is deprecated and goes away in pyro-vae 0.4: read the config "
                "with trust_modules (from_dict, read_toml, from_checkpoint) or call .resolved(trust_modules) first",
                FutureWarning,
                stacklevel=2,
            )
            self = self.trusting(trust_modules)
        return method(self, **kwargs)

    return wrapper


MAX_LATENT_DIM = 1_000_000


@dataclass
class ComponentConfig:
    """A component by ``name`` with its ``options`` (``module``: where a component from outside pyro-vae lives)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    module: str | None = None
    # The class, once trust was decided (ModelConfig.resolved); not part of the config's data.
    component_class: type | None = field(default=None, repr=False, compare=False)

    def current_class(self) -> type | None:
        """:attr:`component_class` if it is still the class ``name`` and ``module`` name (they may have been
        changed since), else ``None``."""
        cls = self.component_class
        if cls is None or cls.__dict__.get("name", cls.__qualname__) != self.name:
            return None
        return cls if self.module == (None if is_trusted(cls.__module__) else cls.__module__) else None

    def to_dict(self) -> dict:
        extra = {} if self.module is None else {"module": self.module}
        return {"name": self.name, **extra, **{k: v for k, v in self.options.items() if v is not None}}

    @classmethod
    def from_dict(cls, table: Any, kind: str) -> ComponentConfig:
        if isinstance(table, str):
            return cls(table)
        if not isinstance(table, dict):
            raise ConfigError(f'model.{kind} must be a table (e.g. name = "{_DEFAULTS[kind]}" and its options)')
        options = {k: v for k, v in table.items() if k not in ("name", "module")}
        name, module = table.get("name", _DEFAULTS[kind]), table.get("module")
        if not isinstance(name, str) or not isinstance(module, (str, type(None))):
            raise ConfigError(f"model.{kind}.name and model.{kind}.module must be text")
        return cls(name, options, module)


_DEFAULTS = {"prior": "standard-normal", "likelihood": "bernoulli", "guide": "diagonal"}


@dataclass
class ModelConfig:
    """The structure, the latent size, the encoder/decoder networks and the prior, likelihood and guide family."""

    KEY: ClassVar[str] = "model"
    latent_dim: Annotated[int, Option("size of the latent code z", min=1, max=MAX_LATENT_DIM)] = 20
    net: NetConfig = field(default_factory=NetConfig)
    prior: ComponentConfig = field(default_factory=lambda: ComponentConfig(_DEFAULTS["prior"]))
    likelihood: ComponentConfig = field(default_factory=lambda: ComponentConfig(_DEFAULTS["likelihood"]))
    guide: ComponentConfig = field(default_factory=lambda: ComponentConfig(_DEFAULTS["guide"]))
    structure: Annotated[
        Literal[tuple(STRUCTURES)],
        Option(
            "the model's program: vae (z -> x), conditional (the label given: p(x | z, y), q(z | x, y)), "
            "semi-supervised (M2: the label a latent variable, observed where given, summed out elsewhere), "
            "hierarchical (several latent layers, --latent-dims); see docs/structures.md"
        ),
    ] = "vae"  # (after the fields above: ModelConfig(latent_dim, net, ...) as before)
    classifier_weight: Annotated[
        float | None,
        Option(
            "--structure semi-supervised: alpha, the weight of log q(y | x) on each labelled training image "
            "[default: 0.1 x training images / labelled images, the paper's alpha = 0.1 N]",
            min=0,
            max=1e9,
        ),
    ] = None
    # The class names a structure with the label in it was built for, recorded from the data (as data.shape is).
    class_names: tuple[str, ...] | None = None
    latent_dims: Annotated[
        tuple[int, ...] | None,
        Option(
            "--structure hierarchical: the size of each latent layer, the one nearest the data first (e.g. 100,50); "
            "latent_dim is then their sum",
            min=1,
            max=MAX_LATENT_DIM,
            max_items=MAX_LAYERS,
        ),
    ] = None
    layer_hidden: Annotated[
        tuple[int, ...] | None,
        Option(
            "--structure hierarchical: hidden widths of the MLPs between latent layers "
            f"[default: {','.join(map(str, DEFAULT_LAYER_HIDDEN))}]",
            min=1,
            max_items=MAX_HIDDEN_LAYERS,
        ),
    ] = None

    def layer_dims(self) -> tuple[int, ...]:
        """The latent layers' sizes: ``latent_dims``, or the one layer of ``latent_dim``."""
        return tuple(self.latent_dims) if self.latent_dims else (self.latent_dim,)

    def resolved(self, trust_modules: Iterable[str] = ()) -> ModelConfig:
        """A copy with each component's class found (a module outside pyro-vae is imported only when it is in
        ``trust_modules``: the one place trust is decided, see :mod:`pyro_vae.model.rebuild`), its options checked
        and completed with their defaults, and every rule between components checked; :class:`ConfigError`
        otherwise. A component already resolved keeps its class. ``self`` is not changed."""
        model = copy.deepcopy(self)
        normalise_fields(model)
        normalise_fields(model.net)
        model.net.validate()
        names = model.class_names
        if names is not None:
            if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
                raise ConfigError(f"model.class_names must be a list of names, got {model.class_names!r}")
            model.class_names = tuple(names)
        for kind in KINDS:
            part = getattr(model, kind)
            cls = part.current_class() or resolve(kind, part.name, part.module, trust_modules)
            settings = {s.name: s for s in cls.settings(f"model.{kind}.")}
            unknown = sorted(set(part.options) - set(settings))
            if unknown:
                raise ConfigError(not_an_option(kind, part.name, unknown[0]))
            options = {name: coerce(s, part.options.get(name, s.default)) for name, s in settings.items()}
            try:
                cls.check_options(options)
            except ValueError as exc:
                raise ConfigError(f"model.{kind} ({part.name}): {exc}") from None
            setattr(model, kind, ComponentConfig(part.name, options, part.module, cls))
        prior, guide = model.prior.component_class, model.guide.component_class
        check_structure(model.structure, prior, guide)
        if model.classifier_weight is not None and model.structure != "semi-supervised":
            raise ConfigError("model.classifier_weight (--classifier-weight) applies to --structure semi-supervised")
        _check_layers(model)
        if prior.uses_guide_density and not guide.one_pass_log_density:
            one_pass = _names("guide", lambda c: c.one_pass_log_density and c.layers != "top-down")
            raise ConfigError(
                f"--prior {self.prior.name} with --guide {self.guide.name}: the prior evaluates q(z|x) at points of "
                f"its own at every step, which this guide can only do by inverting its flow; choose a guide with "
                f"a one-pass density ({', '.join(one_pass)})"
            )
        return model

    @trust_parameter_deprecated
    def trusting(self, trust_modules: Iterable[str]) -> ModelConfig:
        """This config with its components resolved under ``trust_modules`` (for the deprecated parameter)."""
        return self.resolved(trust_modules)

    def classes(self) -> dict[str, type]:
        """The prior, likelihood and guide classes (pyro-vae's own, or those resolved with trust)."""
        return {kind: part.component_class for kind, part in zip(KINDS, self.resolved().components())}

    def components(self) -> tuple[ComponentConfig, ComponentConfig, ComponentConfig]:
        return self.prior, self.likelihood, self.guide

    @trust_parameter_deprecated
    def validate(self) -> dict[str, type]:
        """Check every value and the rules between components (nothing is changed); returns the classes."""
        return self.classes()

    @trust_parameter_deprecated
    def build_components(self, *, image_shape: tuple[int, int, int]) -> tuple[Prior, Likelihood, Guide]:
        """The prior, likelihood and guide (untrained), each given the shared values it takes (``image_shape``:
        ``(C, H, W)`` from the data; ``data_dim``: C*H*W)."""
        dims = self.layer_dims()  # the prior's is the top layer; the guide family's the one nearest the data
        latent = {"prior": dims[-1], "likelihood": dims[0], "guide": dims[0]}
        built = []
        for kind, part in zip(KINDS, self.resolved().components()):
            cls = part.component_class
            shared = {"latent_dim": latent[kind], "data_dim": math.prod(image_shape), "image_shape": tuple(image_shape)}
            kwargs = {**{k: shared[k] for k in cls.shared_values()}, **part.options}
            try:
                built.append(cls(**kwargs))
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"model.{kind} ({part.name}): {exc}") from None
        return tuple(built)

    @trust_parameter_deprecated
    def build(self, *, image_shape: tuple[int, int, int]) -> VAE:
        """The VAE this config describes, untrained, for images of ``image_shape`` ``(C, H, W)``."""
        return self.build_structure(self.build_components(image_shape=image_shape), image_shape)

    def build_structure(self, components: tuple[Prior, Likelihood, Guide], image_shape: tuple[int, int, int]) -> VAE:
        """The structure's model around built ``components`` (the networks are drawn here)."""
        cls = structure_class(self.structure)
        if cls.needs_labels and not self.class_names:
            raise ConfigError(f"--structure {self.structure} needs the classes, which come from labelled data")
        extra = {} if self.classifier_weight is None else {"classifier_weight": self.classifier_weight}
        if self.latent_dims:
            extra.update(latent_dims=self.latent_dims, layer_hidden=self.layer_hidden)
        return cls(self.net, *components, image_shape=image_shape, class_names=self.class_names or (), **extra)

    @classmethod
    def of(cls, vae: VAE) -> ModelConfig:
        """The config that rebuilds ``vae``'s architecture."""
        parts = {
            kind: component_config(part) for kind, part in zip(KINDS, (vae.prior, vae.likelihood, vae.guide_family))
        }
        return cls(
            vae.latent_dim,
            vae.net_config,
            **parts,
            structure=vae.structure,
            classifier_weight=getattr(vae, "classifier_weight", None),
            class_names=vae.class_names or None,
            latent_dims=vae.latent_dims if len(vae.latent_dims) > 1 else None,
            layer_hidden=getattr(vae, "layer_hidden", None),
        )


def _check_layers(model: ModelConfig) -> None:
    """``latent_dims`` and ``layer_hidden`` belong to the hierarchical structure, which needs several layers; there
    ``latent_dim`` is set to their sum (the size of the whole latent vector)."""
    layered = model.structure == HierarchicalVAE.structure
    if not layered:
        for name, flag in (("latent_dims", "--latent-dims"), ("layer_hidden", "--layer-hidden")):
            if getattr(model, name) is not None:
                raise ConfigError(
                    f"model.{name} ({flag}) applies to --structure hierarchical (one latent layer: --latent-dim)"
                )
        return
    dims = tuple(model.latent_dims or ())
    if not 2 <= len(dims) <= MAX_LAYERS:
        raise ConfigError(
            f"--structure hierarchical needs 2 to {MAX_LAYERS} latent layers in --latent-dims (e.g. 100,50), "
            f"got {len(dims) or 'none'}"
        )
    if sum(dims) > MAX_LATENT_DIM:
        raise ConfigError(
            f"--latent-dims {','.join(map(str, dims))}: {sum(dims)} latent units in all, over {MAX_LATENT_DIM}"
        )
    model.latent_dims = dims
    model.latent_dim = sum(dims)
    model.layer_hidden = tuple(model.layer_hidden) if model.layer_hidden else DEFAULT_LAYER_HIDDEN


def component_config(component: Any) -> ComponentConfig:
    """The config that rebuilds ``component``: its class's name (and module, outside pyro-vae) and the options
    it was built with, each checked to be a value a config file can hold."""
    cls = type(component)
    module = None if is_trusted(cls.__module__) else cls.__module__
    name = cls.__dict__.get("name", cls.__qualname__)
    options = options_of(component)
    settings = {s.name: s for s in cls.settings(f"model.{cls.kind}.")}
    return ComponentConfig(name, {k: coerce(settings[k], v) for k, v in options.items()}, module, cls)


def _names(kind: str, keep) -> list[str]:
    return [name for name, cls in REGISTRY[kind].items() if keep(cls)]


def not_an_option(kind: str, name: str, option: str) -> str:
    """The message for an option the chosen component does not take, naming the components that do."""
    takers = _names(kind, lambda cls: option in {s.name for s in cls.settings()})
    flag = f"--{kind}-{option.replace('_', '-')}"
    where = f" (it applies to --{kind} {' or '.join(takers)})" if takers else ""
    return f"model.{kind}.{option} ({flag}) does not apply to --{kind} {name}{where}"
