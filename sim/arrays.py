"""The array namespace of NumPy arrays and torch tensors, for the ring physics written once.

The physics in sim/ is written against the array API standard: `namespace(x)` gives
array-api-compat's NumPy or torch namespace, so the same lines run on NumPy arrays
(the one-shot path of the virtual analyzer, ~1 us per operation) and on torch tensors
(batched, differentiable). `array_api_compat.array_namespace` inspects every argument
each call (a few us); this caches the answer per array type, which matters on the
one-shot path (hundreds of calls per shot).
"""

from __future__ import annotations

from typing import Any

import numpy as _numpy
from array_api_compat import array_namespace, is_torch_namespace

Array = Any
"""A NumPy array or a torch tensor."""

_BY_TYPE: dict[type | tuple[type, ...], Any] = {}


def namespace(*arrays: Array) -> Any:
    """The array-api-compat namespace of these arrays (all of one library)."""
    kind = type(arrays[0])
    for array in arrays[1:]:
        if type(array) is not kind:  # e.g. NumPy arrays and NumPy scalars
            kind = tuple(type(array) for array in arrays)
            break
    xp = _BY_TYPE.get(kind)
    if xp is None:
        xp = _BY_TYPE[kind] = array_namespace(*arrays)
    return xp


def as_dtype(xp: Any, array: Array, dtype: Any) -> Array:
    """`array` in `dtype` (itself when it already is)."""
    return array if array.dtype == dtype else xp.astype(array, dtype)


def stop_gradient(array: Array) -> Array:
    """`array` cut from autograd (a torch tensor's detach; NumPy arrays carry no graph)."""
    detach = getattr(array, "detach", None)
    return array if detach is None else detach()


def softplus(xp: Any, x: Array) -> Array:
    """log(1 + e^x) without overflow."""
    if plain_module(xp) is _numpy:
        return _numpy.logaddexp(0.0, x)
    return plain_module(xp).logaddexp(x.new_zeros(()), x)


# array-api-compat's torch maximum/minimum turn a Python number into a tensor on every
# call (~10 us each, dozens per evaluation): the two below take the number as it is.


def at_least(xp: Any, x: Array, low: float) -> Array:
    """max(x, low) elementwise, for a Python number low."""
    lib = plain_module(xp)
    return lib.maximum(x, low) if lib is _numpy else lib.clamp(x, min=low)


def at_most(xp: Any, x: Array, high: float) -> Array:
    """min(x, high) elementwise, for a Python number high."""
    lib = plain_module(xp)
    return lib.minimum(x, high) if lib is _numpy else lib.clamp(x, max=high)


def scatter_add_rows(xp: Any, index: Array, values: Array, width: int) -> Array:
    """(N, width) row sums: values (N, K) added at the columns index (N, K) of each row.

    Not in the array API: torch's scatter_add (differentiable in values), NumPy's
    bincount over the flattened rows.
    """
    n = values.shape[0]
    if is_torch_namespace(xp):
        zeros = xp.zeros((n, width), dtype=values.dtype, device=values.device)
        return zeros.scatter_add(1, index, values)
    rows = index + width * xp.arange(n)[:, None]
    flat = xp.reshape(rows, (-1,))
    summed = _numpy.bincount(flat, weights=xp.reshape(values, (-1,)), minlength=n * width)
    return xp.reshape(summed, (n, width))


def plain_module(xp: Any) -> Any:
    """The library behind an array-api-compat namespace: the torch or numpy module itself
    (for operations with out=, which both spell alike and the array API lacks)."""
    lib = _PLAIN.get(id(xp))
    if lib is None:
        if is_torch_namespace(xp):
            import torch as lib
        else:
            lib = _numpy
        _PLAIN[id(xp)] = lib
    return lib


_PLAIN: dict[int, Any] = {}
