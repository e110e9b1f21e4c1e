"""Swappable components that a checkpoint can rebuild from plain data.

A :class:`Component` remembers the arguments it was constructed with. Its *spec* is
``{"target": "package.module:ClassName", "args": [...], "kwargs": {...}}``; :func:`build`
imports the target and calls it with the same arguments. This is how a checkpoint of a model
with a user-written prior or likelihood is rebuilt by ``pyro-vae elbo``: it works whenever the
user's module is importable, and says what is missing when it is not.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import CheckpointError, ConfigError

_PLAIN = (type(None), bool, int, float, str)


class Component:
    """Mixin that records constructor arguments (put it before ``nn.Module`` in the bases)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        # object.__setattr__: nn.Module.__setattr__ is not ready before __init__ runs.
        object.__setattr__(obj, "_component_args", (args, dict(kwargs)))
        return obj


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: dictionary keys must be strings, got {key!r}")
            _check_plain(item, where)
        return
    raise ConfigError(
        f"{where}: constructor argument {value!r} is not plain data (numbers, strings, lists, dicts), "
        "so a checkpoint could not rebuild it"
    )


def spec(component: Component) -> dict:
    """The plain-data recipe that rebuilds ``component``: import path plus constructor arguments."""
    cls = type(component)
    target = f"{cls.__module__}:{cls.__qualname__}"
    args, kwargs = getattr(component, "_component_args", ((), {}))
    _check_plain(list(args), target)
    _check_plain(kwargs, target)
    return {"target": target, "args": list(args), "kwargs": dict(kwargs)}


def build(component_spec: dict) -> Any:
    """Rebuild a component from :func:`spec`'s output (raises :class:`CheckpointError` if it cannot)."""
    target = component_spec["target"]
    module_name, _, qualname = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        hint = (
            "it was defined in a script (__main__); move the class into an importable module"
            if module_name == "__main__"
            else f"make module '{module_name}' importable (install it or add its folder to PYTHONPATH)"
        )
        raise CheckpointError(f"cannot rebuild component {target}: {hint} ({exc})") from None
    return obj(*component_spec.get("args", []), **component_spec.get("kwargs", {}))
