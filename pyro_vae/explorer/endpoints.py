"""The explorer's endpoints: each request's parameters checked, then answered from a :class:`LatentSpace`.

Contract: :meth:`Endpoints.answer` takes an endpoint's name and its parameters (from a query string, every value a
string, or from a JSON object) and returns a :class:`Reply`: JSON (``info``, ``points``, ``encode``) or a PNG
(``image``, ``decode``, ``traverse``, ``interpolate``, ``sample``; a strip of tiles side by side, see
:func:`.png.png_strip`). A request it cannot answer as asked (an unknown endpoint or parameter, a missing or
malformed value, an index, coordinate, class, layer, strip length or latent value out of range) raises
:class:`RequestError` with a one-line message and a 4xx status; nothing is computed then. One request computes at a
time (a lock), so concurrent requests never share the model or the torch RNG mid-computation.

Parameters and limits (``d``: the latent vector's size, ``n``: the points, ``K``: the model's classes):

* ``info``: none. ``points``: ``view`` (``pca``, ``coords`` or ``label``), ``x``, ``y`` (coordinates 0..d-1).
* ``image``, ``encode``: ``index`` 0..n-1.
* ``decode``: ``z`` (d numbers), ``label`` (class 0..K-1 or its name; required by a model with labels, refused by
  one without), ``layer`` (1..layers, default 1: the layers below it follow from it).
* ``traverse``: ``z``, ``coordinate`` 0..d-1, ``steps`` 2..32 (default 11), ``label``.
* ``interpolate``: ``a``, ``b`` indices, ``steps`` 2..32 (default 10), ``mode`` (``linear`` or ``spherical``),
  ``label`` (default: ``a``'s class).
* ``sample``: ``n`` 1..32 (default 16), ``seed`` 0..2**32-1 (default 0), ``label`` (default: the classes in turn).

Each latent value must be finite and within the slider's range and the split's means widened by the slider's width
(:func:`.latent_space.finite_span`); the accepted bounds are in ``info``.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..data.sources import class_name
from .latent_space import LatentSpace, finite_span, layer_bounds
from .png import png_strip

MAX_LEGEND = 1000  # label values in the legend at most
MAX_STRIP = 32  # decodings in one strip (traverse, interpolate, sample)
DEFAULT_STEPS = {"traverse": 11, "interpolate": 10}
DEFAULT_SAMPLES = 16
MAX_SEED = 2**32 - 1
JSON_TYPE = "application/json"
PNG_TYPE = "image/png"
WHOLE_NUMBER = re.compile(r"-?[0-9]{1,20}")


class RequestError(Exception):
    """A request the explorer cannot answer as asked: a one-line message and its HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status


@dataclass(frozen=True)
class Reply:
    """An answer: HTTP status, content type and body."""

    status: int
    content_type: str
    body: bytes


def json_reply(value: Any) -> Reply:
    return Reply(200, JSON_TYPE, json.dumps(value, allow_nan=False, separators=(",", ":")).encode())


def png_reply(pictures: torch.Tensor) -> Reply:
    return Reply(200, PNG_TYPE, png_strip(pictures))


class Params:
    """A request's parameters by name, each read once through a checking accessor."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def raw(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name, default)
        if value is None:
            raise RequestError(f"{name}: missing")
        return value

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int:
        value = self.raw(name, default)
        if isinstance(value, str) and WHOLE_NUMBER.fullmatch(value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise RequestError(f"{name}: {_shown(value)} is not a whole number")
        if not low <= value <= high:
            raise RequestError(f"{name}: {value} is out of range {low}..{high}")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self.raw(name, default)
        if value not in options:
            raise RequestError(f"{name}: {_shown(value)} is not one of {', '.join(options)}")
        return value

    def vector(self, name: str, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        value = self.raw(name)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or len(items) != len(low):
            raise RequestError(f"{name}: expected {len(low)} numbers (a JSON list or comma-separated)")
        numbers = [_number(name, i, item) for i, item in enumerate(items)]
        for i, v in enumerate(numbers):
            if not float(low[i]) <= v <= float(high[i]):
                bounds = f"{float(low[i]):.3g}..{float(high[i]):.3g}"
                raise RequestError(f"{name}[{i}] = {v:g} is outside the accepted {bounds}")
        return torch.tensor(numbers, dtype=torch.float32)


def _number(name: str, i: int, item: Any) -> float:
    try:
        value = float(item) if isinstance(item, (int, float, str)) and not isinstance(item, bool) else math.nan
    except (ValueError, OverflowError):  # (a JSON integer of 400 digits is no float)
        value = math.nan
    if not math.isfinite(value):
        raise RequestError(f"{name}[{i}]: {_shown(item)} is not a finite number")
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Endpoints:
    """The endpoints of one :class:`LatentSpace` (see the module's contract)."""

    def __init__(self, space: LatentSpace) -> None:
        self.space = space
        self.lowest, self.highest = finite_span(space.low, space.high, space.means)
        self.lock = threading.Lock()
        self.routes: dict[str, tuple[Callable[[Params], Reply], tuple[str, ...]]] = {
            "info": (self.info, ()),
            "points": (self.points, ("view", "x", "y")),
            "image": (self.image, ("index",)),
            "encode": (self.encode, ("index",)),
            "decode": (self.decode, ("z", "label", "layer")),
            "traverse": (self.traverse, ("z", "coordinate", "steps", "label")),
            "interpolate": (self.interpolate, ("a", "b", "steps", "mode", "label")),
            "sample": (self.sample, ("n", "seed", "label")),
        }

    def answer(self, name: str, values: dict[str, Any]) -> Reply:
        """The reply of endpoint ``name`` to ``values``; :class:`RequestError` when it cannot answer."""
        if name not in self.routes:
            raise RequestError(f"no endpoint /api/{name} (there are {', '.join(self.routes)})", 404)
        handler, allowed = self.routes[name]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
            raise RequestError(f"/api/{name}: unknown parameter {unknown[0]!r} ({takes})")
        with self.lock:
            return handler(Params(values))

    # -- reading parameters ----------------------------------------------------------------------------------------

    @property
    def _d(self) -> int:
        return self.space.means.shape[1]

    def _index(self, params: Params, name: str = "index") -> int:
        return params.integer(name, 0, self.space.count - 1)

    def _label(self, params: Params, required: bool) -> int | None:
        value = params.values.get("label")
        classes = self.space.classes
        if not self.space.has_classes:
            if value is not None:
                raise RequestError(f"label: this model has no classes (it is {self.space.vae.structure})")
            return None
        if value is None:
            if required:
                raise RequestError(f"label: this model decodes a class; give 0..{len(classes) - 1} or a class name")
            return None
        if isinstance(value, str) and value in classes:
            return classes.index(value)
        return params.integer("label", 0, len(classes) - 1)

    def _z(self, params: Params) -> torch.Tensor:
        return params.vector("z", self.lowest, self.highest)

    # -- the endpoints ---------------------------------------------------------------------------------------------

    def info(self, params: Params) -> Reply:
        space, d = self.space, self._d
        layers = layer_bounds(space.latent_dims)
        return json_reply(
            {
                "description": space.description,
                "count": space.count,
                "image_shape": list(space.vae.image_shape),
                "structure": space.vae.structure,
                "latent_dims": list(space.latent_dims),
                "layers": [{"name": f"z{i + 1}", "start": s, "size": n} for i, (s, n) in enumerate(layers)],
                "coordinates": space.coordinate_names(),
                "classes": space.classes,
                "labelled": space.labels is not None,
                "legend": self._legend(),
                "slider": {"low": space.low.tolist(), "high": space.high.tolist()},
                "accepted": {"low": self.lowest.tolist(), "high": self.highest.tolist()},
                "views": ["pca", "coords"] if d >= 2 else ["label"],
                "view": "pca" if d > 2 else ("coords" if d == 2 else "label"),
                "limits": {"max_strip": MAX_STRIP, "max_seed": MAX_SEED},
                "defaults": {**DEFAULT_STEPS, "samples": DEFAULT_SAMPLES},
            }
        )

    def _legend(self) -> list[str]:
        """The name of each label value 0..max among the split's labels (empty without labels, or when the labels run
        past ``MAX_LEGEND``: ids rather than classes, which the hover shows as they are)."""
        labels = self.space.labels
        if labels is None or labels.numel() == 0 or int(labels.max()) >= MAX_LEGEND or int(labels.min()) < 0:
            return []
        return [class_name(self.space.class_names, i) for i in range(int(labels.max()) + 1)]

    def points(self, params: Params) -> Reply:
        d = self._d
        view = params.choice("view", ("pca", "coords", "label"), "pca" if d > 2 else ("coords" if d == 2 else "label"))
        if view in ("pca", "coords") and d < 2:
            raise RequestError(f"view: {view} needs two latent coordinates; this model has one (use label)")
        x = params.integer("x", 0, d - 1, 0)
        y = params.integer("y", 0, d - 1, 1 if d > 1 else 0)
        xs, ys, axes = self.space.points(view, x, y)
        labels = self.space.labels
        return json_reply(
            {
                "view": view,
                "axes": axes,
                "x": xs.tolist(),
                "y": ys.tolist(),
                "labels": None if labels is None else labels.tolist(),
            }
        )

    def image(self, params: Params) -> Reply:
        return png_reply(self.space.pictures[self._index(params)].unsqueeze(0))

    def encode(self, params: Params) -> Reply:
        index, space = self._index(params), self.space
        label = None if space.labels is None else int(space.labels[index])
        return json_reply(
            {
                "index": index,
                "label": label,
                "label_name": None if label is None else class_name(space.class_names, label),
                "decode_label": space.default_label(index),
                "mean": space.means[index].tolist(),
                "scale": space.scales[index].tolist(),
            }
        )

    def decode(self, params: Params) -> Reply:
        z = self._z(params)
        label = self._label(params, required=True)
        layer = params.integer("layer", 1, len(self.space.latent_dims), 1)
        return png_reply(self.space.decode(z.unsqueeze(0), label, layer))

    def traverse(self, params: Params) -> Reply:
        z = self._z(params)
        coordinate = params.integer("coordinate", 0, self._d - 1)
        steps = params.integer("steps", 2, MAX_STRIP, DEFAULT_STEPS["traverse"])
        label = self._label(params, required=True)
        return png_reply(self.space.traverse(z, coordinate, steps, label)[0])

    def interpolate(self, params: Params) -> Reply:
        a, b = self._index(params, "a"), self._index(params, "b")
        steps = params.integer("steps", 2, MAX_STRIP, DEFAULT_STEPS["interpolate"])
        mode = params.choice("mode", ("linear", "spherical"), "linear")
        label = self._label(params, required=False)
        return png_reply(self.space.interpolate(a, b, steps, mode, label))

    def sample(self, params: Params) -> Reply:
        n = params.integer("n", 1, MAX_STRIP, DEFAULT_SAMPLES)
        seed = params.integer("seed", 0, MAX_SEED, 0)
        label = self._label(params, required=False)
        return png_reply(self.space.sample(n, seed, label))
