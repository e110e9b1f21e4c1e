"""Choosing the torch device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """The device for ``name``, or a :class:`ConfigError` that says why it cannot be used."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA GPU is available (use --device cpu or auto)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    return device


def reset_peak_memory(device: torch.device) -> None:
    """Start counting :func:`peak_memory_mib` afresh (CUDA only: a process's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """The peak memory so far and what it measures: on CUDA the tensors allocated on ``device`` since
    :func:`reset_peak_memory`; on the CPU the whole process's peak resident set (imports and data included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA tensors"
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10), "process RSS"
