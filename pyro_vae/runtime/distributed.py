r"""One job in many processes with ``torch.distributed``, as ``torchrun`` (or SLURM, Kubernetes) launches it.

A :class:`Group` is this process's place in the job: its ``rank`` among ``world`` processes. Outside a
launcher, or before a process group exists, it is :data:`SINGLE` and every method below is the identity, so
single-process code pays nothing.

* :func:`join` reads the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``) and starts the process group: NCCL when this process trains on a GPU, bound to
  ``cuda:LOCAL_RANK``; Gloo on the CPU. A caller that started the group itself gets it from :func:`current`.
* Work is split by :meth:`Group.rows`: contiguous, as even as possible, the first ranks taking one extra
  (``torch.tensor_split``'s rule), so a global batch of :math:`B` rows is the concatenation of the shards in
  rank order.
* The gradient of a sum over the global batch is the sum of the shards' gradients:

  .. math:: \nabla_\theta \sum_{i \in B} \ell_i(\theta) = \sum_{r} \nabla_\theta \sum_{i \in B_r} \ell_i(\theta),

  so one all-reduce (:meth:`Group.sum`) of the flattened gradients, with the loss appended, gives every rank
  the gradient one process would have computed, up to the order of the float additions. (DDP averages
  instead and leaves the sum to a loss scaled by the world size; the step is the same.)
* Collectives fail after ``$PYRO_VAE_DIST_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT_S`) without an
  answer, so a job whose peer hangs ends in bounded time; a peer that dies breaks its connections at once.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ConfigError, PyroVAEError

DEFAULT_TIMEOUT_S = 600
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
T = TypeVar("T")


class PeerError(PyroVAEError):
    """Another process of the job failed; this one stops with it."""


class CollectiveError(PeerError):
    """A collective did not complete: a process died (its connections broke) or stopped answering (timeout)."""


@contextmanager
def _collective(what: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as exc:  # Gloo and NCCL report a lost peer or a timeout as a RuntimeError
        raise CollectiveError(f"{what} failed: {_first_sentence(str(exc))}") from None


def _first_sentence(text: str) -> str:
    """``"[.../pair.cc:561] Connection closed by peer [127.0.0.1]:39576. This is typically..."`` -> the middle."""
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text.splitlines()[0] if text else "")
    return text.split(". ")[0][:200]


@dataclass(frozen=True)
class Group:
    """This process's ``rank`` among the ``world`` processes of the job (``local_rank``: among those on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and speaks."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` rows (``torch.tensor_split``'s split)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the ranks, in place."""
        if self.parallel:
            with _collective("all-reduce"):
                dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """Whether ``flag`` is true on any rank. ``device``: this process's device, where the backend reduces
        (NCCL only CUDA tensors: the process's own GPU; Gloo CPU tensors)."""
        if not self.parallel:
            return flag
        return bool(self.sum(torch.tensor([float(flag)], device=device)).item())

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (plain data, CPU tensors), in rank order, on every rank."""
        if not self.parallel:
            return [value]
        out: list[Any] = [None] * self.world
        with _collective("all-gather"):
            dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.parallel:
            return value
        box = [value if self.is_main else None]
        with _collective("broadcast"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers in every rank's ``module`` (as DDP does when it wraps a model)."""
        if self.parallel:
            with _collective("broadcast"):
                for tensor in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(tensor.data, src=0)

    def from_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` on rank 0 only (reading a file only it may have), its result on every rank; an input error
        there is raised on every rank."""
        with self.together():
            value = compute() if self.is_main else None
        return self.broadcast(value)

    @contextmanager
    def together(self) -> Iterator[None]:
        """Run a block on every rank and fail on every rank if it failed (an input error) on any: a rank whose
        data or folder is wrong stops the job at once instead of leaving the others waiting."""
        error: PyroVAEError | None = None
        try:
            yield
        except PyroVAEError as exc:
            error = exc
        if not self.parallel:
            if error is not None:
                raise error
            return
        failures = self.gather(None if error is None else str(error))
        if error is not None:
            raise error
        for rank, failure in enumerate(failures):
            if failure is not None:
                raise PeerError(f"rank {rank}: {failure}")


SINGLE = Group()


class Peers:
    """Where every process of ``group`` runs (host, pid), gathered once (a collective), to say which one died."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.where = group.gather((socket.gethostname(), os.getpid()))

    def lost(self) -> str:
        """The process that is gone, if it ran on this host (its pid no longer runs), else who it may be."""
        here = socket.gethostname()
        for rank, (host, pid) in enumerate(self.where):
            if host == here and rank != self.group.rank and not _alive(pid):
                return f"rank {rank} (pid {pid}) died"
        return "another process of the job failed or stopped answering"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` on this host still runs (a killed child not yet reaped is a zombie: gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def launched() -> bool:
    """Whether a launcher (torchrun, ``srun`` with its variables set) started this process as one of a job."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES)


def current() -> Group:
    """The running process group (started by :func:`join` or by the caller), else :data:`SINGLE`."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def timeout() -> timedelta:
    """How long a collective waits for the other ranks: ``$PYRO_VAE_DIST_TIMEOUT`` seconds or the default."""
    text = os.environ.get("PYRO_VAE_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"PYRO_VAE_DIST_TIMEOUT must be a positive number of seconds, got {text!r}")
    return timedelta(seconds=seconds)


def device_name(requested: str, group: Group) -> str:
    """The device of this rank for ``--device requested``: ``auto`` and ``cuda`` become ``cuda:LOCAL_RANK`` in a job
    (one GPU per process, as torchrun's ``--nproc-per-node`` counts them); ``cpu`` and ``cuda:N`` stay."""
    if not group.parallel or requested not in ("auto", "cuda"):
        return requested
    if requested == "auto" and not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{group.local_rank}"


def join(requested_device: str = "auto") -> Group:
    """Start the process group the launcher's environment describes (once), and return this process's place.

    Without a launcher this is :data:`SINGLE`. The backend follows the device: NCCL for CUDA (each process on
    ``cuda:LOCAL_RANK``), Gloo for the CPU."""
    if dist.is_available() and dist.is_initialized():
        return current()
    if not launched():
        return SINGLE
    if not dist.is_available():  # pragma: no cover - torch builds without distributed support
        raise ConfigError("this torch has no torch.distributed; run one process")
    rank, world, local = (
        _whole_number(name, "0" if name == "LOCAL_RANK" else None) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    )
    if not 0 <= rank < world or local < 0:
        raise ConfigError(f"the launcher's RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not fit together")
    name = device_name(requested_device, Group(rank, world, local))
    if name == "auto":  # a job of one process: device_name leaves auto and cuda as they are
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)  # (set_device and NCCL's device_id need an index)
    if device.type == "cuda":
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {rank} wants {device} but this node has {torch.cuda.device_count()} GPU(s): "
                "start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, timeout=timeout(), **kwargs)
    return current()


def _whole_number(name: str, default: str | None) -> int:
    text = os.environ.get(name, default)
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"the launcher's {name} must be a whole number, got {text!r}") from None


def leave() -> None:
    """End the process group :func:`join` started (a no-op without one), after every process has come this far: a
    process that tore its connections down while a peer still used them aborted the peer at exit ("terminate called
    without an active exception", seen once in 2026-12 on a job that had finished)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:  # a peer already gone: nothing left to wait for
            pass
        dist.destroy_process_group()
