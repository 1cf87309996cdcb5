"""Writing results so that nothing is ever half-written: every file goes to a temporary name beside its
target and is renamed into place. Also the one rule for JSON: NaN and infinities are written as null."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def umask() -> int:
    """The process's file-creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# zlib level of the .npz files: level 1 compresses a per-fact record about 4× faster than numpy's fixed
# level 6 (10^5 facts: 5.6 s instead of 20 s for 853 MB) for files about 15% larger (231 MB instead of 200).
NPZ_LEVEL = 1


# A memory-mapped array (a record held on disk, dynamics.rundir.Spool) is written about this many bytes at
# a time.
BLOCK_BYTES = 2**24


def write_npz(handle: BinaryIO, arrays: Mapping[str, np.ndarray], level: int = NPZ_LEVEL) -> None:
    """Write ``arrays`` into ``handle`` (a seekable file) as a deflate-compressed .npz archive at zlib level
    ``level``: the format of ``np.savez_compressed`` (a ZIP64 archive of ``.npy`` members, which ``np.load``
    reads), whose level cannot be chosen. No pickles.

    A member is deflated in blocks of ``BLOCK_BYTES`` on two threads (zlib holds no GIL): each block is a
    stream of its own ended by a sync flush, the last one finished, so that the blocks laid end to end
    are one deflate stream (as pigz writes them). A memory-mapped array is read a block of rows at a time,
    its pages let go after each (:func:`release`), so that writing a record held on disk never holds it in
    memory."""
    entries = []
    with ThreadPoolExecutor(DEFLATE_THREADS) as pool:
        for name, value in arrays.items():
            blocks = _npy_blocks(np.asanyarray(value))
            entries.append(_write_member(handle, f"{name}.npy", blocks, level, pool))
    _write_directory(handle, entries)


# threads that deflate a member's blocks (two: the reference machine's cores)
DEFLATE_THREADS = 2
_ZIP64, _DEFLATED, _DOS_DATE = 45, 8, (1980 - 1980) << 9 | 1 << 5 | 1  # version 4.5, deflate, 1980-01-01
_MADE_ON_UNIX = 3 << 8 | _ZIP64  # the external attributes below are Unix permissions (rw-r--r--)


@dataclass
class _Member:
    name: bytes
    offset: int
    crc: int
    size: int
    packed: int


def _npy_blocks(value: np.ndarray) -> Iterator[bytes | memoryview]:
    """The bytes of ``value``'s ``.npy`` file (version 1.0 header, C order), in blocks of about
    ``BLOCK_BYTES``; refuses object arrays, as ``np.save(allow_pickle=False)`` does."""
    if value.dtype.hasobject:
        raise ValueError("Object arrays cannot be saved when allow_pickle=False")
    header, fields = io.BytesIO(), np.lib.format.header_data_from_array_1_0(value)
    np.lib.format.write_array_header_1_0(header, {**fields, "fortran_order": False})  # written row by row
    yield header.getvalue()
    if value.ndim == 0 or value.size == 0:
        yield np.ascontiguousarray(value).tobytes()
        return
    step = max(1, BLOCK_BYTES // max(1, value[:1].nbytes))
    for first in range(0, len(value), step):
        yield memoryview(np.ascontiguousarray(value[first:first + step])).cast("B")
        release(value)


def _deflate(block: bytes | memoryview, level: int, last: bool) -> bytes:
    """``block`` as a raw deflate stream of its own: sync-flushed (not final), or finished when ``last``."""
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    return deflate.compress(block) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _write_member(handle: BinaryIO, name: str, blocks: Iterator[bytes | memoryview], level: int,
                  pool: ThreadPoolExecutor) -> _Member:
    """One member: its local header (ZIP64 sizes filled in once known), then its blocks deflated on
    ``pool``, written in order, at most ``DEFLATE_THREADS + 1`` blocks in flight."""
    encoded = name.encode()
    offset = handle.tell()
    handle.write(_local_header(encoded, 0, 0, 0))
    crc = size = packed = 0
    pending: list = []
    current = next(blocks)
    for following in itertools.chain(blocks, [None]):  # a block is the last one when nothing follows it
        crc, size = zlib.crc32(current, crc), size + len(current)
        pending.append(pool.submit(_deflate, current, level, following is None))
        while len(pending) > DEFLATE_THREADS or (following is None and pending):
            data = pending.pop(0).result()
            handle.write(data)
            packed += len(data)
        current = following
    end = handle.tell()
    handle.seek(offset)
    handle.write(_local_header(encoded, crc, size, packed))
    handle.seek(end)
    return _Member(encoded, offset, crc, size, packed)


def _local_header(name: bytes, crc: int, size: int, packed: int) -> bytes:
    extra = struct.pack("<HHQQ", 1, 16, size, packed)  # the ZIP64 field: sizes beyond 4 GiB
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, _ZIP64, 0, _DEFLATED, 0, _DOS_DATE, crc, 0xFFFFFFFF,
                       0xFFFFFFFF, len(name), len(extra)) + name + extra


def _write_directory(handle: BinaryIO, members: list[_Member]) -> None:
    """The central directory (ZIP64 sizes and offsets), its ZIP64 end record and locator, the end record."""
    start = handle.tell()
    for m in members:
        extra = struct.pack("<HHQQQ", 1, 24, m.size, m.packed, m.offset)
        handle.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, _MADE_ON_UNIX, _ZIP64, 0, _DEFLATED, 0,
                                 _DOS_DATE, m.crc, 0xFFFFFFFF, 0xFFFFFFFF, len(m.name), len(extra), 0, 0, 0,
                                 0o644 << 16, 0xFFFFFFFF) + m.name + extra)
    end = handle.tell()
    count = len(members)
    handle.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _ZIP64, _ZIP64, 0, 0, count, count, end - start,
                             start))
    handle.write(struct.pack("<IIQI", 0x07064B50, 0, end, 1))
    handle.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                             0xFFFFFFFF, 0xFFFFFFFF, 0))


def release(*arrays: np.ndarray) -> None:
    """Let the pages of memory-mapped arrays that were read go from this process's resident memory (they
    are read from the page cache or the file again when needed); nothing for any other array. Readers that
    go through a record held on disk block by block call it after each block."""
    for array in arrays:
        mapped = getattr(array, "_mmap", None)
        if isinstance(mapped, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and not array.flags.writeable:
            mapped.madvise(mmap.MADV_DONTNEED)  # a read-only shared mapping: the file holds every page


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, payload: Any, sort_keys: bool = True) -> None:
    """Write ``payload`` as indented strict JSON atomically (NaN and infinities become null)."""
    text = json.dumps(finite_or_none(payload), indent=2, sort_keys=sort_keys, default=_json_default,
                      allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None,
                     ) -> None:
    """Write ``rows`` as CSV with a header atomically. ``columns``: the header (default: every key of the
    rows in order of first appearance); missing values are written empty, keys not in ``columns`` dropped."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (also inside dicts, lists and tuples) replaced by None."""
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return value.item()
    if isinstance(value, np.ndarray):
        return finite_or_none(value.tolist())
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
