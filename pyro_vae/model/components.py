"""Swappable components that a checkpoint can rebuild from plain data.

A :class:`Component` remembers the arguments it was constructed with. Its *spec* is
``{"target": "package.module:ClassName", "args": [...], "kwargs": {...}}``: plain data, stored in the
checkpoint. :func:`pyro_vae.rebuild.build` turns a spec back into a component, importing a module
other than ``pyro_vae`` only when the user trusts it.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

_PLAIN = (type(None), bool, int, float, str)


class Component:
    """Mixin that records constructor arguments (put it before ``nn.Module`` in the bases)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        # object.__setattr__: nn.Module.__setattr__ is not ready before __init__ runs.
        object.__setattr__(obj, "_component_args", (args, dict(kwargs)))
        return obj


def check_plain(value: Any, where: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is plain data: None, bools, numbers, strings, lists,
    string-keyed dicts (what a checkpoint stores and :func:`pyro_vae.rebuild.build` accepts)."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            check_plain(item, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: dictionary keys must be strings, got {key!r}")
            check_plain(item, where)
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
    check_plain(list(args), target)
    check_plain(kwargs, target)
    return {"target": target, "args": list(args), "kwargs": dict(kwargs)}
