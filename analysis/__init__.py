"""Experiments on the engine and everything that reads trajectories, behind the ``factrecall`` command.

One package per command's subject — ``stages`` (detection, linearised theory, run-directory report and
figures), ``compare`` (the flow against discrete training), ``sweep`` (phase diagrams over grids),
``capacity`` (facts stored against parameters), ``bench`` (performance targets) — each with a
``command`` module for its subcommand; ``simulate`` is the ``simulate`` subcommand. Shared by them:
``plotting`` (figures, the log-t axis, stage shading), ``rundir`` (output directories and the one
``--out`` check), ``arguments`` (command-line values) and ``cli`` (the parser and the dispatch).
"""
