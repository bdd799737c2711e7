"""Memory-mapping the arrays of an ``.npz`` archive.

``np.load`` reads an ``.npz`` member into the process's own memory (it memory-maps only bare
``.npy`` files). The archives :func:`numpy.savez` writes store their members uncompressed, so
each member's data sits at a fixed offset of the file and can be mapped like an ``.npy`` file:
every service worker that loads a version then shares one copy of its factors in the page cache
instead of reading its own.

A member is mapped only where its data is aligned: numpy works on an unaligned array through
slow buffered paths (a 20-row gather and sum over a mapped encoder took ten times as long as over
a copy). :func:`numpy.savez` leaves data at whatever offset the zip headers end, so
:func:`save_npz` writes the same kind of archive with every member's data on a 64-byte boundary
(zip padding in each member's local header, as Android's zipalign pads); members of archives
written otherwise are read into memory when unaligned.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from recsys.errors import ArtifactError

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, fixed fields, name and extra lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"
#: Where save_npz starts each member's data (numpy's .npy headers end on 64 bytes too).
ALIGNMENT = 64
#: The zip extra field that pads a local header (the id Android's zipalign uses).
_PADDING_ID = 0xD935
#: Bytes zipfile adds to a local header written with force_zip64 (id, size, two 8-byte sizes).
_ZIP64_EXTRA = 20


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as :func:`numpy.savez` does (an uncompressed ``.npz`` that ``np.load``
    reads), with each member's data aligned to :data:`ALIGNMENT` bytes so that
    :func:`map_npz` maps it. Object arrays are refused."""
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            array = np.asanyarray(value)
            if array.dtype.hasobject:
                raise ValueError(f"array {name!r} holds Python objects, which are not saved")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            # The member starts after the local header, the name and the extra fields; numpy pads
            # its .npy header to a multiple of 64 bytes, so aligning the member aligns the data.
            # The padding field takes at least its own 4 bytes.
            assert archive.fp is not None
            start = archive.fp.tell() + _LOCAL_HEADER.size + len(info.filename.encode()) + _ZIP64_EXTRA
            pad = (-(start + 4)) % ALIGNMENT
            info.extra = struct.pack("<HH", _PADDING_ID, pad) + bytes(pad)
            with archive.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


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
    if offset % max(dtype.alignment, 1):
        return None  # unaligned (an archive not written by save_npz): read into memory instead
    if offset - start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != info.file_size:
        raise ValueError(f"member {info.filename} is {info.file_size} bytes, not what its header describes")
    order: Literal["C", "F"] = "F" if fortran_order else "C"
    if 0 in shape or dtype.itemsize == 0:
        return np.zeros(shape, dtype=dtype, order=order)
    mapped = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape, order=order)
    return np.asarray(mapped)  # a plain ndarray over the map (which it keeps open)
