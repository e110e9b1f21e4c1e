"""One description of a run: :class:`RunConfig`.

The same object comes from the command line, from a config file (``pyro-vae train --config FILE``) or
from Python, is written beside the run as ``OUT/config.toml`` and stored as-is in every checkpoint::

    seed = 0
    [data]       dataset, binarize, splits, root, channels, image_size, stream; shape (recorded)
                                                                        (pyro_vae.data.vae_data.DataConfig)
    [model]      latent_dim; [model.net], [model.prior], [model.likelihood], [model.guide]
                                                                        (pyro_vae.model.config.ModelConfig)
    [objective]  kind, particles, beta, warmup_epochs, warmup_start, jit, compile (pyro_vae.inference.objectives)
    [optimizer]  lr, adam_eps, batch_size                               (pyro_vae.training.schedule)
    [schedule]   epochs, lr_schedule, checkpoint_every, plot_every, collapse_warning
                                                                        (pyro_vae.training.schedule)

Every setting is declared once, on the dataclass field or component parameter that owns it
(:mod:`pyro_vae.options`); :func:`settings` lists them all, and the command line is generated from that
list. :meth:`RunConfig.validate` holds every rule (values and combinations), whatever the source;
:func:`pyro_vae.training.runs.start_run` turns a config into a model and a trainer, seeding both.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pyro
import tomli_w

from .data.vae_data import DataConfig
from .errors import CheckpointError, ConfigError
from .inference.objectives import ObjectiveConfig
from .model.components import REGISTRY, SHARED
from .model.config import KINDS, ComponentConfig, ModelConfig, trust_parameter_deprecated
from .model.networks import NetConfig
from .model.rebuild import resolve
from .model.structures import structure_class
from .model.vae import VAE
from .options import Option, Setting, dataclass_settings, flag_for, normalise_fields
from .runtime.atomic import atomic_path
from .training.schedule import OptimizerConfig, ScheduleConfig

SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "objective": ObjectiveConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
}


@dataclass
class RunConfig:
    """Everything that determines a training run's numbers (where it writes and on which device do not)."""

    KEY: ClassVar[str] = ""
    seed: Annotated[int, Option("seed of the initial weights and of every draw", min=0, max=2**32 - 1)] = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def resolved(self, trust_modules: Iterable[str] = ()) -> RunConfig:
        """A copy with every value checked and normalised (lists as tuples, each component's options completed
        with their defaults) and each component's class found, importing a module outside pyro-vae only when it
        is in ``trust_modules`` (the one place trust is decided); :class:`ConfigError` otherwise. Reading a config
        (:meth:`from_dict`, :meth:`read_toml`, :meth:`from_checkpoint`) returns it resolved."""
        config = copy.deepcopy(self)
        for part in (config, config.data, config.objective, config.optimizer, config.schedule):
            normalise_fields(part)
            if part is not config:
                part.validate()  # (the rules between a section's fields)
        if config.data.shape is not None:  # (recorded from the data: a list when read back from TOML or a checkpoint)
            config.data.shape = tuple(config.data.shape)
        config.model = config.model.resolved(trust_modules)
        if config.data.labelled is not None and config.model.structure != "semi-supervised":
            raise ConfigError("data.labelled (--labelled) applies to --structure semi-supervised")
        structure_class(config.model.structure).check_objective(
            config.objective.kind, config.model.guide.component_class
        )
        if config.model.likelihood.component_class.binary_data and config.data.binarize == "none":
            others = [name for name, cls in REGISTRY["likelihood"].items() if not cls.binary_data]
            raise ConfigError(
                f"--likelihood {self.model.likelihood.name} needs binary pixels but data.binarize (--binarize) is "
                f"none: binarize (dynamic or static) or choose a likelihood for grey levels ({', '.join(others)})"
            )
        return config

    def trusting(self, trust_modules: Iterable[str]) -> RunConfig:
        """This config with its model's components resolved under ``trust_modules`` (for the deprecated parameter;
        the rest is left as it is)."""
        return dataclasses.replace(self, model=self.model.resolved(trust_modules))

    @trust_parameter_deprecated
    def validate(self) -> None:
        """Every value within its bounds and every rule between settings; :class:`ConfigError` otherwise. Nothing
        is changed (:meth:`resolved` gives the normalised copy)."""
        self.resolved()

    @trust_parameter_deprecated
    def build_model(self) -> VAE:
        """The untrained model. The components' random initial values (mixture means, pseudo-inputs, flows) and
        the networks' weights each start from ``seed``, so the networks do not depend on the components chosen."""
        pyro.set_rng_seed(self.seed)
        parts = self.model.build_components(image_shape=self.data.image_shape)
        pyro.set_rng_seed(self.seed)
        return self.model.build_structure(parts, self.data.image_shape)

    @trust_parameter_deprecated
    def untrained_model(self) -> VAE:
        """The model's architecture for this run's data, with whatever initial values (for loading weights into,
        or measuring; the random state is not reseeded)."""
        return self.model.build(image_shape=self.data.image_shape)

    def build(self, out_dir: str | Path, **options: Any) -> Any:
        """Deprecated since 0.3, removed in 0.4: ``pyro_vae.start_run(config, out_dir, ...)`` (same options; it
        returns the :class:`~pyro_vae.training.trainer.Trainer`)."""
        warnings.warn(
            "RunConfig.build is deprecated and goes away in pyro-vae 0.4: use pyro_vae.start_run(config, out_dir, ...)",
            FutureWarning,
            stacklevel=2,
        )
        from .training.runs import start_run  # the deprecated alias's upward import (tests/test_imports.py)

        return start_run(self, out_dir, **options)

    def updated(self, overrides: dict[str, Any], trust_modules: Iterable[str] = ()) -> RunConfig:
        """A resolved copy with each dotted key of ``overrides`` set: ``config.updated({"objective.beta": 4.0})``.
        Components this config already resolved keep their classes; ``trust_modules``: for components it names anew."""
        return RunConfig.from_dict(with_overrides(self.to_dict(), overrides), "", trust_modules, like=self)

    # -- plain data and TOML ---------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain data (no ``None``: TOML has no null, and an absent key means the default)."""
        out: dict[str, Any] = {"seed": self.seed}
        for section in SECTIONS:
            out[section] = _plain(getattr(self, section))
        return out

    @classmethod
    def from_dict(
        cls, table: Any, source: str = "config", trust_modules: Iterable[str] = (), *, like: RunConfig | None = None
    ) -> RunConfig:
        """A resolved config (:meth:`resolved`) from plain data (a parsed TOML file, a checkpoint's ``config``); an
        unknown key, a wrong type or an impossible value is a :class:`ConfigError` naming ``source`` and the key.
        ``like``: a resolved config whose component classes are kept where the table names the same component."""
        try:
            if not isinstance(table, dict):
                raise ConfigError("a config is a table of sections (data, model, objective, optimizer, schedule)")
            config = _from_table(cls, table, "")
            for old, new in zip(like.model.components() if like else (), config.model.components()):
                if (old.name, old.module) == (new.name, new.module):
                    new.component_class = old.component_class
            config = config.resolved(trust_modules)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
        return config

    def write_toml(self, path: str | Path) -> Path:
        """This config as TOML, written atomically."""
        return write_toml(self.to_dict(), path)

    @classmethod
    def read_toml(
        cls, path: str | Path, overrides: dict[str, Any] | None = None, trust_modules: Iterable[str] = ()
    ) -> RunConfig:
        """The config in a TOML file, with ``overrides`` (``{"model.latent_dim": 2}``) applied on top."""
        return cls.from_dict(with_overrides(read_table(path), overrides or {}), str(path), trust_modules)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, trust_modules: Iterable[str] = ()) -> RunConfig:
        """The config stored in a checkpoint (an older checkpoint's layout is converted)."""
        table = ckpt["config"]
        if ckpt.get("format_version") == 1:
            table = convert_v1(ckpt, trust_modules)
        if "compile" not in table.get("objective", {}):  # trained before the compiled step: resume without it
            table = {**table, "objective": {**table.get("objective", {}), "compile": False}}
        try:
            return cls.from_dict(table, "the checkpoint's config", trust_modules)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None


def write_toml(table: dict, path: str | Path) -> Path:
    """``table`` (a config's plain data) as a TOML file (tomli-w), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(f"# a pyro-vae run: pyro-vae train --config {Path(path).name}\n" + tomli_w.dumps(table))
    return Path(path)


def read_table(path: str | Path) -> dict:
    """A TOML file as a dict; a missing or malformed file is a :class:`ConfigError` in one line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})") from None


def with_overrides(table: dict, overrides: dict[str, Any]) -> dict:
    """``table`` with each dotted key of ``overrides`` set. A new component ``name`` drops the options the
    table gave the previous component (they belong to it, not to the new one)."""
    table = copy.deepcopy(table)
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = table
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{'.'.join(path)} must be a table")
        if path == ["data"] and last not in _DATA_KEYS_KEEPING_SHAPE:
            node.pop("shape", None)  # the images change: their shape is read again from the data
        names_a_component = len(path) == 2 and path[0] == "model" and path[1] in KINDS and last == "name"
        if names_a_component and node.get("name") != value:
            node.clear()
        node[last] = value
    return table


_DATA_KEYS_KEEPING_SHAPE = {"root", "stream", "workers", "shape"}


def _plain(obj: Any) -> Any:
    if isinstance(obj, ComponentConfig):
        return obj.to_dict()
    if is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj) if getattr(obj, f.name) is not None}
    if isinstance(obj, tuple):
        return list(obj)
    return obj


def _from_table(cls: type, table: dict, prefix: str) -> Any:
    """``cls`` (a config dataclass) from its table: nested dataclasses recursively, components by name."""
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(names)})")
    values = {}
    for name, value in table.items():
        default = names[name].default_factory() if callable(names[name].default_factory) else None
        if isinstance(default, ComponentConfig):
            values[name] = ComponentConfig.from_dict(value, name)
        elif is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name} must be a table")
            values[name] = _from_table(type(default), value, f"{prefix}{name}.")
        else:
            values[name] = value
    return cls(**values)


# -- every setting, for the command line ------------------------------------------------------------------------


def settings() -> list[Setting]:
    """Every setting of a run, in config order: the sections' fields, each component's name and the options of
    every registered component (an option two components share, like mog's and vamp's ``num_components``,
    appears once, with no single default)."""
    found = dataclass_settings(RunConfig)
    for cls in SECTIONS.values():
        found += dataclass_settings(cls)
        if cls is ModelConfig:
            found += dataclass_settings(NetConfig)
            for kind in KINDS:
                found.append(_name_setting(kind))
                found += _option_settings(kind)
    return found


def _name_setting(kind: str) -> Setting:
    default = getattr(ModelConfig(), kind).name
    help_text = {"prior": "p(z)", "likelihood": "p(x|z)", "guide": "q(z|x)"}[kind]
    option = Option(help_text, flag=f"--{kind}")
    return Setting(
        f"model.{kind}.name",
        "name",
        Literal[tuple(REGISTRY[kind])],
        option,
        default,
        flag_for(f"model.{kind}.name", option),
    )


def _option_settings(kind: str) -> list[Setting]:
    by_option: dict[str, list[tuple[str, Setting]]] = {}
    for name, cls in REGISTRY[kind].items():
        for s in cls.settings(f"model.{kind}."):
            by_option.setdefault(s.name, []).append((name, s))
    merged = []
    for users in by_option.values():
        first = users[0][1]
        if len({(s.option.help, s.default) for _, s in users}) == 1:
            help_text, default = f"{' or '.join(n for n, _ in users)}: {first.option.help}", first.default
        else:  # mog's and vamp's num_components: each component's own meaning and default
            help_text, default = "; ".join(f"{n}: {s.option.help} [{s.default}]" for n, s in users), None
        option = dataclasses.replace(first.option, help=help_text)
        merged.append(dataclasses.replace(first, option=option, default=default))
    return merged


# -- checkpoints written before RunConfig --------------------------------------------------------------------------

_V1_TRAIN = {  # format-1 "train" key -> (section, key); section None: the top level
    "epochs": ("schedule", "epochs"),
    "lr_schedule": ("schedule", "lr_schedule"),
    "checkpoint_every": ("schedule", "checkpoint_every"),
    "plot_every": ("schedule", "plot_every"),
    "batch_size": ("optimizer", "batch_size"),
    "lr": ("optimizer", "lr"),
    "adam_eps": ("optimizer", "adam_eps"),
    "objective": ("objective", "kind"),
    "elbo": ("objective", "kind"),
    "particles": ("objective", "particles"),
    "beta": ("objective", "beta"),
    "warmup_epochs": ("objective", "warmup_epochs"),
    "warmup_start": ("objective", "warmup_start"),
    "jit": ("objective", "jit"),
    "seed": (None, "seed"),
}


def convert_v1(ckpt: dict, trust_modules: Iterable[str] = ()) -> dict:
    """A format-1 checkpoint's ``{"model", "data", "train"}`` config as a :class:`RunConfig` table."""
    try:
        old = ckpt["config"]
        net = dict(old["model"]["net"])
        data = {k: v for k, v in old["data"].items() if v is not None}
        if isinstance(ckpt.get("data_dir"), str):
            data["root"] = ckpt["data_dir"]
        table: dict[str, Any] = {"data": data, "model": {"latent_dim": net.pop("latent_dim"), "net": net}}
        for kind in KINDS:  # before guide families, the guide was the diagonal Gaussian
            spec = old["model"].get(kind, {"target": "pyro_vae.guides:DiagonalGaussianGuide"})
            table["model"][kind] = _convert_spec(kind, spec, trust_modules)
        for key, value in old["train"].items():
            section, name = _V1_TRAIN[key]
            (table if section is None else table.setdefault(section, {}))[name] = value
        return table
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CheckpointError(
            f"the checkpoint's (format 1) config cannot be converted: {type(exc).__name__}: {exc}"
        ) from None


def _convert_spec(kind: str, spec: dict, trust_modules: Iterable[str]) -> dict:
    """A format-1 ``{"target": "module:Class", "args", "kwargs"}`` as ``{"name", "module"?, options...}``."""
    import inspect

    module, qualname = spec["target"].split(":")
    if module.split(".")[0] == "pyro_vae":  # the flat package's module paths no longer exist
        matches = [
            c for c in REGISTRY[kind].values() if c.__qualname__ == qualname and c.__module__.startswith("pyro_vae")
        ]
        if not matches:
            raise ValueError(f"no {kind} {qualname} in pyro_vae")
        cls, module_entry = matches[0], {}
    else:
        cls = resolve(kind, qualname, module, trust_modules)
        module_entry = {"module": module}
    bound = inspect.signature(cls.__init__).bind_partial(None, *spec.get("args", []), **spec.get("kwargs", {}))
    options = {k: v for k, v in list(bound.arguments.items())[1:] if k not in SHARED and v is not None}
    return {"name": cls.__dict__.get("name", qualname), **module_entry, **options}
