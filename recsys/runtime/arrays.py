"""Memory-mapping the arrays of an ``.npz`` archive.

``np.load`` reads an ``.npz`` member into the process's own memory (it memory-maps only bare
``.npy`` files). The archives :func:`numpy.savez` writes store their members uncompressed, so
each member's data sits at a fixed offset of the file and can be mapped like an ``.npy`` file:
every service worker that loads a version then shares one copy of its factors in the page cache
instead of reading its own.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from recsys.errors import ArtifactError

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, fixed fields, name and extra lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"


def map_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``path`` by name, memory-mapped copy-on-write (a write to one stays in the
    process that made it; the file is never changed). Compressed members, and arrays a map
    cannot hold, are read as ``np.load`` reads them. Object arrays are refused, as ``np.load``
    refuses them without pickle."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive, path.open("rb") as handle:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                mapped = _map_member(path, handle, info) if info.compress_type == zipfile.ZIP_STORED else None
                if mapped is None:
                    with archive.open(info) as member:
                        mapped = np.lib.format.read_array(member, allow_pickle=False)
                arrays[name] = mapped
    except (OSError, ValueError, zipfile.BadZipFile, struct.error) as exc:
        raise ArtifactError(f"{path} cannot be read: {exc}") from None
    return arrays


def _map_member(path: Path, handle: BinaryIO, info: zipfile.ZipInfo) -> np.ndarray | None:
    """One stored (uncompressed) member mapped in place; None when it cannot be."""
    handle.seek(info.header_offset)
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
    if signature != _LOCAL_SIGNATURE:
        raise ValueError(f"member {info.filename} has no local header at offset {info.header_offset}")
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    handle.seek(start)
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        return None
    if dtype.hasobject:
        raise ValueError(f"member {info.filename} holds Python objects, which are not loaded without pickle")
    offset = handle.tell()
    if offset - start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != info.file_size:
        raise ValueError(f"member {info.filename} is {info.file_size} bytes, not what its header describes")
    order: Literal["C", "F"] = "F" if fortran_order else "C"
    if 0 in shape or dtype.itemsize == 0:
        return np.zeros(shape, dtype=dtype, order=order)
    mapped = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape, order=order)
    return np.asarray(mapped)  # a plain ndarray over the map (which it keeps open)
