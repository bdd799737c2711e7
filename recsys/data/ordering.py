"""Sorting by two integer keys in one pass: what the interaction log's combine and splits use.

``np.lexsort`` sorts once per key, each time indirectly through the whole array: at 5M rows,
``lexsort((key, users))`` takes about 3 s. Packing both keys into one 64-bit integer and sorting
that once gives the same order in about a tenth of the time.
"""

from __future__ import annotations

import numpy as np


def lexsort2(secondary: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """``np.lexsort((secondary, primary))`` for integer keys: the indices sorted by ``primary``,
    then ``secondary``, then position (the same permutation, element for element).

    The keys, shifted to start at 0, are packed as ``primary`` in the high bits and as many of
    ``secondary``'s high bits as fit in the low bits, and the packed keys are sorted once
    (stably, so that equal keys keep their positions). When ``secondary`` had to lose low bits,
    rows that differ only there tie in the packed key; those runs alone are sorted again by
    ``np.lexsort``.
    """
    if len(primary) != len(secondary):
        raise ValueError(f"the keys differ in length: {len(primary)} and {len(secondary)}")
    for key in (primary, secondary):
        if not np.issubdtype(key.dtype, np.integer):
            raise TypeError(f"lexsort2 sorts integer keys, got {key.dtype}")
    if len(primary) == 0:
        return np.empty(0, dtype=np.intp)
    high, low = _from_zero(primary), _from_zero(secondary)
    high_bits, low_bits = int(high.max()).bit_length(), int(low.max()).bit_length()
    if high_bits > 63:  # no room for even one bit of the secondary key (never with dense indices)
        return np.lexsort((secondary, primary))
    dropped = max(0, high_bits + low_bits - 64)
    packed = (high << np.uint64(64 - high_bits)) if high_bits else np.zeros_like(high)
    packed |= low >> np.uint64(dropped)
    order = np.argsort(packed, kind="stable")
    if dropped:
        in_order = packed[order]
        tied = in_order[1:] == in_order[:-1]
        if tied.any():
            # Every position of a run of equal packed keys (both ends of each tied neighbour pair).
            positions = np.flatnonzero(np.r_[tied, False] | np.r_[False, tied])
            rows = order[positions]
            # The runs keep their places (their packed keys differ), each sorted by the whole
            # secondary key; lexsort is stable, so full ties stay in position order as before.
            order[positions] = rows[np.lexsort((secondary[rows], packed[rows]))]
    return order


def _from_zero(key: np.ndarray) -> np.ndarray:
    """``key - key.min()`` as uint64, without overflow for any signed or unsigned key."""
    minimum = key.min()
    if np.issubdtype(key.dtype, np.unsignedinteger):
        return key.astype(np.uint64) - np.uint64(minimum)
    # Two's complement: the difference wraps to the right unsigned value even across zero.
    return key.astype(np.int64).view(np.uint64) - np.int64(minimum).astype(np.uint64)
