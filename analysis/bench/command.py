"""``factrecall bench``: run the benchmark suite, print its table, save the JSON and the scale figure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynamics.errors import ConfigError

from ..rundir import check_output_file
from .suite import SECTIONS, run_bench

OUT_ALLOWED = "a new .json file path, or a bench result to replace, in a writable directory"


def is_bench_result(path: Path) -> bool:
    """Whether ``path`` holds what ``bench`` writes (a JSON object with its ``quick`` and ``cpu_count``)."""
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and {"quick", "cpu_count"} <= payload.keys()


def check_bench_out(out: str) -> tuple[Path, Path]:
    """The JSON path of ``--out`` and the figure beside it (``.png``), refused (one line) before any work
    when either cannot be written or would replace a file that is not an earlier bench's."""
    path = check_output_file(out, OUT_ALLOWED, replaceable=is_bench_result)
    figure = path.with_suffix(".png")
    if figure.is_symlink() or figure.is_dir() or (figure.exists() and not is_bench_result(path)):
        raise ConfigError(f"--out={out!r}: the figure beside it, {str(figure)!r}, exists and was not written "
                          f"by bench; allowed: {OUT_ALLOWED}")
    return path, figure


def command(args: argparse.Namespace) -> int:
    """The ``bench`` subcommand: ``--sizes SxR,...``, ``--only NAME,...`` and ``--out`` checked, then
    :func:`run_bench`; says where it wrote the JSON (and the scale figure)."""
    sizes = None
    if args.sizes is not None:
        try:
            sizes = tuple((int(a), int(b)) for a, b in (item.split("x") for item in args.sizes.split(",")))
        except ValueError:
            raise ConfigError(f"--sizes={args.sizes!r}: must be a comma-separated list of SxR, e.g. 64x8"
                              ) from None
        if not sizes or any(a < 1 or b < 1 for a, b in sizes):
            raise ConfigError(f"--sizes={args.sizes!r}: sizes must be >= 1")
    only = None
    if args.only is not None:
        only = tuple(name.strip() for name in args.only.split(","))
        unknown = [name for name in only if name not in SECTIONS]
        if unknown or not only:
            raise ConfigError(f"--only={args.only!r}: unknown section {', '.join(unknown) or '(none)'}; "
                              f"allowed: {', '.join(SECTIONS)}")
    out, _ = check_bench_out(args.out)
    results = run_bench(quick=args.quick, out=out, sizes=sizes, huge=args.huge, only=only)
    written = [str(out.resolve())]
    if "scale_figure" in results:
        written.append(str(Path(results["scale_figure"]).resolve()))
    print("wrote " + " and ".join(written))
    return 0
