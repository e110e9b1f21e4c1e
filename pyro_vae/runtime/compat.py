"""Every private torch and Pyro name pyro-vae uses, behind a feature check, each with a public fallback.

pyro-vae reaches into four private places for speed; a torch or Pyro release may rename any of them. Nothing
private is touched when this module loads, and a missing name never breaks an import: the feature that needs it
falls back to the public API (same numbers) or turns itself off with a reason.

* ``torch._foreach_add_`` and ``torch._fused_adam_``: Adam's step as its two kernel calls
  (:func:`~pyro_vae.inference.fast_svi.fused_adam_step`); without them, ``optimizer.step()``.
* the optimizer's hook dicts (``_optimizer_step_pre_hooks`` and the global ones): whether that shortcut would skip
  a hook; where this torch keeps them elsewhere, ``optimizer.step()``.
* ``torch.distributions.utils._standard_normal`` and ``MultivariateNormal._unbroadcasted_scale_tril``: a whole
  batch's latent noise in a job of several processes; without them, ``Tensor.normal_()`` and ``.scale_tril``
  (the same numbers).
* ``torch._inductor`` with ``make_fx``, and ``Trace_ELBO._get_traces``: the compiled training step; without
  them, the step is not compiled, with a note saying why.

``tests/test_compat.py`` removes each name and trains and evaluates through the fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributions.utils as distribution_utils
import torch.optim.optimizer as optimizer_module
from torch import Tensor


class Missing(RuntimeError):
    """A private name this torch or Pyro does not have (the feature needing it falls back)."""


def fused_adam_kernels() -> tuple[Callable, Callable] | None:
    """``(torch._foreach_add_, torch._fused_adam_)``, or ``None`` when this torch lacks either."""
    add, adam = getattr(torch, "_foreach_add_", None), getattr(torch, "_fused_adam_", None)
    return (add, adam) if add is not None and adam is not None else None


_OWN_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")
_GLOBAL_HOOKS = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")


def optimizer_may_have_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` would run hooks (its own or every optimizer's); ``True`` when this torch keeps
    them where this cannot look, so that the caller takes the public ``step()``."""
    if not all(hasattr(optimizer, name) for name in _OWN_HOOKS):
        return True
    if not all(hasattr(optimizer_module, name) for name in _GLOBAL_HOOKS):
        return True
    return any(getattr(optimizer, n) for n in _OWN_HOOKS) or any(getattr(optimizer_module, n) for n in _GLOBAL_HOOKS)


def standard_normal(shape: list[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Standard-normal noise of ``shape``: what ``Normal.rsample`` draws (``_standard_normal``), or the same draw
    through the public ``normal_`` (which is what ``_standard_normal`` calls outside tracing)."""
    private = getattr(distribution_utils, "_standard_normal", None)
    if private is not None:
        return private(shape, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device).normal_()


def scale_tril(fn: torch.distributions.MultivariateNormal) -> Tensor:
    """A multivariate normal's Cholesky factor without broadcasting it to the batch (the public ``scale_tril``,
    broadcast, has the same values)."""
    private = getattr(fn, "_unbroadcasted_scale_tril", None)
    return private if private is not None else fn.scale_tril


def inductor() -> tuple[Any, Callable, Callable]:
    """``(torch._inductor.config, compile_fx, make_fx)`` for the compiled step; :class:`Missing` if absent."""
    try:
        from torch._inductor import config
        from torch._inductor.compile_fx import compile_fx
        from torch.fx.experimental.proxy_tensor import make_fx
    except ImportError as exc:
        raise Missing(f"this torch has no inductor compiler ({exc})") from None
    return config, compile_fx, make_fx


def elbo_traces(elbo: Any, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Iterator[tuple]:
    """``(model_trace, guide_trace)`` per particle, log-densities computed, as ``Trace_ELBO`` scores them;
    :class:`Missing` if this Pyro's ``Trace_ELBO`` has no ``_get_traces`` with that signature."""
    get_traces = getattr(elbo, "_get_traces", None)
    if get_traces is None:
        raise Missing("this Pyro's Trace_ELBO has no _get_traces")
    try:
        return get_traces(model, guide, args, kwargs)
    except TypeError as exc:
        raise Missing(f"this Pyro's Trace_ELBO._get_traces takes other arguments ({exc})") from None
