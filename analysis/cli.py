"""The ``factrecall`` command line. Every invalid input exits 2 with one line on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dynamics.config import ConfigError, check_device, resolve_config


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="JSON (or YAML) config file of sections")
    parser.add_argument("--preset", metavar="NAME", help="named preset (default: figure5)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override one dotted key, e.g. --set task.subjects=8 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="factrecall", description="Simulate how a one-layer transformer learns facts.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sim = commands.add_parser("simulate", help="integrate the gradient flow into a run directory")
    _add_config_options(sim)
    sim.add_argument("--out", metavar="DIR", help="run directory (default runs/<preset>-<config hash>)")
    sim.add_argument("--train", action="store_true", help="also run the discrete training of train.*")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")

    stages = commands.add_parser("stages", help="detect the stages of a run directory and write them")
    stages.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by factrecall simulate")

    comp = commands.add_parser("compare", help="the flow against discrete training from the same start")
    _add_config_options(comp)
    comp.add_argument("--out", metavar="DIR", required=True, help="output directory")
    comp.add_argument("--lrs", default="0.8,0.4,0.2,0.1", help="learning rates (comma-separated)")
    comp.add_argument("--optimizers", default="gd,sgd,adam", help="among gd, sgd, adam")
    comp.add_argument("--batch-sizes", default="64,256,1024", help="SGD batch sizes")
    comp.add_argument("--seeds", default="3", help="SGD/Adam runs per setting (mean and band)")
    comp.add_argument("--no-modified", action="store_true", help="skip GD's modified flows")
    comp.add_argument("--quiet", action="store_true", help="no progress lines")

    sweep = commands.add_parser("sweep", help="a grid of simulations summarised by their stages")
    _add_config_options(sweep)
    sweep.add_argument("--grid", metavar="KEY=VALUES", action="append", default=[],
                       help="a grid axis: KEY=v1,v2,... or KEY=start:stop:log:n (repeatable)")
    sweep.add_argument("--out", metavar="DIR", required=True, help="sweep directory (resumable)")
    sweep.add_argument("--workers", default="1", help="worker processes (default 1)")
    sweep.add_argument("--backend", default="local", help="local or dask")
    sweep.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler (default: a local cluster)")
    sweep.add_argument("--train", action="store_true", help="also run train.* at every point")
    sweep.add_argument("--keep-trajectories", action="store_true", help="save every point's trajectory")
    sweep.add_argument("--no-batch", action="store_true", help="integrate every point on its own")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")

    splot = commands.add_parser("sweep-plot", help="redraw a phase diagram from a sweep's results.csv")
    splot.add_argument("dir", metavar="DIR")
    splot.add_argument("--x", required=True, help="grid key on the x axis")
    splot.add_argument("--y", help="grid key on the y axis (omit for a line plot)")
    splot.add_argument("--value", required=True, help="results.csv column to show")

    cap = commands.add_parser("capacity", help="facts stored against parameters (paper Figures 1 and 4)")
    cap.add_argument("kind", metavar="KIND", help="linear, mlp, transformer or tradeoff")
    cap.add_argument("--quick", action="store_true", help="small grids that run in minutes on a CPU")
    cap.add_argument("--seeds", default=None, help="seeds per model size (default: 1 quick, 5 full)")
    cap.add_argument("--out", metavar="DIR", help="output directory (default runs/capacity-KIND[-quick])")
    cap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    cap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    bench = commands.add_parser("bench", help="benchmark the flow against discrete training")
    bench.add_argument("--quick", action="store_true", help="smaller problem sizes (a smoke run)")
    bench.add_argument("--out", metavar="FILE", default="bench.json",
                       help="where to save the JSON (the scale figure goes beside it, .png)")
    bench.add_argument("--sizes", default=None, metavar="SxR,...",
                       help="tables of the scale section, e.g. 64x8,256x16 (default 12x8,64x8,125x8)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``factrecall`` console script."""
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except ConfigError as err:
        message = str(err)
        print(message if message.startswith("factrecall") else f"factrecall: error: {message}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("factrecall: interrupted; nothing was written for the unfinished run", file=sys.stderr)
        return 130


def _simulate(args: argparse.Namespace) -> int:
    from .rundir import check_target, default_run_dir
    from .simulate import simulate

    config = resolve_config(args.preset, args.config, args.overrides)
    _check_device(config.device)
    name = args.preset or (Path(args.config).stem if args.config else "figure5")
    out = Path(args.out) if args.out else default_run_dir(config, name)
    check_target(out, config)
    runs = simulate(config, out, train=args.train, progress=not args.quiet)
    from .report import format_stage_table

    for label, run in runs.items():
        traj, info = run.trajectory, run.trajectory.info
        cost = f"{info.cost.function_evals} " + ("function evals" if label == "flow" else "gradient evals")
        print(f"{label:5s}  status={info.status}  final loss={info.final_loss:.4g}  "
              f"t_end={traj.t[-1]:.4g}  {cost}  {info.cost.wall_seconds:.2f} s")
        if not info.ok:
            print(f"       {info.message}")
        print(format_stage_table(label, run.stages))
    print(f"wrote {out}")
    return 0


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    import torch

    index = torch.device(device).index or 0
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        raise ConfigError(f"device={device!r}: not available on this machine ({count} CUDA devices); "
                          "allowed: cpu" + (f" or cuda:0..cuda:{count - 1}" if count else ""))


def _stages(args: argparse.Namespace) -> int:
    from .report import analyse_run_directory, format_stage_table

    path = Path(args.run_dir)
    if not path.is_dir():
        raise ConfigError(f"RUN_DIR={args.run_dir!r}: not a directory; allowed: a run directory written by "
                          "factrecall simulate")
    for name, payload in analyse_run_directory(path):
        print(format_stage_table(name, payload))
    print(f"wrote stages.json, stages.npz, loss.png, facts.png, fractions.png in {path}")
    return 0


def _parse_list(flag: str, text: str, kind: type) -> tuple:
    try:
        values = tuple(kind(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise ConfigError(f"{flag}={text!r}: must be a comma-separated list of {kind.__name__} values"
                          ) from None
    if not values:
        raise ConfigError(f"{flag}={text!r}: must list at least one value")
    return values


def _parse_count(flag: str, text: str) -> int:
    """One integer >= 1 (``--seeds``, ``--workers``): a clear error rather than silently taking the first."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{flag}={text!r}: must be one integer >= 1")
    return value


def _compare(args: argparse.Namespace) -> int:
    from .compare import CompareSpec
    from .compare_run import run_compare

    config = resolve_config(args.preset, args.config, args.overrides)
    _check_device(config.device)
    spec = CompareSpec(lrs=_parse_list("--lrs", args.lrs, float),
                       optimizers=tuple(s.strip() for s in args.optimizers.split(",") if s.strip()),
                       batch_sizes=_parse_list("--batch-sizes", args.batch_sizes, int),
                       seeds=_parse_count("--seeds", args.seeds),
                       modified_flow=not args.no_modified)
    run_compare(config, spec, Path(args.out), quiet=args.quiet)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .sweep import SweepOptions, parse_grid, run_sweep
    from .sweep_plots import plot_sweep

    config = resolve_config(args.preset, args.config, args.overrides)
    _check_device(config.device)
    grid = parse_grid(args.grid, config)
    workers = _parse_count("--workers", args.workers)
    if args.backend not in ("local", "dask"):
        raise ConfigError(f"--backend={args.backend!r}: must be local or dask")
    options = SweepOptions(train=args.train, keep_trajectories=args.keep_trajectories,
                           batch=not args.no_batch)
    out = Path(args.out)
    rows = run_sweep(config, grid, out, options, workers=workers, backend=args.backend,
                     scheduler=args.scheduler, progress=not args.quiet)
    figures = plot_sweep(out, list(grid))
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows)} points in {out / 'results.csv'} ({failed} not ok); figures: "
          + ", ".join(p.name for p in figures))
    return 0


def _sweep_plot(args: argparse.Namespace) -> int:
    from .sweep_plots import plot_heatmap, plot_lines, read_results

    directory = Path(args.dir)
    rows = read_results(directory / "results.csv")
    if args.y:
        path = directory / f"phase_{args.value}_{args.x}_{args.y}.png"
        plot_heatmap(rows, args.x, args.y, args.value, path)
    else:
        path = directory / f"sweep_{args.value}_{args.x}.png"
        plot_lines(rows, args.x, [args.value], path)
    print(f"wrote {path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    sizes = None
    if args.sizes is not None:
        try:
            sizes = tuple((int(a), int(b)) for a, b in (item.split("x") for item in args.sizes.split(",")))
        except ValueError:
            raise ConfigError(f"--sizes={args.sizes!r}: must be a comma-separated list of SxR, e.g. 64x8"
                              ) from None
        if not sizes or any(a < 1 or b < 1 for a, b in sizes):
            raise ConfigError(f"--sizes={args.sizes!r}: sizes must be >= 1")
    run_bench(quick=args.quick, out=Path(args.out), sizes=sizes)
    return 0


def _capacity(args: argparse.Namespace) -> int:
    from .capacity_run import KINDS, run_capacity

    if args.kind not in KINDS:
        raise ConfigError(f"KIND={args.kind!r}: allowed " + ", ".join(KINDS))
    seeds = (1 if args.quick else 5) if args.seeds is None else _parse_count("--seeds", args.seeds)
    check_device(args.device, "--device")
    _check_device(args.device)
    default = Path("runs") / f"capacity-{args.kind}{'-quick' if args.quick else ''}"
    out = Path(args.out) if args.out else default
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out={str(out)!r}: exists and is not a directory; allowed: a directory path")
    if any(p.is_file() for p in out.parents):
        raise ConfigError(f"--out={str(out)!r}: lies below a file; allowed: a directory path")
    summary = run_capacity(args.kind, out, quick=args.quick, seeds=seeds, device=args.device,
                           progress=not args.quiet)
    if args.kind == "tradeoff":
        info = summary["tradeoff"]
        print(f"tradeoff: minimum attention parameters {info['min_attention_params']} "
              f"(all smaller fail: {info['below_all_fail']})")
    else:
        fit = summary["fit"]
        print(f"{args.kind}: exponent {fit['exponent']:.3f} (95% CI {fit['ci_low']:.3f}.."
              f"{fit['ci_high']:.3f}, {fit['points']} points) against {summary['x_label']}")
        if "fit_vs_d" in summary:
            print(f"linear: exponent {summary['fit_vs_d']['exponent']:.3f} against d "
                  f"(95% CI {summary['fit_vs_d']['ci_low']:.3f}..{summary['fit_vs_d']['ci_high']:.3f})")
    print(f"wrote {out / 'trials.csv'}, {out / 'summary.json'}, " + ", ".join(summary["figures"]) +
          f" in {summary['wall_seconds']:.0f} s")
    return 0


_COMMANDS = {"simulate": _simulate, "stages": _stages, "compare": _compare, "sweep": _sweep,
             "sweep-plot": _sweep_plot, "bench": _bench, "capacity": _capacity}

if __name__ == "__main__":
    sys.exit(main())
