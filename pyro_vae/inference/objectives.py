r"""The training objective: which Pyro ELBO, how many particles, and the KL weight β with its warm-up.

* ``trace``: ``Trace_ELBO`` (Monte Carlo KL); traced once per batch shape (``JitTrace_ELBO``) when ``jit``;
* ``meanfield``: ``TraceMeanField_ELBO`` (closed-form KL where torch has one, else Monte Carlo);
* ``iwae``: ``RenyiELBO(alpha=0)``, the importance-weighted bound with ``particles`` samples per image
  (Burda et al. 2016), particles vectorised;
* ``iwae-dreg``: the same bound and loss, its encoder gradient doubly reparameterised (Tucker et al. 2019:
  :math:`\tilde w_k^2` along the sampling path, no score term; :mod:`pyro_vae.inference.dreg`), which keeps the
  encoder's gradient informative as ``particles`` grows; for Gaussian guides (not ``iaf``, not M2's label).

With ``compile`` the ``trace`` objective's full batches run as one compiled graph
(:mod:`pyro_vae.inference.compiled_elbo`).

``particles`` > 1 averages that many samples (vectorised) for the ELBO objectives. β weights the KL
(β-VAE): :math:`\mathbb E_q[\log p(x \mid z)] - \beta\,\mathrm{KL}`, applied with ``poutine.scale`` on the
latent site (:mod:`pyro_vae.model.vae`). ``warmup_epochs`` ramps it linearly, step by step, from
``warmup_start`` to ``beta`` (reaching it at the last warm-up step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pyro.infer import ELBO, JitTrace_ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from ..errors import ConfigError
from ..options import Option, check_fields
from .dreg import DoublyReparameterizedIWAE

OBJECTIVES = ("trace", "meanfield", "iwae", "iwae-dreg")
IMPORTANCE_WEIGHTED = ("iwae", "iwae-dreg")  # the IWAE bound: no separate KL term to weight


@dataclass
class ObjectiveConfig:
    """What SVI maximises."""

    KEY: ClassVar[str] = "objective"
    kind: Annotated[
        Literal[OBJECTIVES],
        Option(
            "trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (closed-form KL where one exists); "
            "iwae: RenyiELBO(alpha=0), the IWAE bound with --particles samples; iwae-dreg: the same bound with the "
            "doubly reparameterised encoder gradient (Tucker et al. 2019; Gaussian guides)",
            flag="--objective",
        ),
    ] = "trace"
    particles: Annotated[int, Option("samples per image in the objective (vectorised)", min=1, max=100_000)] = 1
    beta: Annotated[float, Option("KL weight (beta-VAE); the target of the warm-up", min=0, min_open=True)] = 1.0
    warmup_epochs: Annotated[
        int, Option("ramp the KL weight linearly from --warmup-start to --beta over N epochs", min=0)
    ] = 0
    warmup_start: Annotated[float, Option("KL weight the warm-up starts from", min=0)] = 0.0
    jit: Annotated[
        bool,
        Option(
            "--objective trace: trace the ELBO once per batch shape and replay it (JitTrace_ELBO); falls back to "
            "eager Pyro, with a note, if the model cannot be traced"
        ),
    ] = True
    compile: Annotated[
        bool,
        Option(
            "--objective trace: compile the full batches' loss and gradients into one graph (torch.compile's "
            "inductor; in a torchrun job, one per process); it rounds differently, and --no-compile gives the "
            "uncompiled step's numbers bit for bit. Falls back, with a note, where compiling fails",
            resumable=True,
        ),
    ] = True

    def validate(self) -> None:
        check_fields(self)
        if self.warmup_start and not self.warmup_epochs:
            raise ConfigError("objective.warmup_start (--warmup-start) needs objective.warmup_epochs (--warmup-epochs)")
        if self.warmup_start > self.beta:
            raise ConfigError(f"objective.warmup_start (--warmup-start) {self.warmup_start} is above beta {self.beta}")
        if self.kind in IMPORTANCE_WEIGHTED and (self.beta != 1 or self.warmup_epochs):
            raise ConfigError(
                f"the {self.kind} objective is a bound on log p(x) with no separate KL term: "
                "--beta and --warmup-epochs apply to the trace and meanfield objectives"
            )

    def kl_weight(self, step: int, steps_per_epoch: int) -> float:
        """β at (0-based) optimisation ``step``: linear warm-up over ``warmup_epochs``, then ``beta``."""
        warmup_steps = self.warmup_epochs * steps_per_epoch
        if step + 1 >= warmup_steps:
            return self.beta
        return self.warmup_start + (self.beta - self.warmup_start) * (step + 1) / warmup_steps

    def make(self) -> ELBO:
        """The Pyro loss for SVI."""
        if self.kind == "iwae-dreg":
            return DoublyReparameterizedIWAE(num_particles=self.particles, max_plate_nesting=1)
        vectorize = self.particles > 1 or self.kind == "iwae"
        kwargs = {"num_particles": self.particles, "vectorize_particles": vectorize, "max_plate_nesting": 1}
        if self.kind == "iwae":
            return RenyiELBO(alpha=0, **kwargs)
        if self.kind == "meanfield":  # (JitTraceMeanField_ELBO re-traces every step in pyro 1.9.2)
            return TraceMeanField_ELBO(**kwargs)
        return JitTrace_ELBO(ignore_jit_warnings=True, **kwargs) if self.jit else Trace_ELBO(**kwargs)
