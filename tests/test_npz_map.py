"""Model arrays are memory-mapped from their .npz (shared between service workers), unchanged."""

from __future__ import annotations

import mmap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ArtifactError
from recsys.models.popularity import Popularity
from recsys.runtime.arrays import map_npz


def _mapped(array: np.ndarray) -> bool:
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.base
    return base is not None


def test_every_array_comes_back_equal_and_the_stored_ones_mapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "factors": rng.random((300, 16), dtype=np.float32),
        "fortran": np.asfortranarray(rng.random((5, 4))),
        "ints": np.arange(7, dtype=np.int64),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(2.5),
        "text": np.array(["a", "bé"]),
    }
    path = tmp_path / "arrays.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    loaded = map_npz(path)
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        assert np.array_equal(loaded[name], array), name
    assert type(loaded["factors"]) is np.ndarray and _mapped(loaded["factors"])
    assert loaded["fortran"].flags.f_contiguous and _mapped(loaded["fortran"])
    loaded["factors"][0, 0] = 42.0  # copy-on-write: the process's own page, never the file
    assert np.load(path)["factors"][0, 0] == arrays["factors"][0, 0]


def test_compressed_members_are_read_and_object_arrays_refused(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 50, dtype=np.float32)
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, values=values)
    loaded = map_npz(compressed)["values"]
    assert np.array_equal(loaded, values) and not _mapped(loaded)

    objects = tmp_path / "objects.npz"
    np.savez(objects, ragged=np.array([[1], [1, 2]], dtype=object))
    with pytest.raises(ArtifactError, match=r"objects\.npz cannot be read: .*Python objects"):
        map_npz(objects)


def test_a_truncated_archive_is_an_artifact_error(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez(path, values=np.arange(1000))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ArtifactError, match=r"arrays\.npz cannot be read"):
        map_npz(path)
    assert not zipfile.is_zipfile(path)


def test_a_loaded_model_maps_its_factors(tmp_path: Path) -> None:
    matrix = sp.random(20, 10, density=0.3, random_state=0, format="csr", dtype=np.float32)
    model = Popularity().fit(matrix)
    model.save(tmp_path / "model")
    loaded = Popularity.load(tmp_path / "model")
    assert loaded.item_factors is not None and _mapped(loaded.item_factors)
    assert np.array_equal(loaded.item_factors, model.item_factors)
    assert np.array_equal(loaded.recommend(0, matrix[[0]], N=5)[0], model.recommend(0, matrix[[0]], N=5)[0])
