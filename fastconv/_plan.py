"""The convolution plan: what conv2d and conv2d_backward decide from the shapes, made and
cached in one place.

A ``ConvPlan`` holds the validated arguments (padding, stride, dilation, groups, output size),
the geometry the kernels read (fastconv._geometry.Geometry), and the path each op runs (the
first of fastconv._paths' ordered lists that applies and pays), plus the sub-plans of the
input gradients computed as forward convolutions of grad_output. ``plan_for`` makes it once
per (shapes, arguments, dtype, override) and keeps it in one dict, so a training loop calling
with the same shapes pays for the checks and the choices once.

``use_paths`` is the private override for tests and benchmarks: it names the path to take for
an op wherever that path applies (the size heuristics skipped), without touching any module
setting; plans made under it are cached under it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import _paths
from ._geometry import Geometry

__all__ = ["ConvPlan", "Override", "use_paths", "choose", "clear_plans", "MAX_PLANS"]


class Override(NamedTuple):
    """Paths asked for per op (names, in preference order; empty: the usual choice), the
    staging asked for and the input gradient scatter's schedule (None: by size)."""

    forward: tuple[str, ...] = ()
    grad_input: tuple[str, ...] = ()
    grad_weight: tuple[str, ...] = ()
    stage: bool | None = None
    per_item: bool | None = None


NO_OVERRIDE = Override()
_OVERRIDE: contextvars.ContextVar[Override] = contextvars.ContextVar(
    "fastconv_conv_paths", default=NO_OVERRIDE)


def _names(op: str, value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = (value,) if isinstance(value, str) else tuple(value)
    known = _paths.names(op)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"{op} paths are {known}, got {unknown!r}")
    return names


@contextlib.contextmanager
def use_paths(forward: str | Sequence[str] | None = None,
              grad_input: str | Sequence[str] | None = None,
              grad_weight: str | Sequence[str] | None = None,
              stage: bool | None = None, per_item: bool | None = None
              ) -> Iterator[Override]:
    """Run the convolutions inside on the named paths (tests and benchmarks; private).

    Each op takes the first path named for it that applies to the convolution, whatever its
    size; where none applies, the usual choice. ``stage``: False never stages the input, True
    stages it wherever the layout applies. ``per_item``: the im2col input gradients' scatter
    runs one (sample, group) per thread (True) or one at a time with its tiles in parallel
    (False), whatever the batch. Scoped to this thread (a context variable):
    other threads' calls see nothing.

    >>> import numpy as np
    >>> from fastconv import conv2d
    >>> with use_paths(forward="blas"):
    ...     y = conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)))
    """
    override = Override(_names("forward", forward), _names("grad_input", grad_input),
                        _names("grad_weight", grad_weight), stage, per_item)
    token = _OVERRIDE.set(override)
    try:
        yield override
    finally:
        _OVERRIDE.reset(token)


def current_override() -> Override:
    return _OVERRIDE.get()


class ConvPlan(NamedTuple):
    """Everything a convolution's shapes decide (see the module docstring)."""

    unbatched: bool
    dtype: np.dtype
    pads: tuple[int, int, int, int]  # top, bottom, left, right
    mode: str                        # padding_mode
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out_h: int
    out_w: int
    geometry: Geometry
    batch: int
    in_channels: int
    out_channels: int
    override: Override
    forward: Any = None              # a fastconv._paths.ConvPath
    grad_input: tuple[Any, ...] = ()  # the candidates in order: the first that takes the weights
    grad_weight: Any = None
    transposed: ConvPlan | None = None  # Transposed's forward pass over grad_output
    gather: ConvPlan | None = None      # DepthwiseGather's
    algorithm: str = "auto"             # 'auto', 'direct' or 'winograd' (conv2d's algorithm=)
    strided: ConvPlan | None = None     # StridedPointwise's forward pass over grad_output
    points: ConvPlan | None = None      # PointsWeight's pointwise weight gradient
    # StridedPhases' phases: (fastconv._paths.Phase, its forward pass over grad_output or None)
    phases: tuple[tuple[Any, ConvPlan | None], ...] | None = None
    # what a path works out per call from the plan and the thread count (its threads and
    # workspace sizes), kept per (op, path, thread count) by the first call; each completed
    # plan has its own (fastconv._paths.sizes_for)
    memo: dict[Any, Any] | None = None


def choose(op: str, plan: ConvPlan, paths: Sequence[Any] | None = None,
           asked: Sequence[str] = ()) -> list[Any]:
    """The paths of ``op`` that would run ``plan``, best first: the asked ones that apply, in
    the order asked, then the list's paths that apply and pay. The first is the choice; the
    ones after it only matter where a path may refuse the data (``takes``)."""
    paths = _paths.OPS[op] if paths is None else paths
    chosen = [path for name in asked for path in paths
              if path.name == name and path.applies(op, plan)]
    chosen += [path for path in paths
               if path not in chosen and path.applies(op, plan) and path.pays(op, plan)]
    return chosen


def pooling_path(plan: ConvPlan, window: tuple[int, int]) -> Any:
    """The path (one of fastconv._paths.POOLED) that runs ``plan``'s convolution max-pooled by
    non-overlapping ``window``s in its store (the eval plan's Conv2d -> ReLU -> MaxPool2d
    step), or None. Only where the plan's own forward path is one of them, since those
    paths' sums and bits are the same (the pooled result is bit for bit the unfused
    layers'); then the first that applies, pays pooled ('pooled' op) and pools ``window``,
    the ones asked by use_paths(forward=...) first."""
    if plan.mode != "zeros" or plan.forward not in _paths.POOLED:
        return None
    for path in choose("pooled", plan, _paths.POOLED, plan.override.forward):
        if path.pools(plan, window):
            return path
    return None


def _over_grad_output(plan: ConvPlan, geometry: Geometry | None) -> ConvPlan | None:
    """A sub-plan for a forward pass over ``plan``'s grad_output (the channels swapped) with
    ``geometry``, its forward path chosen among TRANSPOSED_FORWARD (Transposed's,
    StridedPointwise's and StridedPhases'); None where ``geometry`` is (the path does not
    apply; a phase no tap reaches)."""
    if geometry is None:
        return None
    sub = plan._replace(geometry=geometry, in_channels=plan.out_channels,
                        out_channels=plan.in_channels)
    return sub._replace(forward=choose("forward", sub, _paths.TRANSPOSED_FORWARD,
                                       plan.override.forward)[0], memo={})


def _points(plan: ConvPlan) -> ConvPlan | None:
    """PointsWeight's sub-plan: the pointwise convolution of ``plan``'s compact input
    (fastconv._paths.points_geometry), its weight-gradient path chosen among POINTS_WEIGHT;
    None where it does not apply."""
    geometry = _paths.points_geometry(plan)
    if geometry is None:
        return None
    sub = plan._replace(geometry=geometry, pads=(0, 0, 0, 0), stride=(1, 1), dilation=(1, 1),
                        mode="zeros", points=None, memo={})
    return sub._replace(grad_weight=choose("grad_weight", sub, _paths.POINTS_WEIGHT,
                                           plan.override.grad_weight)[0])


def complete(plan: ConvPlan) -> ConvPlan:
    """``plan`` with its paths chosen (a plan made with only its shapes)."""
    override = plan.override
    forward = choose("forward", plan, asked=override.forward)[0]
    points = _points(plan)
    grad_weight = choose("grad_weight", plan._replace(points=points),
                         asked=override.grad_weight)[0]
    transposed = gather = None
    if _paths.DepthwiseDirect().applies("grad_input", plan):
        geometry = _paths.depthwise_gather_geometry(plan)
        if geometry is not None:
            channels = plan.out_channels
            gather = plan._replace(geometry=geometry, groups=channels, in_channels=channels,
                                   memo={})
    else:
        transposed = _over_grad_output(plan, _paths.transposed_geometry(plan))
    strided = _over_grad_output(plan, _paths.strided_pointwise_geometry(plan))
    phases = _paths.strided_phases(plan)
    if phases is not None:
        phases = tuple((phase, _over_grad_output(plan, phase.geometry)) for phase in phases)
    plan = plan._replace(forward=forward, grad_weight=grad_weight, transposed=transposed,
                         gather=gather, strided=strided, phases=phases, points=points,
                         memo={})
    candidates = choose("grad_input", plan, asked=override.grad_input)
    # the data-dependent paths come first; the first path that takes any data ends the list
    for index, path in enumerate(candidates):
        if type(path).takes is _paths.ConvPath.takes:
            candidates = candidates[:index + 1]
            break
    return plan._replace(grad_input=tuple(candidates))


# ---- the cache ------------------------------------------------------------------------------

MAX_PLANS = 256
_PLANS: dict[tuple[Any, ...], ConvPlan] = {}


def cached(key: tuple[Any, ...]) -> ConvPlan | None:
    return _PLANS.get(key)


def remember(key: tuple[Any, ...], plan: ConvPlan) -> None:
    if len(_PLANS) >= MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = plan


def clear_plans() -> None:
    """Forget every plan (their choices are made again on the next call)."""
    _PLANS.clear()
