"""Experiments on the engine and everything that reads trajectories, behind the ``factrecall`` command.

One package per command's subject — ``stages`` (detection, linearised theory, run-directory report and
figures), ``compare`` (the flow against discrete training), ``sweep`` (phase diagrams over grids),
``capacity`` (facts stored against parameters), ``bench`` (performance targets), ``study`` (the named studies
of many runs behind ``factrecall study NAME``) — each with a ``command`` module for its subcommand;
``simulate`` is the ``simulate`` subcommand. Shared by them: ``timeline`` (groups of facts while the data
change, written by ``stages``), ``plotting`` (figures, the log-t axis, stage shading), ``loglog`` (the one
log–log fit), ``rundir`` (output directories and the one ``--out`` check), ``arguments`` (command-line
values) and ``cli`` (the registry of commands, the parser and the dispatch). The registries of commands and
studies are :class:`dynamics.registry.Registry` instances, as every registry of the project. A package
imports another only through its public names, and no two packages' analysis code import each other
(tests/test_boundaries.py).
"""
