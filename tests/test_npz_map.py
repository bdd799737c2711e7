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
from recsys.runtime.arrays import ALIGNMENT, map_npz, save_npz


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
    save_npz(path, arrays)
    loaded = map_npz(path)
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        assert np.array_equal(loaded[name], array), name
    assert type(loaded["factors"]) is np.ndarray and _mapped(loaded["factors"])
    assert loaded["fortran"].flags.f_contiguous and _mapped(loaded["fortran"])
    loaded["factors"][0, 0] = 42.0  # copy-on-write: the process's own page, never the file
    assert np.load(path)["factors"][0, 0] == arrays["factors"][0, 0]


def test_save_npz_aligns_every_member_and_np_load_reads_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    # Names of odd lengths and sizes that are not multiples of 64 move numpy.savez's members off
    # any alignment; save_npz starts every member's data on a 64-byte boundary.
    arrays = {
        "e": rng.random((7, 3), dtype=np.float32),
        "encoder_rows": rng.random((1682, 51), dtype=np.float32),
        "x" * 11: np.arange(13, dtype=np.int64),
        "scalar": np.array(2.5),
        "text": np.array(["a", "bé"]),
    }
    path = tmp_path / "arrays.npz"
    save_npz(path, arrays)
    with np.load(path) as plain:
        assert set(plain.files) == set(arrays)
        for name, array in arrays.items():
            assert np.array_equal(plain[name], array), name
    loaded = map_npz(path)
    for name, array in arrays.items():
        assert np.array_equal(loaded[name], array), name
        assert _mapped(loaded[name]) and loaded[name].ctypes.data % ALIGNMENT == 0, name
    save_npz(tmp_path / "again.npz", arrays)  # the same bytes for the same arrays
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="Python objects"):
        save_npz(tmp_path / "objects.npz", {"ragged": np.array([[1], [1, 2]], dtype=object)})


def test_an_unaligned_member_is_read_into_memory_not_mapped(tmp_path: Path) -> None:
    # numpy.savez puts this member's data at an odd offset: mapped, numpy would take its slow
    # unaligned paths on every operation.
    path = tmp_path / "arrays.npz"
    values = np.arange(40, dtype=np.float32).reshape(8, 5)
    for length in range(1, 8):  # a name length that leaves the data off a 4-byte boundary
        np.savez(path, **{"n" * length: values})
        if path.read_bytes().find(values.tobytes()) % 4:
            break
    else:
        pytest.fail("numpy.savez aligned every member: this test needs another premise")
    loaded = map_npz(path)["n" * length]
    assert np.array_equal(loaded, values) and loaded.flags.aligned and not _mapped(loaded)


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
