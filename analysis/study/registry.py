"""The named studies of ``factrecall study NAME``: one entry each, with the options it adds to the common
ones (``--out``, ``--quick``, ``--workers``, ``--quiet``) and the files it writes. This module imports only
the standard library: ``factrecall --help`` builds every study's parser without loading the engine.

A study's module (``module``) provides

* ``plan(args) -> StudyPlan``: the base config and the grids of its points (each a product of value lists;
  the points of all grids, duplicates counted once, are the study);
* ``compute(values) -> dict``: one point's row, from its values alone (it may run in a worker process);
  the row holds the values' keys, and a ``status`` (``ok`` when it has none);
* ``finish(out, args, rows) -> str``: write the study's files from the rows of every point (in plan order)
  and return what the command prints;
* optionally ``prepare(out, args, store)``: work before the points (the scale study's ``--import``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from dynamics.registry import Registry  # standard library only: --help loads no engine


def _no_options(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Study:
    """One named study: its ``name``, its one line of ``--help`` (``summary``), the module that runs it
    (imported only when it runs), its options (``options(parser)``) and the files it writes into its
    directory beside the point store, each with one line (``outputs``)."""

    name: str
    summary: str
    module: str
    outputs: dict[str, str]
    options: Callable[[argparse.ArgumentParser], None] = _no_options


def register_study(study: Study) -> Study:
    """Add ``study`` to :data:`STUDIES` (and so to ``factrecall study --help``); a name taken is refused."""
    return STUDIES.register(study)


def _scale_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="RUN_DIR",
                        help="take a size from this factrecall simulate run of the study's config of that "
                             "size instead of running it (repeatable)")


def _geometry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", help="the table's rows, among gf, sign, spectral, sgd, adam, signsgd, muon "
                                       "(default: all; with --quick gf,sign,signsgd)")
    parser.add_argument("--pairs", metavar="SxR,...", help="the (S, R) points of every row (default: "
                        "4x32,8x16,16x8,32x4,64x2,128x2; with --quick 4x32,16x4)")
    parser.add_argument("--embeddings-point", metavar="SxRxd",
                        help="sign flow of the embedded model, one-hot against Hadamard embeddings, at this "
                             "point, '' for none (default: 16x4x32; none with --quick)")
    parser.add_argument("--answers-per-relation", default="4", metavar="D",
                        help="answers per relation D of every table: an integer >= 2 (random tables), or S "
                             "(one answer per fact, the structured table: Li et al.'s setting) (default: 4)")
    parser.add_argument("--start", default="constant", help="constant (every parameter 1e-5) or manifold "
                        "(Li et al.'s start, alpha0 = beta0 = 0.01) (default: constant)")
    parser.add_argument("--time", default="midpoint", help="T_R, T_S as the midpoint crossings of the "
                        "relation and subject losses (midpoint), or as the first times the mean p(A_r), "
                        "p(subject's answers) reach 1 - delta (p) (default: midpoint)")
    parser.add_argument("--delta", type=float, help="delta of --time p (default: 0.1; refused with "
                                                    "--time midpoint)")
    parser.add_argument("--figure", metavar="PATH.png", help="also draw the figure here (an existing .png "
                                                             "is replaced)")
    parser.add_argument("--eps-ladder", metavar="EPS,...", help="run the sign and spectral rows at each of "
                        "these flow.geometry_eps (three or more, e.g. 1e-4,3e-5,1e-5,3e-6,1e-6) and write "
                        "their Richardson limit eps -> 0 with its error to limit.csv (default: each row's "
                        "own eps; FACTRECALL_TIME_LIMIT bounds each flow)")


def _dsweep_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", metavar="SxR,...", help="the (S, R) points of every line (default: "
                        "4x32,8x16,16x8,32x4,64x2,128x2; with --quick 4x32,32x4)")
    parser.add_argument("--answers", metavar="D,...", help="answers per relation D of the lines: integers "
                        "or S (default: 4,16,S; with --quick 4,S)")
    parser.add_argument("--geometries", help="among euclidean, spectral, sign (default: all three; with "
                                             "--quick euclidean)")
    parser.add_argument("--eps-sign", type=float, default=1e-6, help="flow.geometry_eps of the sign flow")
    parser.add_argument("--eps-spectral", type=float, default=1e-5,
                        help="flow.geometry_eps of the spectral flow")


def _timeline_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-sgd", action="store_true", help="flows only (no SGD beside each flow)")


STUDIES: Registry[Study] = Registry("study", None, (
        Study("scale", "escape times and the hallucination plateau against the number of facts "
                       "(docs/scale.md)", "analysis.study.scale",
              {"scale.json": "every size's row and the power-law fits of each series",
               "scale.csv": "the rows as a table", "scale.png": "escape times against the number of facts"},
              _scale_options),
        Study("geometry", "learning times T_R, T_S per optimizer geometry over S/R (docs/geometry.md)",
              "analysis.study.geometry",
              {"table.csv": "one line per row and (S, R)", "embeddings.csv": "the embedded sign flow, "
               "one-hot against Hadamard", "ratio.png": "T_S/T_R against S/R per row",
               "limit.csv": "with --eps-ladder: T_R, T_S at eps -> 0 per row and (S, R), with errors"},
              _geometry_options),
        Study("dsweep", "T_S/T_R against S/R for several answers per relation D from Li et al.'s start "
                        "(docs/geometry.md)", "analysis.study.dsweep",
              {"dsweep.csv": "one line per geometry, D and (S, R)", "dsweep.png": "T_S/T_R (p = 0.9) against "
               "S/R, one panel per geometry"}, _dsweep_options),
        Study("timeline", "data over time: Zipf frequencies, warm-up, fine-tuning with replay, held-out "
                          "subjects (docs/data-over-time.md)", "analysis.study.timeline",
              {"experiments.json": "every number of the four experiments",
               "data_over_time.png": "the four experiments' figure"},
              _timeline_options)), identifiers=False)
