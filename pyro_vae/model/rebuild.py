"""Rebuilding a checkpoint's components from plain data, running only code the user trusts.

A checkpoint names each component as ``{"target": "module:ClassName", "args": [...], "kwargs": {...}}``
(see :func:`pyro_vae.components.spec`). Checkpoints come from strangers, so the target is data, not an
instruction. :func:`build` follows these rules, in this order, and refuses with a
:class:`~pyro_vae.errors.CheckpointError` at the first one broken:

1. the target is ``module:Qual.Name`` with plain identifiers (no dunder attributes);
2. the module is ``pyro_vae`` or one of its submodules, or is in ``trust_modules`` (a trusted package
   also covers its submodules). An untrusted module is never imported: importing runs its code;
3. the name is looked up in the module's and classes' own ``__dict__`` (no ``__getattr__`` hooks) and must
   be a class defined there (not re-exported) that subclasses :class:`Prior`, :class:`Likelihood` or
   :class:`Guide`; nothing is called before this check;
4. the arguments are plain data (``None``, bools, numbers, strings, lists, string-keyed dicts);

and only then is the class called with the arguments. This is the ``trust_remote_code`` rule of
Hugging Face transformers: the user opts in, per module, to the code a file asks for.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

from .components import check_plain
from ..errors import CheckpointError, ConfigError
from .guides import Guide
from .likelihoods import Likelihood
from .priors import Prior

COMPONENT_BASES = (Prior, Likelihood, Guide)
OWN_PACKAGE = "pyro_vae"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NAME = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]*")


def trusted_module_names(modules: Iterable[str]) -> tuple[str, ...]:
    """The ``--trust-module`` values, checked to be dotted module names."""
    names = tuple(modules)
    for name in names:
        if not isinstance(name, str) or not _MODULE.fullmatch(name):
            raise ConfigError(f"--trust-module {name!r} is not a module name (e.g. my_components or lab.priors)")
    return names


def is_trusted(module: str, trust_modules: Iterable[str] = ()) -> bool:
    """True for ``pyro_vae`` and its submodules, and for each trusted module and its submodules."""
    return any(module == root or module.startswith(root + ".") for root in (OWN_PACKAGE, *trust_modules))


def resolve(target: Any, trust_modules: Iterable[str] = ()) -> type:
    """The component class ``target`` names, imported only if its module is trusted (rules 1-3)."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise CheckpointError(f"component target {str(target)[:80]!r} is not 'module:ClassName'")
    module_name, qualname = target.split(":")
    parts = qualname.split(".")
    if not _MODULE.fullmatch(module_name) or not all(_NAME.fullmatch(part) for part in parts):
        raise CheckpointError(f"component target {target[:80]!r} is not 'module:ClassName'")
    if module_name == "__main__":
        raise CheckpointError(
            f"cannot rebuild component {target}: it was defined in a script (__main__); move the class into a "
            "module and trust it with --trust-module MODULE (Python: trust_modules=[MODULE])"
        )
    if not is_trusted(module_name, trust_modules):
        raise CheckpointError(
            f"the checkpoint asks for {target} from module '{module_name}', which is not trusted; importing it "
            f"would run its code. If you trust it, pass --trust-module {module_name} "
            f"(Python: trust_modules=['{module_name}'])"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckpointError(
            f"cannot rebuild component {target}: make module '{module_name}' importable "
            f"(install it or add its folder to PYTHONPATH) ({exc})"
        ) from None
    for part in parts:
        obj = vars(obj).get(part) if hasattr(obj, "__dict__") else None
    if not (isinstance(obj, type) and issubclass(obj, COMPONENT_BASES)):
        raise CheckpointError(f"component target {target} is not a Prior, Likelihood or Guide class")
    if obj.__module__ != module_name or obj.__qualname__ != qualname:
        raise CheckpointError(f"component target {target} names a class defined in {obj.__module__}")
    return obj


def build(component_spec: Any, trust_modules: Iterable[str] = ()) -> Any:
    """The component ``component_spec`` describes (rules 1-4 of the module docstring), untrained."""
    return build_all([component_spec], trust_modules)[0]


def build_all(component_specs: list, trust_modules: Iterable[str] = ()) -> list:
    """The components ``component_specs`` describe, untrained: every spec passes rules 1-4 before any
    class is called, so one bad target stops the lot with nothing run."""
    checked = [_checked(spec, trust_modules) for spec in component_specs]
    built = []
    for cls, target, args, kwargs in checked:
        try:
            built.append(cls(*args, **kwargs))
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot rebuild {target} from its arguments: {exc}") from None
    return built


def _checked(component_spec: Any, trust_modules: Iterable[str]) -> tuple[type, str, list, dict]:
    """Rules 1-4 for one spec: its class (imported only if trusted), target and plain-data arguments."""
    if not isinstance(component_spec, dict) or "target" not in component_spec:
        raise CheckpointError(f"a component spec must be a dict with a 'target', got {str(component_spec)[:80]}")
    target = component_spec["target"]
    cls = resolve(target, trust_modules)
    args, kwargs = component_spec.get("args", []), component_spec.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise CheckpointError(f"{target}: args must be a list and kwargs a dict")
    try:
        check_plain(args, target)
        check_plain(kwargs, target)
    except (ConfigError, RecursionError) as exc:
        raise CheckpointError(str(exc) or f"{target}: arguments nested too deeply") from None
    return cls, target, args, kwargs
