"""Finding a component class named by a config, running only code the user trusts.

A config names each component as ``name`` (plus ``module`` for a component defined outside pyro-vae) and
its options. Configs and checkpoints come from strangers, so these are data, not instructions.
:func:`resolve` follows these rules, in this order, and refuses with a :class:`~pyro_vae.errors.ConfigError`
at the first one broken:

1. ``module``, when given, is a dotted module name, and ``name`` is a plain name;
2. a module other than ``pyro_vae`` (or its submodules) must be in ``trust_modules`` (a trusted package
   also covers its submodules). An untrusted module is never imported: importing runs its code;
3. the class is the one registered under ``name`` (see :mod:`pyro_vae.model.components`) and defined in
   that module, or, for a module's unregistered class, the class of that name in the module's own
   ``__dict__`` (no ``__getattr__`` hooks); either way a subclass of the kind's base class;

and only then are the options checked against the class's declared settings and the class called. This is
the ``trust_remote_code`` rule of Hugging Face transformers: the user opts in, per module, to the code a
file asks for.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError
from .components import REGISTRY, component_class
from .guides import Guide
from .likelihoods import Likelihood
from .priors import Prior

BASES = {"prior": Prior, "likelihood": Likelihood, "guide": Guide}
OWN_PACKAGE = "pyro_vae"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NAME = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_.-]*")


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


def resolve(kind: str, name: Any, module: Any = None, trust_modules: Iterable[str] = ()) -> type:
    """The ``kind`` class called ``name`` (in ``module``), imported only if the module is trusted."""
    if module is None or module == OWN_PACKAGE:
        return component_class(kind, name)
    where = f"model.{kind}"
    if not isinstance(module, str) or not _MODULE.fullmatch(module):
        raise ConfigError(f"{where}.module {str(module)[:80]!r} is not a module name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}.name {str(name)[:80]!r} is not a component name")
    if module == "__main__":
        raise ConfigError(
            f"cannot rebuild {kind} {name!r}: it was defined in a script (__main__); move the class into a "
            "module and trust it with --trust-module MODULE (Python: trust_modules=[MODULE])"
        )
    if not is_trusted(module, trust_modules):
        raise ConfigError(
            f"the {kind} {name!r} comes from module '{module}', which is not trusted; importing it would run its "
            f"code. If you trust it, pass --trust-module {module} (Python: trust_modules=['{module}'])"
        )
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"cannot rebuild {kind} {name!r}: make module '{module}' importable (install it or add its folder "
            f"to PYTHONPATH) ({exc})"
        ) from None
    cls = REGISTRY[kind].get(name)
    if cls is None or not cls.__module__.startswith(module):
        cls = vars(imported).get(name)
    if not (isinstance(cls, type) and issubclass(cls, BASES[kind])):
        raise ConfigError(f"module '{module}' defines no {kind} class {name!r}")
    if not is_trusted(cls.__module__, [module]):
        raise ConfigError(f"{kind} {name!r} from '{module}' is a class defined in {cls.__module__}")
    return cls
