"""lexsort2 gives np.lexsort's permutation, element for element, whatever the keys' ranges."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.ordering import lexsort2


@pytest.mark.parametrize(
    ("primary_range", "secondary_range"),
    [
        ((0, 5), (0, 3)),  # many full ties: position decides
        ((0, 40_000), (0, 2**53)),  # the split's key: low bits dropped, ties fixed up
        ((-(2**40), 2**40), (-(2**62), 2**62)),  # signed, across zero, most low bits dropped
        ((7, 8), (0, 2**63)),  # one primary value
        ((0, 2**62), (0, 10)),  # no room for the secondary key but one bit
    ],
)
def test_lexsort2_is_lexsort(primary_range: tuple[int, int], secondary_range: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 1000, 20_000):
        primary = rng.integers(*primary_range, n)
        secondary = rng.integers(*secondary_range, n)
        np.testing.assert_array_equal(lexsort2(secondary, primary), np.lexsort((secondary, primary)))


def test_lexsort2_breaks_ties_of_the_dropped_bits_by_the_whole_key() -> None:
    # Secondary keys that differ only in bits the packing drops, in reverse order, with full ties.
    primary = np.array([3, 1, 3, 3, 1, 3], dtype=np.int64)
    secondary = np.array([2**62 + 5, 9, 2**62 + 1, 2**62 + 5, 9, 2**62], dtype=np.int64)
    big = np.full(6, 2**40, dtype=np.int64)
    for keys in ((secondary, primary * big), (secondary, primary)):
        np.testing.assert_array_equal(lexsort2(*keys), np.lexsort(keys))


def test_lexsort2_takes_unsigned_and_small_integers_and_refuses_floats() -> None:
    rng = np.random.default_rng(1)
    primary = rng.integers(0, 300, 5000).astype(np.int32)
    secondary = rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64)
    np.testing.assert_array_equal(lexsort2(secondary, primary), np.lexsort((secondary, primary)))
    with pytest.raises(TypeError, match="integer keys"):
        lexsort2(np.zeros(3), primary[:3])
