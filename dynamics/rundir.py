"""The run directory: the one owner of what every ``factrecall`` command writes into its output, and of
writing, reading and checking a run's record.

One run (a flow run of ``simulate``; each of ``flow/`` and ``train/`` of ``simulate --train``; each of a
sweep's ``trajectories/<point>/``) is a directory of :data:`RUN_FILES`::

    config.json      the resolved config                        (Trajectory.save with a config)
    trajectory.npz   the record: the arrays of TRAJECTORY_SCHEMA (Trajectory.save)
    summary.json     the run's RunInfo                           (Trajectory.save)
    stages.json  stages.npz (STAGES_SCHEMA)  loss.png  facts.png  fractions.png      (stage analysis)
    timeline.json  timeline.npz (TIMELINE_SCHEMA)  timeline.png   (data over time, or subjects held out)

What each command writes is a :class:`Layout` of :data:`LAYOUTS` (:func:`output_files`); the kind of an
existing directory is read from the files only that kind writes (:func:`output_kind`). A command added
outside this module describes its output with :func:`register_layout`.

Every array file is checked against its schema when read (:func:`read_record`, :func:`read_arrays`) and
when written (:func:`write_arrays`): its names, its dtypes, and every shape against the others (K recorded
times, an S × R table, P parameters), and a record's facts table against its config
(:func:`check_record_config`), so that every per-fact array is checked against ``task.subjects`` and
``task.relations``. The sizes are read from the arrays' headers, before any array is loaded. A damaged
file is one :class:`ConfigError` naming the directory, the file and what is wrong. P is checked by the
model that takes a state (:meth:`Model.grown_state`).

A record larger than memory: a per-fact array beyond :data:`SPOOL_BYTES` is written block by block into an
unlinked temporary file (:class:`Spool`) as the run goes, streamed into ``trajectory.npz`` when saved, and
streamed back into one when read (:func:`read_record`), memory-mapped. ``trajectory.npz`` itself is the same
file whichever way it was written (old run directories read as before).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .errors import ConfigError
from .io import BLOCK_BYTES, atomic_write, atomic_write_json, finite_or_none, write_npz
from .records import RunInfo
from .registry import Registry
from .task import FactTask

CONFIG_FILE, RECORD_FILE, SUMMARY_FILE = "config.json", "trajectory.npz", "summary.json"
RECORD_FILES = (RECORD_FILE, SUMMARY_FILE, CONFIG_FILE)  # what Trajectory.save writes
STAGE_FILES = ("stages.json", "stages.npz", "loss.png", "facts.png", "fractions.png")
TIMELINE_FILES = ("timeline.json", "timeline.npz", "timeline.png")
RUN_FILES = (CONFIG_FILE, RECORD_FILE, SUMMARY_FILE, *STAGE_FILES, *TIMELINE_FILES)
TRAIN_RUNS = ("flow", "train")  # the runs of simulate --train, one directory each
COMPARE_FIGURES = ("compare_loss.png", "compare_order.png", "compare_stage_shift.png",
                   "compare_sharpness.png")
RUN_HINT = "allowed: a directory written by factrecall simulate"
DIGEST_KEY = "config_sha256"  # trajectory.npz: the digest of the config.json saved with it
SAVE_ALLOWED = ("allowed: a new or empty directory, or one holding only a trajectory saved there "
                "(trajectory.npz, summary.json, config.json)")


# --- layouts: what each command writes ------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """What one kind of output holds, as paths relative to it. ``files``: fixed paths; ``patterns``:
    :mod:`fnmatch` patterns of paths the run names (a sweep's points); ``markers``: paths that only this
    kind writes, one of which each of its outputs holds (how :func:`output_kind` tells kinds apart).
    ``directory``: False for an output that is a file (and the files beside it), not a directory."""

    name: str
    command: str  # the factrecall command that writes it
    description: str
    files: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    directory: bool = True
    folders: frozenset[str] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        parents = {str(parent) for path in (*self.files, *self.patterns) for parent in Path(path).parents}
        object.__setattr__(self, "folders", frozenset(parents - {"."}))

    def allows(self, relative: str, is_dir: bool = False) -> bool:
        """Whether this kind writes the path ``relative`` (a folder: one that holds what it writes)."""
        if is_dir:
            return any(_matches(relative, folder) for folder in self.folders)
        return relative in self.files or any(_matches(relative, pattern) for pattern in self.patterns)

    def foreign(self, path: Path) -> list[str]:
        """The paths under ``path`` that this kind does not write (symbolic links included), sorted."""
        path = Path(path)
        return sorted(str(p.relative_to(path)) for p in path.rglob("*")
                      if p.is_symlink() or not self.allows(str(p.relative_to(path)), p.is_dir()))


def _matches(relative: str, pattern: str) -> bool:
    """Whether a relative path matches a pattern part by part (a ``*`` never spans a ``/``)."""
    parts, wanted = relative.split("/"), pattern.split("/")
    if len(parts) != len(wanted):
        return False
    return all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


def _nested(folder: str, names: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"{folder}/{name}" for name in names)


# the sweep's point store (analysis.sweep.SweepDirectory), also a study's
SWEEP_MANIFEST, SWEEP_RESULTS = "sweep.json", "results.csv"
POINTS_DIR, KEPT_RUNS_DIR = "points", "trajectories"
POINT_FILES = f"{POINTS_DIR}/p*.json"  # one per point, named by its identifier
STUDY_RECORD = "study.json"  # a study's name and size: what tells a study from a sweep
STUDY_FILES = (STUDY_RECORD, SWEEP_MANIFEST, SWEEP_RESULTS)
STUDY_PATTERNS = (POINT_FILES,)
LAYOUTS: Registry[Layout] = Registry("layout", None, (
    Layout("study", "study", "a study: its record and the sweep's point store (each study adds "
           "its own files with register_layout)", files=STUDY_FILES, patterns=STUDY_PATTERNS,
           markers=(STUDY_RECORD,)),
    Layout("sweep", "sweep", "a sweep: its manifest, one file per point, the results table, "
           "kept runs and figures",
           files=(SWEEP_MANIFEST, SWEEP_RESULTS),
           patterns=(POINT_FILES, "phase_*.png", "sweep_*.png",
                     *_nested(f"{KEPT_RUNS_DIR}/p*", RUN_FILES)),
           markers=(SWEEP_MANIFEST,)),
    Layout("compare", "compare", "a comparison of the flow with discrete runs",
           files=(CONFIG_FILE, "compare.json", "compare.csv", *COMPARE_FIGURES),
           markers=("compare.json",)),
    Layout("flow", "simulate", "a flow run (simulate without --train)", files=RUN_FILES,
           markers=(RECORD_FILE,)),
    Layout("train", "simulate", "a simulate --train run (flow/ and train/)",
           files=(CONFIG_FILE, "loss.png", *(f for run in TRAIN_RUNS
                                             for f in _nested(run, RUN_FILES))),
           markers=_nested("flow", [RECORD_FILE]) + _nested("train", [RECORD_FILE])),
    Layout("capacity", "capacity", "a capacity grid: every trial, the fit and its figure",
           files=("trials.csv", "summary.json", "capacity.png", "tradeoff.png"),
           markers=("trials.csv",)),
    Layout("bench", "bench", "a benchmark: --out NAME.json and its figure NAME.png beside it",
           patterns=("*.json", "*.png"), directory=False)))


def register_layout(layout: Layout) -> Layout:
    """Add (or replace) the layout of a command's output: the one place a new command says what it writes.
    Order counts for :func:`output_kind`: a kind registered earlier is recognised first."""
    return LAYOUTS.register(layout, replace=True)


def output_files(command: str) -> frozenset[str]:
    """Every fixed path (files and their folders) a ``command``'s output may hold: the union of its layouts
    (``simulate``: a flow run's files and those of ``flow/`` and ``train/``)."""
    return frozenset(path for layout in layouts_of(command) for path in (*layout.files, *layout.folders))


def layouts_of(command: str) -> list[Layout]:
    """The layouts of a ``command``'s output (ValueError for a command that has none)."""
    layouts = [layout for layout in LAYOUTS.values() if layout.command == command]
    if not layouts:
        known = sorted({layout.command for layout in LAYOUTS.values()})
        raise ValueError(f"unknown output kind {command!r}; known: {', '.join(known)}")
    return layouts


def foreign_paths(path: Path | str, command: str) -> list[str]:
    """The paths under ``path`` that no layout of ``command`` writes (sorted)."""
    found = [set(layout.foreign(Path(path))) for layout in layouts_of(command)]
    return sorted(set.intersection(*found))


def output_kind(path: Path | str) -> str | None:
    """Which command wrote the directory ``path``, judged by the files only that command writes; None when
    none did."""
    path = Path(path)
    for layout in LAYOUTS.values():
        if layout.directory and any((path / marker).exists() for marker in layout.markers):
            return layout.command
    return None


def run_layout(path: Path | str) -> str | None:
    """Which simulate run the directory ``path`` holds: ``train`` (``flow/`` and ``train/`` of ``simulate
    --train``), ``flow`` (a flow run's files at the top), or None (neither)."""
    path = Path(path)
    if any((path / run).exists() for run in TRAIN_RUNS):
        return "train"
    if (path / RECORD_FILE).exists():
        return "flow"
    return None


def run_directories(path: Path | str, flag: str = "RUN_DIR") -> list[Path]:
    """The directories under ``path`` that hold a record: ``path`` itself, or its ``flow/`` and ``train/``
    when it is a ``simulate --train`` run. Refuses (one-line ConfigError) a path with none."""
    path = Path(path)
    if (path / RECORD_FILE).is_file():
        return [path]
    found = [path / name for name in TRAIN_RUNS if (path / name / RECORD_FILE).is_file()]
    if not found:
        raise ConfigError(f"{flag}={str(path)!r}: holds no {RECORD_FILE} (nor flow/ or train/ with one); "
                          f"{RUN_HINT}")
    return found


def flow_record_dir(path: Path | str, flag: str = "init.from_run") -> Path:
    """The directory holding a run's flow: ``path`` itself, or ``path/flow`` of a ``--train`` run."""
    path = Path(path)
    if (path / "flow" / RECORD_FILE).is_file():
        return path / "flow"
    if not (path / RECORD_FILE).is_file():
        raise ConfigError(f"{flag}={str(path)!r}: not a run directory (no {RECORD_FILE} with a final state); "
                          f"{RUN_HINT}")
    return path


def is_complete_run(path: Path | str) -> bool:
    """Whether ``path`` holds a whole saved record (:data:`RECORD_FILES`, as ``Trajectory.save`` with a
    config writes them)."""
    return all((Path(path) / name).is_file() for name in RECORD_FILES)


# --- array schemas ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schema:
    """The arrays of one .npz file: name -> dimensions (symbols, each one size across the file).
    ``optional`` arrays may be absent; ``prefixed`` maps a name prefix to the dimensions of every array
    so named; ``integers`` must hold integers; ``strings`` are one string each (a digest)."""

    file: str
    required: Mapping[str, tuple[str, ...]]
    optional: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prefixed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    integers: frozenset[str] = frozenset()
    strings: frozenset[str] = frozenset()

    def dims(self, name: str) -> tuple[str, ...] | None:
        """The dimensions of the array ``name``, or None when the file holds no such array."""
        if name in self.required:
            return self.required[name]
        if name in self.optional:
            return self.optional[name]
        for prefix, dims in self.prefixed.items():
            if name.startswith(prefix):
                return dims
        return None


ATTENTION_PARTS = ("subject", "relation", "noise", "eos")
CURVES = ("t", "loss", "relation_loss", "subject_loss", *(f"attention_{p}" for p in ATTENTION_PARTS))
PER_FACT = ("fact_loss", "p_correct", "p_relation", "p_subject", "argmax_class")
TRAJECTORY_SCHEMA = Schema(
    RECORD_FILE,
    required={"facts": ("S", "R"), "answers_per_relation": (), "fact_weights": ("S", "R"),
              **{name: ("K",) for name in CURVES}, **{name: ("K", "S", "R") for name in PER_FACT}},
    optional={"states": ("K", "P"), "final_state": ("P",), DIGEST_KEY: ()},
    prefixed={"norm_": ("K",)},
    integers=frozenset({"facts", "answers_per_relation", "argmax_class"}), strings=frozenset({DIGEST_KEY}))
STAGES_SCHEMA = Schema(
    "stages.npz",
    required={"t": ("K",), "state": ("K", "S", "R"),
              **{name: ("S", "R") for name in ("enter_hallucination", "leave_hallucination", "recall_time",
                                               "learning_time", "learning_width")},
              **{f"fraction_{c}": ("K",) for c in ("uninformed", "hallucinating", "recalled")}},
    integers=frozenset({"state"}))
TIMELINE_SCHEMA = Schema("timeline.npz", required={"t": ("K",), **{name: ("S", "R") for name in
                                                                  ("learned", "forgotten", "relearned")}})
DIM_NAMES = {"K": "recorded times", "S": "subjects", "R": "relations", "P": "parameters"}


class Damaged(Exception):
    """An array file that does not follow its schema: what is wrong, said in one line."""


def check_shapes(members: Mapping[str, tuple[tuple[int, ...], np.dtype]], schema: Schema,
                 sizes: Mapping[str, int] | None = None) -> dict[str, int]:
    """Check the arrays of a file, given as name -> (shape, dtype), against ``schema``: every required
    name, no other name, numbers (integers, strings) where it says so, and one size per dimension
    (``sizes``: those known beforehand). Returns the sizes; raises :class:`Damaged`."""
    missing = [name for name in schema.required if name not in members]
    if missing:
        raise Damaged("misses the array(s) " + ", ".join(missing))
    unknown = sorted(name for name in members if schema.dims(name) is None)
    if unknown:
        raise Damaged("holds array(s) it never holds: " + ", ".join(unknown))
    for name, (shape, dtype) in members.items():
        if name in schema.strings:
            if dtype.kind != "U" or shape != ():
                raise Damaged(f"{name} has dtype {dtype} and shape {shape}; expected one string")
        elif name in schema.integers:
            if dtype.kind not in "iu":
                raise Damaged(f"{name} has dtype {dtype}; expected integers")
        elif dtype.kind not in "biuf":
            raise Damaged(f"{name} has dtype {dtype}; expected numbers")
    known = dict(sizes or {})
    order = [*schema.required, *(n for n in members if n not in schema.required)]
    for name in order:
        shape, dims = members[name][0], schema.dims(name)
        if len(shape) == len(dims):
            for dim, size in zip(dims, shape, strict=True):
                known.setdefault(dim, size)
        expected = tuple(known.get(dim, -1) for dim in dims)
        if shape != expected:
            named = ", ".join(f"{d} = {known[d]} {DIM_NAMES.get(d, '')}".rstrip() for d in dims if d in known)
            wanted = f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"
            raise Damaged(f"{name} has shape {shape}; expected {wanted}"
                          + (f" with {named}" if named else ""))
    return known


def _check_table(members: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """What a record is of, checked first: an integer (S, R) facts table and one integer answer count."""
    facts, answers = members.get("facts"), members.get("answers_per_relation")
    if facts is None or answers is None:
        return  # check_shapes names what is missing
    if answers[0] != () or len(facts[0]) != 2 or facts[1].kind not in "iu" or answers[1].kind not in "iu":
        raise Damaged("holds no integer facts table")


def npz_members(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape, dtype) of every array of the .npz file ``path``, read from the headers alone (no
    array is loaded, no pickle ever). Raises what reading a damaged archive raises."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    members = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"{info.filename} is not an array")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in readers:
                    raise ValueError(f"{info.filename}: .npy format version {version}")
                shape, _, dtype = readers[version](member)
            if dtype.hasobject:
                raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
            members[info.filename[:-len(".npy")]] = (tuple(shape), dtype)
    return members


def one_line(err: BaseException) -> str:
    """An error as one line: its type and the first line of its text."""
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _load(path: Path, schema: Schema, sizes: Mapping[str, int] | None, keys: Iterable[str] | None,
          where: str) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The arrays ``keys`` (default all) of ``path`` after :func:`check_shapes`; one-line ConfigErrors."""
    name = schema.file
    if not path.is_file():
        raise ConfigError(f"{where}: its {name} is missing; {RUN_HINT}")
    try:
        members = npz_members(path)
    except Exception as err:  # a damaged archive fails in many ways (BadZipFile, EOFError, ValueError, ...)
        raise ConfigError(f"{where}: cannot read {name} ({one_line(err)}); {RUN_HINT}") from None
    try:
        if schema is TRAJECTORY_SCHEMA:
            _check_table(members)
        found = check_shapes(members, schema, sizes)
    except Damaged as err:
        raise ConfigError(f"{where}: its {name} {err}; {RUN_HINT}") from None
    wanted = list(members) if keys is None else [k for k in keys if k in members]
    try:
        with zipfile.ZipFile(path) as archive:
            return {k: _read_member(archive, k) for k in wanted}, found
    except Exception as err:  # corrupt data under good headers (a bad checksum, a zlib error)
        raise ConfigError(f"{where}: cannot read {name} ({one_line(err)}); {RUN_HINT}") from None


def read_arrays(path: Path | str, schema: Schema, sizes: Mapping[str, int] | None = None,
                where: str | None = None) -> dict[str, np.ndarray]:
    """Every array of the file ``path`` (``stages.npz``: :data:`STAGES_SCHEMA`, ``timeline.npz``:
    :data:`TIMELINE_SCHEMA`), checked against ``schema`` and ``sizes`` (e.g. ``{"S": 4, "R": 3}`` of the
    run's config) first: a damaged file is a one-line ConfigError beginning with ``where`` (default: the
    directory)."""
    path = Path(path)
    return _load(path, schema, sizes, None, where or repr(str(path.parent)))[0]


# --- records larger than memory: spooled while a run goes, streamed into the .npz, read back lazily --------

# A per-fact array larger than this (bytes) is held on disk (:class:`Spool`): a run's record while it is
# taken, and a record read back from its trajectory.npz; smaller ones stay in memory.
SPOOL_BYTES = 2**26

class Spool:
    """One array of a known shape (rows, ...) written row block by row block into an unlinked temporary
    file (in ``directory``, default the system's temporary directory, ``TMPDIR``) and read back as a
    read-only :class:`numpy.memmap`: its rows are never all in this process's memory, and nothing is left
    on disk however the process ends (the file has no name once created; it goes with its last mapping).
    Plain writes, not a writable mapping, so that written rows sit in the page cache, not in the process's
    resident memory.

    With ``behind``, each write is handed to a thread of its own and the caller goes on (the kernel's copy
    into the page cache, about 0.6 GB/s, runs beside a flow's work instead of in it): at most one write
    is pending, its rows held until written; a failed write raises at the next write or at
    :meth:`array`."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type, directory: str | None = None,
                 behind: bool = False):
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        fd, path = tempfile.mkstemp(prefix="factrecall-record-", suffix=".tmp", dir=directory)
        os.unlink(path)
        self.file = os.fdopen(fd, "w+b")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="factrecall-spool") if behind else None
        self._pending: Future | None = None

    def write(self, row: int, values: np.ndarray) -> None:
        """Write ``values`` (rows of this array's row shape) from row ``row`` on (``values`` must not change
        until written: the rows are not copied when they are already contiguous of this dtype)."""
        data = np.ascontiguousarray(values, dtype=self.dtype)
        if self._writer is None:
            self._write(row, data)
            return
        self._wait()
        self._pending = self._writer.submit(self._write, row, data)

    def _write(self, row: int, data: np.ndarray) -> None:
        view, offset = memoryview(data).cast("B"), row * self.row_bytes
        while len(view):
            written = os.pwrite(self.file.fileno(), view, offset)
            view, offset = view[written:], offset + written

    def _wait(self) -> None:
        """Wait for the pending write; raise what it raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def array(self, rows: int) -> np.ndarray:
        """The first ``rows`` rows, mapped read-only (the file is closed: the mapping keeps it)."""
        try:
            self._wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
        shape = (rows, *self.shape[1:])
        if rows == 0 or self.row_bytes == 0:
            self.file.close()
            return np.empty(shape, dtype=self.dtype)
        size = rows * self.row_bytes
        if os.fstat(self.file.fileno()).st_size < size:
            self.file.truncate(size)  # rows never written read as zeros, as np.empty's may hold anything
        array = np.memmap(self.file, dtype=self.dtype, mode="r", shape=shape)
        self.file.close()
        return array


def spooled(shape: tuple[int, ...], dtype: np.dtype | type) -> bool:
    """Whether an array of ``shape`` and ``dtype`` is held on disk (larger than :data:`SPOOL_BYTES`)."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize > SPOOL_BYTES


def _read_member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """The array ``name`` of an open .npz archive: read whole, or, when larger than :data:`SPOOL_BYTES`,
    streamed row block by row block into a :class:`Spool` and mapped (read to its end, so that the
    archive's checksum is checked as ``np.load`` checks it)."""
    with archive.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = reader(member)
        if fortran or not shape or dtype.hasobject or not spooled(shape, dtype):
            member.seek(0)
            return np.lib.format.read_array(member, allow_pickle=False)
        spool = Spool(shape, dtype)
        row_bytes = spool.row_bytes
        step = max(1, BLOCK_BYTES // max(row_bytes, 1))
        for first in range(0, shape[0], step):
            rows = min(step, shape[0] - first)
            data = member.read(rows * row_bytes)
            if len(data) != rows * row_bytes:
                raise EOFError(f"{name}.npy ends after {first * row_bytes + len(data)} bytes of data")
            spool.write(first, np.frombuffer(data, dtype=dtype))
        if member.read(1):
            raise ValueError(f"{name}.npy holds more data than its header says")
        return spool.array(shape[0])


def write_arrays(path: Path | str, arrays: Mapping[str, np.ndarray], schema: Schema,
                 sizes: Mapping[str, int] | None = None) -> None:
    """Write ``arrays`` as the .npz file ``path`` atomically, after checking them against ``schema`` (a
    ValueError: what a reader would refuse is never written)."""
    arrays = {name: np.asanyarray(value) for name, value in arrays.items()}
    try:
        check_shapes({name: (value.shape, value.dtype) for name, value in arrays.items()}, schema, sizes)
    except Damaged as err:
        raise ValueError(f"{schema.file}: {err}") from None
    atomic_write(Path(path), lambda f: write_npz(f, arrays))


# --- a run's record: config.json, trajectory.npz, summary.json ------------------------------------------

def config_tree(config: Config) -> dict[str, Any]:
    """The JSON tree ``config.json`` holds for ``config`` (what reading the file back gives)."""
    return json.loads(json.dumps(finite_or_none(config.to_dict())))


def config_tree_digest(tree: Mapping[str, Any]) -> str:
    """sha256 of a parsed ``config.json`` (key order and layout do not count): recorded in the trajectory
    saved with it, so that a config.json changed afterwards is found."""
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def check_record_config(config: Config, facts: np.ndarray, answers_per_relation: int, digest: str | None,
                        tree: Mapping[str, Any] | None, source: str, table: np.ndarray | None = None) -> None:
    """Refuse (one-line :class:`ConfigError` beginning with ``source``) a config that is not the one a record
    was made with: its ``config.json`` changed since the save (``digest`` against ``tree``, when both are
    known), or a task whose table is not the record's (shape, answers per relation, the facts).
    ``table``: the facts table of ``config``'s task when it is already built (a run's own save), which is
    then not drawn again."""
    def refuse(what: str) -> ConfigError:
        return ConfigError(f"{source}: its config.json does not match its trajectory.npz ({what}); allowed: "
                           "a run directory as factrecall simulate wrote it")

    if digest is not None and tree is not None and config_tree_digest(tree) != digest:
        raise refuse("config.json was changed after the run was saved")
    task = config.task
    shape = np.shape(facts)
    if shape != (task.subjects, task.relations):
        raise refuse(f"task.subjects={task.subjects}, task.relations={task.relations} against a facts table "
                     f"of shape {shape}")
    if int(answers_per_relation) != task.answers_per_relation:
        raise refuse(f"task.answers_per_relation={task.answers_per_relation} against "
                     f"{int(answers_per_relation)} recorded")
    if not np.array_equal(FactTask(task).facts if table is None else table, facts):
        raise refuse(f"the facts table of task.facts={task.facts!r}, task.seed={task.seed} is not the "
                     "recorded one")


def write_record(directory: Path | str, arrays: Mapping[str, np.ndarray], summary: Mapping[str, Any] | None,
                 tree: Mapping[str, Any] | None) -> None:
    """Write a record into ``directory``: ``trajectory.npz`` (``arrays``, checked against
    :data:`TRAJECTORY_SCHEMA`), ``summary.json`` (``summary``; an earlier one is removed when None) and
    ``config.json`` (``tree``, when given), each file atomically. ``directory`` must be new, empty, or
    hold only an earlier record, which this one replaces (:func:`check_save_target`)."""
    record_writer(directory, arrays, summary, tree)()


def record_writer(directory: Path | str, arrays: Mapping[str, np.ndarray], summary: Mapping[str, Any] | None,
                  tree: Mapping[str, Any] | None) -> Callable[[], None]:
    """:func:`write_record` in two parts: ``directory`` checked now, the files written by the function
    returned (which other writers of other files into ``directory`` may run beside)."""
    directory = Path(directory)
    check_save_target(directory, tree is not None)

    def write() -> None:
        write_arrays(directory / RECORD_FILE, arrays, TRAJECTORY_SCHEMA)
        if summary is not None:
            atomic_write_json(directory / SUMMARY_FILE, summary)
        elif (directory / SUMMARY_FILE).exists():
            (directory / SUMMARY_FILE).unlink()  # an earlier save's record, not this one's
        if tree is not None:
            atomic_write_json(directory / CONFIG_FILE, tree)

    return write


def check_save_target(directory: Path, with_config: bool) -> None:
    """Refuse (one-line ConfigError) a ``directory`` that a record's save would leave holding parts of two
    runs: not a directory, holding files a save does not write, or a ``config.json`` that a save without
    one would leave beside another record."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"Trajectory.save: {str(directory)!r} is not a directory; {SAVE_ALLOWED}")
    if not directory.exists():
        return
    foreign = sorted(p.name for p in directory.iterdir() if p.name not in RECORD_FILES or not p.is_file())
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(f"Trajectory.save: {str(directory)!r} holds files a trajectory save does not write "
                          f"({listed}); {SAVE_ALLOWED}")
    if not with_config and (directory / CONFIG_FILE).exists():
        raise ConfigError(f"Trajectory.save: {str(directory)!r} holds a config.json that this save (without "
                          "config=) would leave beside another trajectory; allowed: save(directory, config), "
                          "or a directory without one")


def _read_json(path: Path, where: str) -> dict[str, Any]:
    """The JSON object in ``path``; anything else is a one-line ConfigError."""
    try:
        tree = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(tree, dict):
            raise ValueError(f"a JSON {type(tree).__name__}, not an object")
        return tree
    except (OSError, ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError included
        raise ConfigError(f"{where}: cannot read its {path.name} ({one_line(err)})") from None


def read_config(directory: Path | str, where: str | None = None) -> tuple[Config, dict[str, Any]]:
    """The config of the run in ``directory`` and the parsed ``config.json`` it came from (a ``flow/`` or
    ``train/`` run without its own takes the one of the ``simulate --train`` run above it)."""
    directory = Path(directory)
    where = where or repr(str(directory))
    path = directory / CONFIG_FILE
    if not path.is_file() and directory.name in TRAIN_RUNS and (directory.parent / CONFIG_FILE).is_file():
        path = directory.parent / CONFIG_FILE
    tree = _read_json(path, where)
    try:
        return Config.from_dict(tree), tree
    except ConfigError as err:
        raise ConfigError(f"{where}: cannot read its config.json ({one_line(err)})") from None


def read_summary(directory: Path | str, where: str | None = None) -> RunInfo:
    """The run record ``summary.json`` of ``directory``, checked (one-line ConfigError)."""
    directory = Path(directory)
    where = where or repr(str(directory))
    if not (directory / SUMMARY_FILE).is_file():
        raise ConfigError(f"{where}: its {SUMMARY_FILE} is missing; {RUN_HINT}")
    payload = _read_json(directory / SUMMARY_FILE, where)
    try:
        return RunInfo.from_dict(payload)
    except Exception as err:  # any damage of the record is the same one-line refusal
        raise ConfigError(f"{where}: its {SUMMARY_FILE} is not a run summary ({one_line(err)}); "
                          f"{RUN_HINT}") from None


def read_record(directory: Path | str, config: Config | None = None, tree: Mapping[str, Any] | None = None,
                keys: Iterable[str] | None = None, where: str | None = None) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (default: all) of the record ``trajectory.npz`` in ``directory``, the whole file
    checked first: readable without pickle, the names and dtypes of :data:`TRAJECTORY_SCHEMA`, one size of
    every dimension across the arrays, times finite and never decreasing, and, with ``config``, the
    facts table the config makes (:func:`check_record_config`, with the digest against ``tree``, the
    parsed ``config.json``). Anything wrong is one ConfigError beginning with ``where`` (default: the
    directory)."""
    directory = Path(directory)
    where = where or repr(str(directory))
    needed = None if keys is None else {*keys, "t", "facts", "answers_per_relation", DIGEST_KEY}
    arrays, sizes = _load(directory / RECORD_FILE, TRAJECTORY_SCHEMA, None, needed, where)
    if sizes["K"] < 1:
        raise ConfigError(f"{where}: its {RECORD_FILE} records no time (t has shape (0,)); {RUN_HINT}")
    t, answers = arrays["t"], int(arrays["answers_per_relation"])
    if not np.isfinite(t).all():
        raise ConfigError(f"{where}: its {RECORD_FILE} has NaN or infinite times t; {RUN_HINT}")
    if (np.diff(t) < 0).any():
        raise ConfigError(f"{where}: its {RECORD_FILE} has times t decreasing at index "
                          f"{int(np.argmax(np.diff(t) < 0)) + 1}; {RUN_HINT}")
    if answers < 1:
        raise ConfigError(f"{where}: its {RECORD_FILE} has answers_per_relation={answers}; expected >= 1; "
                          f"{RUN_HINT}")
    if config is not None:
        digest = str(arrays[DIGEST_KEY]) if DIGEST_KEY in arrays else None
        check_record_config(config, arrays["facts"], answers, digest, tree, where)
    return arrays if keys is None else {k: arrays[k] for k in keys if k in arrays}
