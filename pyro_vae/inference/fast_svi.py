r"""``FastSVI``: the update ``pyro.infer.SVI.step`` makes, without its per-step bookkeeping.

Each step is still a Pyro ELBO: ``loss.loss_and_grads(model, guide, *args)`` traces the model and the
guide, forms the (surrogate) objective and back-propagates it, so the loss value and the gradients are
exactly those of ``Trace_ELBO`` (or whichever ELBO is passed). Then Adam updates the parameters:

.. math::
    \theta_{t+1} = \mathrm{Adam}\big(\theta_t,\ \nabla_\theta\, \mathcal L_{\text{ELBO}}(\theta_t)\big)

What differs from ``SVI(model, guide, pyro.optim.Adam(...), loss)`` is only overhead (on CPU, batch
128, the reference MLP (400 hidden units, z = 20): stock SVI trains at 0.71x a plain PyTorch loop, this at 0.93x
with the eager ``Trace_ELBO`` and about 1.05x with ``JitTrace_ELBO``; see ``benchmarks/RESULTS.md``):

* One fused ``torch.optim.Adam`` over all parameters instead of ``pyro.optim.Adam``, which keeps one
  optimiser per parameter and looks each one up by name every step. Adam is elementwise, so the update
  is the same up to float rounding (the fused kernel orders its arithmetic differently).
* The parameters are the model's ``nn.Module`` parameters, given up front; ``SVI`` instead wraps every
  step in ``poutine.trace(param_only=True)`` to collect them. The first step checks, once, that the
  trace registers no parameter outside that list.
* Pyro's and ``torch.distributions``' argument and support checks run on the first step only. They check
  the model's wiring, which does not change between steps; the data are checked once, before training,
  by the likelihood's ``check_data``, and each step checks its loss and gradients for NaN/inf before
  Adam uses them. On CPU the validation checks cost 0.5 ms of a 5.5 ms step.
* In a job of several processes (:mod:`pyro_vae.runtime.distributed`) each computes the ELBO of its rows of the
  global batch, with the latent noise those rows get in the whole batch (:mod:`pyro_vae.inference.global_noise`);
  one all-reduce sums the gradients and the loss, and every process takes the same Adam step.
* With ``JitTrace_ELBO``, the Python of Pyro's tracing (about 0.5 ms a step on CPU) runs only when a
  new batch shape is traced. Pyro's rules for jit apply: static model structure, no dependence on
  Python state outside the arguments. Each new trace is checked against the eager ``Trace_ELBO`` on
  the same draws; a trace that fails or disagrees is dropped for the eager loss, with the reason.
* With ``compile`` (a ``Trace_ELBO`` loss), the batches of the first shape (the full batches)
  go through :class:`~pyro_vae.inference.compiled_elbo.CompiledELBO`: the loss and its gradients as one
  graph compiled by inductor (``torch.compile``'s compiler). It draws what the eager step draws and rounds
  differently. Its loss and gradients are checked once against the eager ``Trace_ELBO``'s on the same draws;
  if compiling fails or they disagree, FastSVI says why in ``compile_disabled_reason`` and carries on as
  without it. In a job every process compiles its own graph, for its rows of the full batch (the whole
  batch's noise drawn inside it, as :class:`GlobalBatchNoise` draws it eagerly); the all-reduce runs between
  the graph and Adam, so the step is the eager job's up to rounding.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO, JitTrace_ELBO, Trace_ELBO
from torch import Tensor, nn

from ..errors import ConfigError, TrainingError, first_line
from ..runtime.compat import fused_adam_kernels, optimizer_may_have_hooks
from ..runtime.distributed import SINGLE, Group
from .compiled_elbo import CompiledELBO, compile_disabled
from .global_noise import GlobalBatchNoise

Shard = tuple[slice, int]  # this process's rows of a global batch, and the global batch's size


def make_adam(params: Iterable[nn.Parameter], lr: float, eps: float = 1e-8) -> torch.optim.Adam:
    """One Adam over all ``params`` with the fused kernel (CPU and CUDA): on CPU it updates the MLP's
    650k parameters in 0.19 ms, against 0.57-0.95 ms for the per-tensor and multi-tensor kernels."""
    return torch.optim.Adam(list(params), lr=lr, eps=eps, fused=True)


def fused_adam_step(optimizer: torch.optim.Optimizer) -> bool:
    """``optimizer.step()`` of a fused Adam with plain settings (``make_adam``'s), done as the two kernel calls it
    makes, without ``torch.optim``'s per-step bookkeeping (hooks, profiling marks, regrouping the tensors: 0.3 ms
    of a 6 ms CPU step). The same kernels with the same arguments, so the same numbers (tested). ``False``, with
    nothing done, where that does not hold: another optimizer or setting, hooks, or no state yet (the first step)."""
    groups = optimizer.param_groups
    if not isinstance(optimizer, torch.optim.Adam) or len(groups) != 1 or optimizer_may_have_hooks(optimizer):
        return False
    group = groups[0]
    plain = {"fused": True, "amsgrad": False, "maximize": False, "weight_decay": 0, "differentiable": False}
    if any(group.get(key) != value for key, value in plain.items()) or isinstance(group["lr"], Tensor):
        return False
    params = [p for p in group["params"] if p.grad is not None]
    states = [optimizer.state.get(p) for p in params]
    if not params or not all(states) or len({(p.device, p.dtype) for p in params}) != 1:
        return False
    kernels = fused_adam_kernels()
    if kernels is None:
        return False
    foreach_add, fused_adam = kernels
    steps = [state["step"] for state in states]
    foreach_add(steps, 1)
    beta1, beta2 = group["betas"]
    fused_adam(
        params,
        [p.grad for p in params],
        [state["exp_avg"] for state in states],
        [state["exp_avg_sq"] for state in states],
        [],
        steps,
        amsgrad=False,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=0.0,
        eps=group["eps"],
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )
    return True


class FastSVI:
    """``SVI.step`` semantics with one torch optimizer; Pyro validation (if enabled) on the first step only.

    With a ``JitTrace_ELBO`` loss the ELBO's computation is traced once per shape of the tensor arguments
    (the last, smaller batch of an epoch gets its own trace) and replayed without Python; other arguments
    are passed as tensors so that a changing KL weight does not bake into the trace. Before each new
    trace is used, the same batch is scored by the eager ``Trace_ELBO`` on the same random draws; if
    tracing fails or the two disagree, FastSVI says why in ``jit_disabled_reason`` and carries on
    eagerly. The first step also runs the eager loss once with validation (as in every mode).
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optimizer: torch.optim.Optimizer,
        loss: ELBO,
        group: Group = SINGLE,
        compile: bool = False,
    ) -> None:
        self.model, self.guide, self.optimizer, self.loss, self.group = model, guide, optimizer, loss, group
        self.stopping = False  # (in a job) whether any process asked to stop at the last step
        self._param_list = [p for group in optimizer.param_groups for p in group["params"]]
        self.params = set(self._param_list)
        self.steps = 0
        self.jit = isinstance(loss, JitTrace_ELBO)
        self.jit_disabled_reason: str | None = None
        self._traced_shapes: set[tuple] = set()
        # The eager twin of the loss: the reference each trace is checked against, and the fallback.
        self._eager = (
            Trace_ELBO(
                num_particles=loss.num_particles,
                vectorize_particles=loss.vectorize_particles,
                max_plate_nesting=loss.max_plate_nesting,
            )
            if self.jit
            else loss
        )
        # Stable wrappers (the jit cache is keyed by their ids) that drop the trace keys before the model sees them.
        self._model = lambda *args, _shapes=None, _shard=None, **kwargs: model(*args, **kwargs)
        self._guide = lambda *args, _shapes=None, _shard=None, **kwargs: guide(*args, **kwargs)
        self.compiled: CompiledELBO | None = None
        self.compile_disabled_reason: str | None = None
        self._compile = compile and type(loss) in (Trace_ELBO, JitTrace_ELBO)  # (to be tried, on the first step)
        self._compiled_for: tuple | None = None  # the argument shapes and rows the graph was compiled for
        # In a job: the most processes that ran their compiled graph in one step (a last, smaller batch runs none).
        self.compiled_processes = 0
        self._ran_graph = False  # whether the compiled graph made this step's loss and gradients

    def step(self, *args, shard: Shard | None = None, stop: bool = False, **kwargs) -> float:
        """One gradient step on the loss; returns the loss estimate (the negative ELBO, summed over the batch).

        In a job, ``args`` hold this process's rows ``shard[0]`` of a global batch of ``shard[1]`` images; the loss
        and gradients returned are the global batch's, and :attr:`stopping` says whether any process passed ``stop``.
        """
        checked = False  # whether the loss and gradients are known to be finite
        self._ran_graph = False
        if shard is not None and shard[0].stop == shard[0].start:  # no rows here (the end of an epoch)
            loss = 0.0
        else:
            if self.steps == 0:
                self._check_parameters(*args, **kwargs)
            with GlobalBatchNoise(*shard) if shard is not None else nullcontext():
                loss, checked = self._loss_and_grads(args, kwargs, shard)
        if self.group.parallel:
            loss = self._sum_over_processes(loss, stop, self._ran_graph)
        if not checked:
            self._check_finite(loss)
        if not fused_adam_step(self.optimizer):
            self.optimizer.step()
        for p in self._param_list:  # (optimizer.zero_grad(set_to_none=True) without its 0.1 ms of bookkeeping)
            p.grad = None
        self.steps += 1
        return loss

    def _loss_and_grads(self, args: tuple, kwargs: dict, shard: Shard | None) -> tuple[float, bool]:
        """The loss, with the gradients in ``p.grad``, and whether they are known to be finite (the compiled
        graph answers that; the others are checked by :meth:`_check_finite`)."""
        if self._compile and not kwargs:
            tensors = _as_tensors(args)
            # A job's graph holds its rows of the whole batch's noise: the rows are part of what it is for.
            key = (tuple(tuple(a.shape) for a in tensors), _rows_key(shard))
            if self.compiled is None and self.compile_disabled_reason is None:
                self._compile_and_check(tensors, key)
            if self.compiled is not None and self._compiled_for == key:
                loss, finite, grads = self.compiled(*tensors)
                for p, g in zip(self._param_list, grads):
                    p.grad = g
                self._ran_graph = True
                # In a job these are this process's share: finiteness is checked once summed over the processes.
                return loss, finite and not self.group.parallel
        if self.jit:
            return self._jit_loss_and_grads(args, kwargs, shard), False
        with pyro.validation_enabled(False):
            return self._eager.loss_and_grads(self.model, self.guide, *args, **kwargs), False

    def _compile_and_check(self, args: tuple[Tensor, ...], key: tuple) -> None:
        """Compile for the shape of ``args`` (and, in a job, the rows ``key`` names: the step's
        :class:`GlobalBatchNoise` is active, so the graph records the whole batch's draw), then score them compiled
        and eager on the same draws: the loss and every gradient must agree to float32 rounding. The random state
        is left as it was."""
        rng = _rng_state()
        self.compile_disabled_reason = compile_disabled()
        if self.compile_disabled_reason:
            return
        try:
            compiled = CompiledELBO(self._model, self._guide, self._param_list, self._eager, args)
        except Exception as exc:  # anything make_fx or inductor cannot handle (no C++ compiler, say)
            _set_rng_state(rng)
            self.compile_disabled_reason = f"compiling failed ({type(exc).__name__}: {first_line(exc)})"
            return
        _set_rng_state(rng)
        loss, _, grads = compiled(*args)
        _set_rng_state(rng)
        with pyro.validation_enabled(False):
            eager = self._eager.loss_and_grads(self._model, self._guide, *args)
        _set_rng_state(rng)
        disagree = _disagreement(loss, grads, eager, self._param_list)
        self.optimizer.zero_grad(set_to_none=True)
        if disagree:
            self.compile_disabled_reason = f"the compiled step disagrees with the eager Trace_ELBO: {disagree}"
        else:
            self.compiled, self._compiled_for = compiled, key

    def _sum_over_processes(self, loss: float, stop: bool, compiled: bool) -> float:
        """Every process's gradients, loss, stop request and whether its compiled graph made this step, summed in
        one all-reduce of one flat buffer."""
        grads = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in self._param_list]
        flags = torch.tensor([loss, float(stop), float(compiled)], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([*grads, flags])
        self.group.sum(flat)
        offset = 0
        for p in self._param_list:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        total, stops, compiled_processes = flat[offset:].tolist()
        self.stopping = stops > 0
        self.compiled_processes = max(self.compiled_processes, round(compiled_processes))
        return total

    def _check_finite(self, loss: float) -> None:
        """Raise :class:`TrainingError` (gradients left in place, parameters untouched) if the loss or any
        gradient is NaN or infinite. The gradients are summed per tensor and the sums added: NaN and
        infinities survive both (inf - inf is NaN), so one scalar and one device sync answer for all."""
        if not math.isfinite(loss):
            raise TrainingError(f"the loss became {loss}")
        grads = [p.grad for p in self._param_list if p.grad is not None]
        if grads and not bool(torch.stack([g.sum() for g in grads]).sum().isfinite()):
            raise TrainingError(f"a gradient became NaN or infinite (loss {loss:.6g})")

    def _check_parameters(self, *args, **kwargs) -> None:
        """Once, with validation as configured (on by default): every parameter is the optimizer's.
        The random state is restored afterwards, so the check draws nothing from the training stream."""
        rng = _rng_state()
        with poutine.trace(param_only=True) as capture, torch.no_grad():
            self._eager.loss(self.model, self.guide, *args, **kwargs)
        _set_rng_state(rng)
        sites = capture.trace.nodes.items()
        unknown = [name for name, site in sites if site["value"].unconstrained() not in self.params]
        if unknown:
            raise ConfigError(
                f"the model registers parameters the optimizer does not hold: {', '.join(unknown)}; "
                "make them nn.Parameters of the networks or components"
            )

    def _jit_loss_and_grads(self, args: tuple, kwargs: dict, shard: Shard | None) -> float:
        args = _as_tensors(args)
        shapes = tuple(tuple(a.shape) for a in args)
        if shard is not None:  # where the rows sit in the global batch is baked into the trace's noise draw
            kwargs = {**kwargs, "_shard": _rows_key(shard)}
            shapes = (*shapes, kwargs["_shard"])
        if shapes not in self._traced_shapes:
            return self._trace_and_check(args, kwargs, shapes)
        with pyro.validation_enabled(False):
            return self.loss.loss_and_grads(self._model, self._guide, *args, _shapes=shapes, **kwargs)

    def _trace_and_check(self, args: tuple, kwargs: dict, shapes: tuple) -> float:
        """Trace for a new shape, then score this batch twice on the same draws, traced and eager."""
        rng = _rng_state()
        with pyro.validation_enabled(False):
            try:  # tracing runs the model a few times; its losses and gradients are thrown away
                with warnings.catch_warnings():  # torch >= 2.9 marks torch.jit.trace as deprecated
                    warnings.simplefilter("ignore", FutureWarning)
                    self.loss.loss_and_grads(self._model, self._guide, *args, _shapes=shapes, **kwargs)
            except Exception as exc:  # anything torch.jit.trace cannot handle
                reason = f"tracing failed ({type(exc).__name__}: {first_line(exc)})"
                return self._fall_back(reason, rng, args, kwargs)
            self.optimizer.zero_grad(set_to_none=True)
            _set_rng_state(rng)
            with torch.no_grad():
                eager = self._eager.loss(self._model, self._guide, *args, **kwargs)
            _set_rng_state(rng)
            traced = self.loss.loss_and_grads(self._model, self._guide, *args, _shapes=shapes, **kwargs)
        if not abs(traced - eager) <= 1e-3 + 1e-5 * abs(eager):
            reason = f"the traced loss {traced:.6g} differs from the eager {eager:.6g}"
            return self._fall_back(reason, rng, args, kwargs)
        self._traced_shapes.add(shapes)
        return traced

    def _fall_back(self, reason: str, rng: dict, args: tuple, kwargs: dict) -> float:
        self.jit, self.jit_disabled_reason = False, reason
        self.optimizer.zero_grad(set_to_none=True)
        _set_rng_state(rng)
        with pyro.validation_enabled(False):
            return self._eager.loss_and_grads(self._model, self._guide, *args, **kwargs)


def _rows_key(shard: Shard | None) -> tuple[int, int, int] | None:
    """This process's rows of the global batch and its size, as a key of what a trace or graph was made for."""
    return None if shard is None else (shard[0].start, shard[0].stop, shard[1])


def _as_tensors(args: tuple) -> tuple[Tensor, ...]:
    """Numbers (the KL weight) as tensors on the data's device, so that a changing value does not bake into a trace."""
    device = next(a.device for a in args if isinstance(a, Tensor))
    return tuple(
        a if isinstance(a, Tensor) else torch.as_tensor(a, dtype=torch.get_default_dtype(), device=device) for a in args
    )


def _disagreement(loss: float, grads: list[Tensor | None], eager: float, params: list[Tensor]) -> str | None:
    """How a compiled loss and gradients differ from the eager ones (in ``p.grad``) beyond float32 rounding."""
    if not abs(loss - eager) <= 1e-3 + 1e-5 * abs(eager):
        return f"loss {loss:.6g} against {eager:.6g}"
    for i, (p, g) in enumerate(zip(params, grads)):
        reference = p.grad if p.grad is not None else torch.zeros_like(p)
        got = g if g is not None else torch.zeros_like(p)
        scale = float(reference.abs().max()) + 1e-6
        if not float((got - reference).abs().max()) <= 1e-3 * scale:
            return f"gradient of parameter {i} {tuple(p.shape)} off by {float((got - reference).abs().max()):.3g}"
    return None


def _rng_state() -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
