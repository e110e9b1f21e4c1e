"""Declared settings: each setting of a run is described once, where it belongs, and the config file, the
command line, the help text and the error messages are all derived from that one description.

A setting is a field of a config dataclass or a parameter of a component's constructor, annotated::

    latent_dim: Annotated[int, Option("size of the latent code z", min=1)] = 20

The type says what values are allowed (``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` choices,
``tuple[int, ...]``, any of them ``| None``), the :class:`Option` adds help, bounds and the command-line
spelling. A parameter without ``Option`` still becomes a setting, typed by its annotation (or its default).

:func:`coerce` turns a value from a TOML file (typed) or the command line (text) into the declared type,
or raises :class:`~pyro_vae.errors.ConfigError` with one line that names the setting's key and its flag,
so both sources give the same message for the same mistake.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError


@dataclass(frozen=True)
class Option:
    """What a setting's type does not say: help text, bounds, its flag when not derived from its key,
    and whether ``train --resume`` may change it."""

    help: str = ""
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # the bound excludes min itself (e.g. a learning rate > 0)
    flag: str | None = None
    resumable: bool = False
    max_items: int | None = None  # for lists


@dataclass(frozen=True)
class Setting:
    """One declared setting: its dotted ``key`` in the config, Python ``name``, ``type``, ``option``,
    ``default`` and command-line ``flag``."""

    key: str
    name: str
    type: Any
    option: Option
    default: Any
    flag: str

    def choices(self) -> tuple | None:
        base = strip_none(self.type)
        return typing.get_args(base) if typing.get_origin(base) is Literal else None

    def metavar(self) -> str:
        choices = self.choices()
        if choices:
            return "[" + "|".join(map(str, choices)) + "]"
        base = strip_none(self.type)
        if typing.get_origin(base) is tuple:
            return "N[,N...]"
        return {int: "INTEGER", float: "FLOAT", str: "TEXT", bool: "BOOLEAN"}.get(base, "VALUE")

    def help_text(self) -> str:
        bounds = _bounds_text(self.option)
        shown = _show(self.default)
        parts = [self.option.help, f"(key {self.key}" + (f"; {bounds}" if bounds else "") + ")"]
        if shown is not None:
            parts.append(f"[default: {shown}]")
        return " ".join(p for p in parts if p)


def _show(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _bounds_text(option: Option) -> str:
    low = None if option.min is None else f"{'>' if option.min_open else '>='} {option.min}"
    high = None if option.max is None else f"<= {option.max}"
    return " and ".join(b for b in (low, high) if b)


def strip_none(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _allows_none(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _split(hint: Any) -> tuple[Any, Option]:
    """``Annotated[T, Option(...)]`` -> ``(T, Option)``; a plain hint gets an empty Option."""
    if typing.get_origin(hint) is typing.Annotated:
        tp, *extras = typing.get_args(hint)
        option = next((e for e in extras if isinstance(e, Option)), Option())
        return tp, option
    return hint, Option()


def flag_for(key: str, option: Option) -> str:
    return option.flag or "--" + key.rsplit(".", 1)[-1].replace("_", "-")


def dataclass_settings(cls: type) -> list[Setting]:
    """The settings of a config dataclass's plain fields, keyed under its ``KEY`` (nested dataclass fields
    and fields annotated without :class:`Option` metadata are left to the class)."""
    prefix = f"{cls.KEY}." if getattr(cls, "KEY", "") else ""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = []
    for field in dataclasses.fields(cls):
        tp, option = _split(hints[field.name])
        if typing.get_origin(hints[field.name]) is not typing.Annotated:
            continue
        key = prefix + field.name
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        found.append(Setting(key, field.name, tp, option, default, flag_for(key, option)))
    return found


def parameter_settings(fn: Any, prefix: str, flag_prefix: str, skip: frozenset[str]) -> list[Setting]:
    """The settings of ``fn``'s keyword parameters (a component's ``__init__``), except those in ``skip``
    (values the model passes down, like ``latent_dim``). A parameter needs a default; its type comes from
    its annotation, else from the default."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except (NameError, TypeError):
        hints = {}
    found = []
    for param in list(inspect.signature(fn).parameters.values())[1:]:  # skip self
        if param.name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.default is inspect.Parameter.empty:
            raise TypeError(f"{fn.__qualname__}: option {param.name!r} needs a default value")
        hint = hints.get(param.name, type(param.default) if param.default is not None else str)
        tp, option = _split(hint)
        flag = option.flag or f"--{flag_prefix}-{param.name.replace('_', '-')}"
        found.append(Setting(prefix + param.name, param.name, tp, option, param.default, flag))
    return found


def check_fields(obj: Any) -> None:
    """Check every declared field of the config dataclass ``obj`` (type and bounds); nothing is changed."""
    for setting in dataclass_settings(type(obj)):
        coerce(setting, getattr(obj, setting.name))


def normalise_fields(obj: Any) -> None:
    """Every declared field of the config dataclass ``obj`` checked and set to its normal form, in place (a list
    of widths becomes a tuple, an integer learning rate a float): for a copy being resolved."""
    for setting in dataclass_settings(type(obj)):
        object.__setattr__(obj, setting.name, coerce(setting, getattr(obj, setting.name)))


def check_bounds(setting: Setting, value: Any) -> None:
    """:class:`ConfigError` if the number ``value`` (or a tuple of them) is outside ``setting``'s bounds."""
    _check_bounds(f"{setting.key} ({setting.flag})", setting.option, value)


def coerce(setting: Setting, value: Any, *, text: bool = False) -> Any:
    """``value`` as ``setting``'s type, within its bounds; ``text``: it came from the command line as a string."""
    where = f"{setting.key} ({setting.flag})"
    tp = setting.type
    if value is None:
        if _allows_none(tp):
            return None
        raise ConfigError(f"{where} needs a value")
    base = strip_none(tp)
    try:
        result = _convert(base, value, text, setting.option)
    except _Refused as exc:
        raise ConfigError(
            f"{where} must be {_describe(base)}, got {value!r}{': ' + str(exc) if str(exc) else ''}"
        ) from None
    _check_bounds(where, setting.option, result)
    return result


def _describe(base: Any) -> str:
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(base)))
    if typing.get_origin(base) is tuple:
        return "a list of integers (e.g. 512,256)"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(base, str(base))


class _Refused(ValueError):
    """A value that is not of the setting's type (the message adds why, when there is more to say)."""


def _number(parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except ValueError:
        raise _Refused("") from None


def _convert(base: Any, value: Any, text: bool, option: Option = Option()) -> Any:
    origin = typing.get_origin(base)
    if origin is Literal:
        choices = typing.get_args(base)
        if value not in choices:
            raise _Refused("")
        return value
    if origin is tuple:
        if text:
            value = [v.strip() for v in str(value).split(",")]
        elif isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise _Refused("")
        if option.max_items is not None and len(value) > option.max_items:
            raise _Refused(f"at most {option.max_items} entries")
        return tuple(_convert(int, v, text) for v in value)
    if base is bool:
        if text and isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise _Refused("")
        return value
    if base is int:
        if text and isinstance(value, str):
            return _number(int, value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Refused("")
        return value
    if base is float:
        if text and isinstance(value, str):
            number = _number(float, value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Refused("")
        else:
            number = float(value)
        if not math.isfinite(number):
            raise _Refused("not finite")
        return number
    if base is str:
        if not isinstance(value, str):
            raise _Refused("")
        return value
    raise TypeError(f"unsupported setting type {base!r}")  # a declaration error, not the user's


def _check_bounds(where: str, option: Option, value: Any) -> None:
    numbers = value if isinstance(value, tuple) else (value,)
    for number in numbers:
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            return
        low_bad = option.min is not None and (number <= option.min if option.min_open else number < option.min)
        high_bad = option.max is not None and number > option.max
        if low_bad or high_bad:
            raise ConfigError(f"{where} must be {_bounds_text(option)}, got {value if len(numbers) == 1 else number}")
