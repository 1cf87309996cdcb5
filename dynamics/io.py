"""Writing results so that nothing is ever half-written: every file goes to a temporary name beside its
target and is renamed into place. Also the one rule for JSON: NaN and infinities are written as null."""

from __future__ import annotations

import csv
import io
import json
import math
import mmap
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    """Write ``arrays`` into ``handle`` as a deflate-compressed .npz archive at zlib level ``level``: the
    format of ``np.savez_compressed`` (``np.load`` reads it), whose level cannot be chosen. No pickles. A
    memory-mapped array is written a block of rows at a time, its pages let go after each
    (:func:`release`), so that writing a record held on disk never holds it in memory."""
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=level,
                         allowZip64=True) as archive:
        for name, value in arrays.items():
            value = np.asanyarray(value)
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                if not isinstance(value, np.memmap) or value.ndim == 0 or value.dtype.hasobject:
                    np.lib.format.write_array(member, value, allow_pickle=False)
                    continue
                np.lib.format.write_array_header_1_0(member, np.lib.format.header_data_from_array_1_0(value))
                step = max(1, BLOCK_BYTES // max(1, value[:1].nbytes))
                for first in range(0, len(value), step):
                    member.write(np.ascontiguousarray(value[first:first + step]).tobytes())
                    release(value)


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
