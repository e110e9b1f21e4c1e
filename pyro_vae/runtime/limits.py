r"""Refusing what cannot fit, before it is allocated.

An impossible size (``--hidden 10000000``, ``--latent-dim 100000000``, a million-particle batch) would
otherwise reach the allocator and end in a traceback, or in the kernel's OOM killer after minutes of
swapping. So the memory a job needs is estimated first and compared with what the device has free:

* **the model**: built once with its large tensors on PyTorch's ``meta`` device, which records shapes
  and allocates nothing, so its parameter and buffer bytes are exact for any network or component;
  training holds four copies (weights, gradients, Adam's two moments);
* **a training step**: the activations that autograd keeps, about
  :math:`3 \cdot 4\,\mathrm{B} \cdot \text{particles} \cdot \text{batch} \cdot
  (D\,(1 + P_\text{lik}) + 2 \sum \text{hidden} + P_\text{guide} + d)` for ``D`` pixels,
  ``P_lik`` likelihood and ``P_guide`` guide parameters per image and latent size ``d``
  (forward values, their gradients and the optimiser's temporaries);
* pictures and arrays a command writes, from their shape.

What can be done in pieces without changing the result is chunked instead (evaluation particles,
``sample`` outputs); what cannot gets one line with the size asked for, the size free and what to lower.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ResourceError

USABLE_FRACTION = 0.9  # leave room for the interpreter, the data and the allocator's slack
TRAINING_COPIES = 4  # weights, gradients, Adam's first and second moments


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory free for new tensors on ``device``: CUDA's free memory, or on the CPU the smaller of the
    kernel's ``MemAvailable`` and what the process's cgroup still allows."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    limits = [_meminfo_available(), _cgroup_available()]
    known = [x for x in limits if x is not None]
    if known:
        return min(known)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # pragma: no cover - not Linux


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def check_fits(nbytes: float, what: str, lower: str, device: torch.device | str = "cpu") -> None:
    """Raise :class:`ResourceError` if ``nbytes`` exceed the usable free memory of ``device``."""
    free = available_bytes(device)
    if nbytes > USABLE_FRACTION * free:
        where = "this machine" if torch.device(device).type == "cpu" else str(device)
        raise ResourceError(f"{what} needs {human_bytes(nbytes)} but {where} has {human_bytes(free)} free; {lower}")


def check_disk(nbytes: float, path: str | Path, what: str, lower: str) -> None:
    """Raise :class:`ResourceError` if the file system holding ``path`` has less than ``nbytes`` free."""
    import shutil

    free = shutil.disk_usage(Path(path).parent if not Path(path).is_dir() else path).free
    if nbytes > free:
        raise ResourceError(
            f"{what} needs {human_bytes(nbytes)} but {Path(path).parent} has {human_bytes(free)} free; {lower}"
        )


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Tensor factories asked for ``LARGE`` elements or more, with no device given, make meta tensors:
    the big weights cost nothing, while the small tensors a constructor computes with (Pyro's flows call
    ``.item()`` on theirs, which a meta tensor cannot do) stay real."""

    LARGE = 1 << 16

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FACTORIES and kwargs.get("device") is None and _numel(args, kwargs) >= self.LARGE:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


_FACTORIES = {
    torch.empty,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.empty_strided,
}


def _numel(args: tuple, kwargs: dict) -> int:
    size = kwargs.get("size", args[0] if args else ())
    if isinstance(size, int):  # torch.zeros(3, 4): the sizes are the leading int arguments
        size = [a for a in args if isinstance(a, int)]
    try:
        return math.prod(int(n) for n in size)
    except (TypeError, ValueError):
        return 0


def meta_module(make: Callable[[], nn.Module]) -> nn.Module | None:
    """``make()`` with its large tensors on the meta device (shapes only, nothing big allocated, the
    random state untouched); ``None`` if the module cannot be built that way (then no estimate is made)."""
    with torch.random.fork_rng(devices=[]), _LargeTensorsOnMeta():
        try:
            return make()
        except Exception:  # a constructor that computes with its large tensors' values
            return None


def tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def step_activation_bytes(vae: nn.Module, data_dim: int, batch_size: int, particles: int) -> int:
    """The activations one training step keeps (see the module docstring), for a :class:`~pyro_vae.model.vae.VAE`."""
    net = vae.net_config
    per_image = (
        data_dim * (1 + vae.likelihood.num_params) + 2 * sum(net.hidden) + vae.guide_family.num_params + vae.latent_dim
    )
    return 3 * 4 * particles * batch_size * per_image


def check_vae_fits(make_vae: Callable[[], nn.Module], device: torch.device | str, *, training: bool = False) -> None:
    """Refuse a model whose weights (times four when ``training``) cannot fit on ``device``, before any
    of it is allocated; ``make_vae`` is called with its large tensors on the meta device."""
    vae = meta_module(make_vae)
    if vae is None:
        return
    weights = tensor_bytes(vae)
    check_fits(
        (TRAINING_COPIES if training else 1) * weights,
        f"the model ({human_bytes(weights)} of parameters)",
        "lower --hidden, --latent-dim or the components' sizes "
        "(--prior-num-components, --prior-num-flows, --guide-num-flows)",
        device,
    )


def check_step_fits(vae: nn.Module, data_dim: int, batch_size: int, particles: int, device: torch.device) -> None:
    """Refuse a training step whose activations, gradients and Adam state cannot fit beside the
    (already allocated) weights of ``vae``."""
    need = (TRAINING_COPIES - 1) * tensor_bytes(vae) + step_activation_bytes(vae, data_dim, batch_size, particles)
    check_fits(
        need,
        f"a training step of {batch_size} images x {particles} particles",
        "lower --batch-size or --particles",
        device,
    )


def chunk_size(total: int, per_item_bytes: float, budget_bytes: float) -> int:
    """How many of ``total`` items to process at once so that one piece stays within ``budget_bytes``."""
    return max(1, min(total, math.floor(budget_bytes / max(per_item_bytes, 1))))
