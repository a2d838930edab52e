"""RLE helpers: exact round trips (property tests) and the 256+ RLE area overflow."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from smartmask import masks
from smartmask.validate import _compressed_runs, to_rle


def _runs(m: np.ndarray) -> list[int]:
    flat = m.flatten(order="F").astype(bool)
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))


@settings(max_examples=150, deadline=None)
@given(shapes.flatmap(lambda s: arrays(np.uint8, s, elements=st.integers(0, 1))))
def test_rle_round_trip_is_exact(m):
    rle = masks.encode(m)
    assert (masks.decode(rle) == m).all()
    assert masks.area([rle])[0] == m.sum()
    assert _compressed_runs(rle["counts"]).tolist() == _runs(m)
    # uncompressed runs → compressed → mask, through the validating path
    h, w = m.shape
    assert (masks.decode(to_rle({"size": [h, w], "counts": _runs(m)}, h, w)) == m).all()
    assert to_rle(rle, h, w) == rle


def test_area_of_many_rles_does_not_overflow():
    m = np.zeros((8, 8), np.uint8)
    m[:3, :3] = 1
    rles = [masks.encode(m)] * 600
    assert masks.area(rles).tolist() == [9] * 600
    assert masks.bbox(rles).shape == (600, 4)
