"""Swappable components (priors, likelihoods, guide families): each class declares itself, once.

A component class states its ``name`` (what a config file and ``--prior``/``--likelihood``/``--guide``
call it) and its options as typed constructor parameters (see :mod:`pyro_vae.options`)::

    class MixtureOfGaussians(Prior):
        name = "mog"
        def __init__(self, latent_dim: int, num_components: Annotated[int, Option("...", min=1)] = 10): ...

Defining the class registers it: the command line gets ``--prior mog`` and ``--prior-num-components``,
config files accept ``[model.prior] name = "mog"``, and a setting given to a component that does not
take it is refused with a message naming the components that do. Parameters named in :data:`SHARED`
(the latent size, the image size) are not options: the model passes them down.

A component also remembers the arguments it was built with, so a trained model can state its own
configuration (:func:`options_of`).
"""

from __future__ import annotations

import inspect
import numbers
import typing
from typing import Any, ClassVar, Literal

from ..errors import ConfigError
from ..options import Setting, check_bounds, coerce, parameter_settings, strip_none

SHARED = frozenset(
    {"latent_dim", "data_dim", "image_shape"}
)  # given once by the model, passed to the components that take them
RESERVED = frozenset({"name", "module"})  # keys of a component's config table
REGISTRY: dict[str, dict[str, type]] = {"prior": {}, "likelihood": {}, "guide": {}}


class Component:
    """Mixin that registers named subclasses and records constructor arguments (put it before
    ``nn.Module`` in the bases). A base class sets ``kind``; a concrete class sets ``name``."""

    kind: ClassVar[str]
    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return
        clash = set(inspect.signature(cls.__init__).parameters) & RESERVED
        if clash:
            raise TypeError(f"{cls.__qualname__}: {', '.join(sorted(clash))} cannot be an option name")
        registered = REGISTRY[cls.kind].get(cls.name)
        if registered is not None and (registered.__module__, registered.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise TypeError(
                f"{cls.kind} name {cls.name!r} is taken by {registered.__module__}.{registered.__qualname__}"
            )
        cls.settings()  # a declaration the command line cannot offer (an option without a default) fails here
        REGISTRY[cls.kind][cls.name] = cls

    def __new__(cls, *args: Any, **kwargs: Any):
        cls._check_arguments(args, kwargs)
        obj = super().__new__(cls)
        # object.__setattr__: nn.Module.__setattr__ is not ready before __init__ runs.
        object.__setattr__(obj, "_component_args", (args, dict(kwargs)))
        return obj

    @classmethod
    def _check_arguments(cls, args: tuple, kwargs: dict[str, Any]) -> None:
        """Each number given to the constructor within its declared bounds, each text among its declared choices
        (a ``ValueError`` naming the option): the declaration is the one place a bound is written, for Python
        callers as for config files. Other values (a NumPy integer, an unannotated option) pass as they are."""
        try:
            given = inspect.signature(cls.__init__).bind(None, *args, **kwargs).arguments
            declared = cls.settings()
        except TypeError:  # a wrong call (``__init__`` says so) or a class that declares no options
            return
        for setting in declared:
            value = given.get(setting.name)
            try:
                if isinstance(value, numbers.Real) and not isinstance(value, bool):
                    check_bounds(setting, value)
                elif isinstance(value, str) and typing.get_origin(strip_none(setting.type)) is Literal:
                    coerce(setting, value)
            except ConfigError as exc:
                raise ValueError(f"{cls.__qualname__}: {exc}") from None

    @classmethod
    def settings(cls, prefix: str = "") -> list[Setting]:
        """The options this class declares (its constructor's parameters, except the shared values)."""
        return parameter_settings(cls.__init__, prefix, cls.kind, SHARED)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raise ``ValueError`` for options that are each valid but impossible together (a rule between one
        component's options; :meth:`ModelConfig.validate` calls it before anything is built)."""

    @classmethod
    def shared_values(cls) -> frozenset[str]:
        """Which of :data:`SHARED` the constructor takes."""
        return SHARED & set(inspect.signature(cls.__init__).parameters)


def component_class(kind: str, name: str) -> type:
    """The registered ``kind`` class called ``name``, or a :class:`ConfigError` listing the names there are."""
    classes = REGISTRY[kind]
    if name not in classes:
        raise ConfigError(f"model.{kind}.name (--{kind}) must be one of {', '.join(classes)}, got {name!r}")
    return classes[name]


def options_of(component: Component) -> dict[str, Any]:
    """The options ``component`` was constructed with (defaults filled in, shared values left out)."""
    args, kwargs = getattr(component, "_component_args", ((), {}))
    signature = inspect.signature(type(component).__init__)
    bound = signature.bind(component, *args, **kwargs)
    bound.apply_defaults()
    variadic = {p.name for p in signature.parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return {k: v for k, v in list(bound.arguments.items())[1:] if k not in SHARED | variadic}
