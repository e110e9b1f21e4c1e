r"""``CompiledELBO``: ``Trace_ELBO``'s loss and its gradients, for one batch shape, as one compiled graph.

For a guide whose latent sites are reparameterised, ``Trace_ELBO``'s loss of a batch with :math:`K` particles is

.. math::
    \mathcal L(\theta, \phi) = -\frac1K \sum_{k=1}^K \Big[\sum_{\text{model sites}} \log p_\theta
        - \sum_{\text{guide sites}} \log q_\phi\Big]_{z = \mu_\phi + \sigma_\phi \epsilon_k}

(each site's scaled ``log_prob_sum``), and its surrogate loss is the same expression, so
:math:`\nabla\mathcal L` is the gradient ``SVI`` takes. Pyro's Python runs once: ``make_fx`` records the
tensor operations of tracing model and guide, summing the sites and ``torch.autograd.grad`` (the backward's
operations included) as one function :math:`(\theta, \phi, x, \beta) \mapsto (\mathcal L, \nabla\mathcal L)`,
plus whether any of them is NaN or infinite.
Inductor, ``torch.compile``'s compiler, then turns its elementwise work, forward and backward, into a few fused C++ (or
Triton) loops around the matrix products, which stay the BLAS's.

The noise :math:`\epsilon` is drawn inside the graph by torch's own generator (inductor's ``fallback_random``),
so a step draws exactly what the eager step draws; only the rounding of the fused arithmetic differs.
What does not hold is what ``JitTrace_ELBO`` also needs: a static model structure, and no Python state
that changes between steps except through the arguments.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor

from ..runtime.compat import elbo_traces, inductor


def compile_disabled() -> str | None:
    """Why torch.compile is switched off in this process (``TORCH_COMPILE_DISABLE=1``), else ``None``."""
    if os.environ.get("TORCH_COMPILE_DISABLE") == "1":
        return "TORCH_COMPILE_DISABLE=1 is set"
    return None


class CompiledELBO:
    """The loss and gradients of ``Trace_ELBO(num_particles, vectorize_particles)`` for ``model``/``guide`` on
    arguments shaped like ``args`` (tensors), with respect to ``params``, compiled on construction (which
    draws as one step would: the caller keeps or restores the random state). ``seconds``: the compile time."""

    def __init__(
        self, model: Callable, guide: Callable, params: Sequence[Tensor], elbo: Trace_ELBO, args: tuple[Tensor, ...]
    ) -> None:
        inductor_config, compile_fx, make_fx = inductor()
        self.model, self.guide, self.params = model, guide, list(params)
        self._elbo = Trace_ELBO(
            num_particles=elbo.num_particles,
            vectorize_particles=elbo.vectorize_particles,
            max_plate_nesting=elbo.max_plate_nesting,
        )
        self.shapes = tuple(tuple(a.shape) for a in args)
        start = time.perf_counter()
        with pyro.validation_enabled(False):
            graph = make_fx(self._loss_and_grads)(self.params, *args)
        # Straight to inductor, the backend torch.compile would hand this graph to: the graph is already a pure
        # function of its tensor inputs, so dynamo's guards and frame handling (0.5 ms a call on CPU) buy nothing.
        # In this process (no pool of compile workers, whose CPU time --threads auto would take for another
        # program's); inductor warns that a CPU has no CUDA, and of its own deprecations.
        cpp_log = logging.getLogger("torch.utils.cpp_extension")
        level = cpp_log.level
        cpp_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), inductor_config.patch(fallback_random=True, compile_threads=1):
                warnings.simplefilter("ignore", FutureWarning)
                self._fn = compile_fx(graph, [[p.detach() for p in self.params], *args])
        finally:
            cpp_log.setLevel(level)
        self.seconds = time.perf_counter() - start

    def __call__(self, *args: Tensor) -> tuple[float, bool, list[Tensor | None]]:
        """The loss, whether it and every gradient are finite (the gradients are summed inside the graph, where
        they are made; both numbers cross to the host in one copy), and each parameter's gradient (``None`` for
        one the loss does not use)."""
        checks, grads = self._fn([p.detach() for p in self.params], *args)
        loss, total = checks.tolist()
        grads = iter(grads)
        return loss, math.isfinite(total), [next(grads) if used else None for used in self._used]

    def _loss_and_grads(self, params: list[Tensor], *args: Tensor) -> tuple[Tensor, list[Tensor]]:
        """What the graph computes, run once by ``make_fx`` on the real parameters: the loss and the loss plus every
        gradient's sum (NaN and infinities survive the sums: inf - inf is NaN), and the gradients."""
        loss = 0.0
        for model_trace, guide_trace in elbo_traces(self._elbo, self.model, self.guide, args, {}):
            elbo = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    elbo = elbo + site["log_prob_sum"]
            for name, site in guide_trace.nodes.items():
                if site["type"] == "sample" and not site["is_observed"]:
                    if not site["fn"].has_rsample:  # its score-function term would be missing
                        raise ValueError(f"the guide's site {name} is not reparameterised")
                    elbo = elbo - site["log_prob_sum"]
            loss = loss - elbo / self._elbo.num_particles
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        self._used = [g is not None for g in grads]
        grads = [g for g in grads if g is not None]
        loss = loss.detach()
        return torch.stack([loss, loss + sum(g.sum() for g in grads)]), grads
