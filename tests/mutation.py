"""Mutation testing of modules against their tests with mutmut, in a scratch copy of the working tree.

    python tests/mutation.py dynamics/schedule.py tests/test_schedule.py [--minutes 10] [--only GLOB] [--keep]
        [--head] [--sample N --seed S [--sample-share F]] [--work DIR]
    python tests/mutation.py dynamics/io.py 'dynamics/models/*' -- tests/test_npz.py tests/test_models.py ...

Copies the files git tracks (and the untracked ones it does not ignore) into a temporary folder (``--head``:
the committed tree instead, ``git archive HEAD``, so that others' unfinished edits are not mutated), writes a
``setup.cfg`` there that tells mutmut which module to mutate and which tests to run (serially:
``-p no:xdist``, the slow tests included), runs ``mutmut run`` and prints every mutant that survived and
the score (killed / all that ran); ``--minutes`` stops the run after that long and scores the mutants
tested by then; ``--sample N`` runs N of the module's mutants drawn at random (``--seed``), for a module
whose mutants would take hours, and prints the score with its 95% (Wilson) interval. Several modules (the
leading arguments that name files or ``*`` globs of a package) are mutated in one run: every mutant runs only
the given tests that reach its function (mutmut traces them once), ``--sample`` draws that many from each
module (a stratified sample; ``--sample-share F`` draws at least the share F of a large module's), and the
scores are printed per module and pooled, each module weighted by its number of mutants. The working tree is
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


def wilson(killed: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion p = killed / n:
    (p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n)."""
    p = killed / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # clipped to [0, 1]: at p = 0 or 1 the bound is the end itself, up to rounding
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def split_targets(targets: list[str]) -> tuple[list[str], list[str]]:
    """The leading ``targets`` that name a file or a ``*`` glob of one of the project's packages (the
    modules to mutate), and the rest (the tests and pytest's arguments). A ``__pycache__`` folder (an
    unquoted glob that the shell expanded) is passed over."""
    count = 0
    while (count < len(targets) and targets[count].split("/")[0] in PACKAGES
           and (targets[count].endswith((".py", "*")) or targets[count].endswith("__pycache__"))):
        count += 1
    return [t for t in targets[:count] if not t.endswith("__pycache__")], targets[count:]


def module_of(name: str) -> str:
    """The file a mutant's name comes from: ``dynamics.models.tokens.x_f__mutmut_3`` →
    ``dynamics/models/tokens.py`` (a package's own code: ``…/__init__.py``)."""
    path = name.rsplit(".", 1)[0].replace(".", "/")
    if path.endswith("/__init__"):
        return path + ".py"
    return path + "/__init__.py" if (ROOT / path).is_dir() else path + ".py"


def draw(every: list[str], size: int, share: float, seed: int) -> list[str]:
    """A stratified sample: from each module's mutants max(``size``, ⌈``share`` · count⌉) of them (all when
    fewer), the first of the module's names shuffled by ``random.Random(f"{seed}:{module}")`` — so that a
    larger size extends a smaller one's sample, and a run can grow in chunks (``--work``)."""
    by_module: dict[str, list[str]] = {}
    for name in sorted(every):
        by_module.setdefault(module_of(name), []).append(name)
    drawn = []
    for module, names in by_module.items():
        random.Random(f"{seed}:{module}").shuffle(names)
        drawn += names[:max(size, math.ceil(share * len(names)))]
    return sorted(drawn)


def pooled(strata: list[tuple[int, int, int]]) -> tuple[float, float, float]:
    """The score of all the modules' mutants from a stratified sample, each stratum (mutants in the module
    N_m, run n_m, killed k_m) weighted by its share of the mutants w_m = N_m / Σ N: p = Σ w_m p_m, and a 95%
    interval: Wilson's at the effective sample size n = p(1 − p) / Σ w_m² p_m(1 − p_m) / n_m (the number
    of independent draws that would give the same variance; Σ n_m when every p_m is 0 or 1)."""
    strata = [(size, ran, killed) for size, ran, killed in strata if ran]
    total = sum(size for size, _, _ in strata)
    p = sum(size / total * killed / ran for size, ran, killed in strata)
    variance = sum((size / total) ** 2 * (killed / ran) * (1 - killed / ran) / ran
                   for size, ran, killed in strata)
    n = p * (1 - p) / variance if variance > 0 else sum(ran for _, ran, _ in strata)
    return (p, *wilson(p * n, n))


def write_config(target: Path, modules: list[str], tests: list[str], timeout_multiplier: float = 60) -> None:
    """mutmut's settings: the packages of ``modules`` copied, only ``modules`` mutated, ``tests`` run; a
    mutant's tests are stopped after ``timeout_multiplier`` × (their clean time + 1 s) of wall time (mutmut's
    default, 15, stops slow but finished tests on a loaded machine and calls them a timeout)."""
    packages = sorted({module.split("/")[0] for module in modules})
    if len(packages) > 1:
        raise SystemExit(f"modules of one package at a time, not {' and '.join(packages)}")
    package = packages[0]
    # the project's other package is copied beside the mutated one, so that the tests import both from
    # the copy (not one of them from the editable install, i.e. the working tree as it is now)
    others = [name for name in PACKAGES if name != package]
    # and the documents that tests read (cited sections, the README's commands)
    others += [name for name in ("docs", "README.md") if (target / name).exists()]
    lines = ["[mutmut]", f"source_paths = {package}", "only_mutate =", *(f"    {m}" for m in modules),
             "also_copy =", *(f"    {name}" for name in others),
             "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests),
             "pytest_add_cli_args =", "    -p", "    no:xdist", "    -o", "    addopts=",
             # torch's thread pools do not survive a fork of a process that has run tests: fork the workers
             # from a server that has only imported them (a plain fork deadlocks on the pools' locks)
             "process_isolation = forkserver", f"timeout_multiplier = {timeout_multiplier:g}", ""]
    (target / "setup.cfg").write_text("\n".join(lines))


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line: ``args.modules`` (what to mutate) and ``args.tests`` (what pytest runs) split
    from the positional arguments by ``split_targets``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="MODULE... [--] TEST",
                        help="the files to mutate (or globs, e.g. 'dynamics/models/*'), then the test files "
                        "(or node ids, and after -- pytest's options) that should kill their mutants")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--minutes", type=float, help="stop the run after this long, score what ran")
    parser.add_argument("--timeout-multiplier", type=float, default=60,
                        help="a mutant's tests time out after this many times their clean time (default 60)")
    parser.add_argument("--only", action="append", default=[],
                        help="mutant names to run (mutmut's globs, e.g. 'dynamics.schedule.x_schedule_of*')")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy and print its path")
    parser.add_argument("--head", action="store_true", help="mutate the committed tree, not the working tree")
    parser.add_argument("--sample", type=int, help="run this many mutants drawn at random (with --seed), "
                        "this many of each module when several are mutated")
    parser.add_argument("--sample-share", type=float, default=0.0,
                        help="with --sample, draw at least this share of each module's mutants (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of --sample's draw (default 0)")
    parser.add_argument("--work", type=Path, help="go on in a copy that --keep kept (a run cut short): with "
                        "--sample, only the drawn mutants not yet tested run")
    argv = sys.argv[1:] if argv is None else argv
    # what follows "--" goes to pytest as it is; the modules come before it, with the options
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.modules, args.tests = split_targets(args.targets + argv[cut + 1:])
    if not args.modules or not args.tests:
        parser.error("name the modules to mutate (files of dynamics/ or analysis/), then their tests")
    return args


RAN = ("killed", "survived", "timeout", "suspicious")


def report(found: dict[str, str], sizes: dict[str, int], sample: bool) -> None:
    """Print the survivors, then per module the killed (timeouts among them), survived, *no tests* and
    unrun mutants and the score (with ``sample``: its 95% Wilson interval over the module's ``sizes``
    mutants), then, for several modules, the pooled score of a stratified sample (``pooled``)."""
    print("\n".join(f"{name}: survived" for name, s in found.items() if s == "survived"))
    strata = []
    for module in sorted({module_of(name) for name in found}):
        status = [s for name, s in found.items() if module_of(name) == module]
        ran = [s for s in status if s in RAN]
        killed = sum(s in ("killed", "timeout") for s in ran)
        unrun = len(status) - len(ran) - status.count("no tests")
        strata.append((sizes.get(module, len(status)), len(ran), killed))
        print(f"{module}: {killed} of {len(ran)} mutants killed"
              + (f" ({100 * killed / len(ran):.0f}%)" if ran else "")
              + (f", {status.count('timeout')} of them by a timeout" if "timeout" in status else "")
              + f"; {status.count('survived')} survived; {status.count('no tests')} no tests"
              + (f"; {unrun} not run (the run was cut short)" if unrun else ""))
        if sample and ran:
            low, high = wilson(killed, len(ran))
            print(f"  a sample of {len(status)} of {sizes.get(module, len(status))}: 95% interval "
                  f"{100 * low:.0f}% to {100 * high:.0f}% of all the module's mutants")
    if len(strata) > 1 and any(ran for _, ran, _ in strata):
        p, low, high = pooled(strata)
        killed, ran = sum(k for *_, k in strata), sum(r for _, r, _ in strata)
        print(f"pooled: {killed} of {ran} killed; weighted by each module's {sum(n for n, _, _ in strata)} "
              f"mutants {100 * p:.0f}% (95% interval {100 * low:.0f}% to {100 * high:.0f}%)")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="factrecall-mutation-"))
    try:
        if args.work is None:
            (copy_head if args.head else copy_tree)(work)
            write_config(work, args.modules, args.tests, args.timeout_multiplier)
        mutmut = [sys.executable, "-m", "mutmut"]
        names, sizes = list(args.only), {}
        if args.sample is not None:
            # a kept copy's mutants are generated already (generating them again takes minutes)
            every = list(statuses(work, mutmut)) if args.work is not None else mutant_names(work, mutmut)
            for name in every:
                sizes[module_of(name)] = sizes.get(module_of(name), 0) + 1
            names = draw(every, args.sample, args.sample_share, args.seed)
            print(f"{' '.join(args.modules)}: a sample of {len(names)} of their {len(every)} mutants "
                  f"(seed {args.seed})")
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
        report(found, sizes, args.sample is not None)
        if args.keep:
            print(f"the copy: {work}  (mutmut show <name> there)")
        return 0
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
