"""Mutation testing of one module against its tests with mutmut, in a scratch copy of the working tree.

    python tests/mutation.py dynamics/schedule.py tests/test_schedule.py [--minutes 10] [--only GLOB] [--keep]
        [--head] [--sample N --seed S] [--work DIR]

Copies the files git tracks (and the untracked ones it does not ignore) into a temporary folder (``--head``:
the committed tree instead, ``git archive HEAD``, so that others' unfinished edits are not mutated), writes a
``setup.cfg`` there that tells mutmut which module to mutate and which tests to run (serially:
``-p no:xdist``, the slow tests included), runs ``mutmut run`` and prints every mutant that survived and
the score (killed / all that ran); ``--minutes`` stops the run after that long and scores the mutants
tested by then; ``--sample N`` runs N of the module's mutants drawn at random (``--seed``), for a module
whose mutants would take hours, and prints the score with its 95% (Wilson) interval. The working tree is
never touched. ``--keep`` keeps the copy so that ``cd <copy> && mutmut show <name>`` prints a survivor's
diff; ``--work DIR`` goes on in such a copy, e.g. after ``--minutes`` cut a run short: the mutants tested
there keep their result (with ``--sample``, only the drawn ones not tested yet run). Not part of the default
test run (it takes minutes per module); docs/testing.md says how to read the results.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dynamics", "analysis")


def copy_tree(target: Path) -> None:
    """The working tree as git sees it (tracked, and untracked but not ignored) under ``target``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def copy_head(target: Path) -> None:
    """The committed tree (``git archive HEAD``) under ``target``."""
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


# mutmut's own steps up to the generated mutants (no test run), in the copy; their names then come from
# ``mutmut results --all true``
GENERATE = ("import mutmut.__main__ as m; m.set_mutant_under_test('mutant_generation'); "
            "m.makedirs('mutants', exist_ok=True); m.copy_src_dir(); m.copy_also_copy_files(); "
            "m.setup_source_paths(); m.create_mutants(1)")


def statuses(work: Path, mutmut: list[str]) -> dict[str, str]:
    """Every mutant generated in ``work`` and its status (``not checked`` until it runs), as ``mutmut results
    --all true`` lists them."""
    results = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True,
                             check=False).stdout
    return {line.split(":")[0].strip(): line.rsplit(":", 1)[-1].strip()
            for line in results.splitlines() if ":" in line}


def mutant_names(work: Path, mutmut: list[str]) -> list[str]:
    """Every mutant's name, generated in ``work`` without running a test (an earlier copy's are kept)."""
    subprocess.run([sys.executable, "-c", GENERATE], cwd=work, check=True, capture_output=True)
    return list(statuses(work, mutmut))


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion p = killed / n:
    (p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n)."""
    p = killed / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def write_config(target: Path, module: str, tests: list[str], timeout_multiplier: float = 60) -> None:
    """mutmut's settings: the package of ``module`` copied, only ``module`` mutated, ``tests`` run; a
    mutant's tests are stopped after ``timeout_multiplier`` × (their clean time + 1 s) of wall time (mutmut's
    default, 15, stops slow but finished tests on a loaded machine and calls them a timeout)."""
    package = module.split("/")[0]
    # the project's other package is copied beside the mutated one, so that the tests import both from
    # the copy (not one of them from the editable install, i.e. the working tree as it is now)
    others = [name for name in PACKAGES if name != package]
    lines = ["[mutmut]", f"source_paths = {package}", f"only_mutate = {module}",
             "also_copy =", *(f"    {name}" for name in others),
             "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests),
             "pytest_add_cli_args =", "    -p", "    no:xdist", "    -o", "    addopts=",
             # torch's thread pools do not survive a fork of a process that has run tests: fork the workers
             # from a server that has only imported them (a plain fork deadlocks on the pools' locks)
             "process_isolation = forkserver", f"timeout_multiplier = {timeout_multiplier:g}", ""]
    (target / "setup.cfg").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="the file to mutate, e.g. dynamics/schedule.py")
    parser.add_argument("tests", nargs="+", help="the test files (or node ids) that should kill its mutants")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--minutes", type=float, help="stop the run after this long, score what ran")
    parser.add_argument("--timeout-multiplier", type=float, default=60,
                        help="a mutant's tests time out after this many times their clean time (default 60)")
    parser.add_argument("--only", action="append", default=[],
                        help="mutant names to run (mutmut's globs, e.g. 'dynamics.schedule.x_schedule_of*')")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy and print its path")
    parser.add_argument("--head", action="store_true", help="mutate the committed tree, not the working tree")
    parser.add_argument("--sample", type=int, help="run this many mutants drawn at random (with --seed)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of --sample's draw (default 0)")
    parser.add_argument("--work", type=Path, help="go on in a copy that --keep kept (a run cut short): with "
                        "--sample, only the drawn mutants not yet tested run")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="factrecall-mutation-"))
    try:
        if args.work is None:
            (copy_head if args.head else copy_tree)(work)
            write_config(work, args.module, args.tests, args.timeout_multiplier)
        mutmut = [sys.executable, "-m", "mutmut"]
        names = list(args.only)
        if args.sample is not None:
            every = mutant_names(work, mutmut)
            names = sorted(random.Random(args.seed).sample(every, min(args.sample, len(every))))
            print(f"{args.module}: a sample of {len(names)} of its {len(every)} mutants (seed {args.seed})")
        chosen = names
        if args.work is not None and args.sample is not None:
            found = statuses(work, mutmut)
            names = [name for name in names if found[name] == "not checked"]
            print(f"{len(names)} of them not tested yet")
        command = [*mutmut, "run", "--max-children", str(args.max_children), *names]
        run = subprocess.Popen(command if names or not chosen else ["true"], cwd=work, start_new_session=True)
        try:
            run.wait(timeout=None if args.minutes is None else 60 * args.minutes)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGTERM)  # mutmut and the test processes it forked
            run.wait()
            print(f"stopped after {args.minutes:g} min", file=sys.stderr)
        found = statuses(work, mutmut)
        if args.sample is not None:  # mutmut lists every mutant generated: keep the drawn ones
            found = {name: found[name] for name in chosen if name in found}
        status = list(found.values())
        survived = [f"{name}: survived" for name, s in found.items() if s == "survived"]
        ran = [s for s in status if s in ("killed", "survived", "timeout", "suspicious")]
        killed = sum(s in ("killed", "timeout") for s in ran)
        print("\n".join(survived))
        print(f"{args.module}: {killed} of {len(ran)} mutants killed"
              + (f" ({100 * killed / len(ran):.0f}%)" if ran else "")
              + (f", {status.count('timeout')} of them by a timeout" if "timeout" in status else "")
              + f"; {len(status) - len(ran)} not run (no test reaches them, or the run was cut short)")
        if args.sample is not None and ran:
            low, high = wilson(killed, len(ran))
            print(f"a sample: 95% interval {100 * low:.0f}% to {100 * high:.0f}% of all the module's mutants")
        if args.keep:
            print(f"the copy: {work}  (mutmut show <name> there)")
        return 0
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
