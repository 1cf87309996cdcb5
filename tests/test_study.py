"""``factrecall study``: a study registered from a test runs through the common runner; a killed study
resumes without recomputing its finished points; ``--out`` is refused before any work; a toy command
registered from a test appears in ``factrecall --help`` and runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from analysis import cli
from analysis.cli import Command, main
from analysis.study import STUDIES, Study
from analysis.study.runner import StudyPlan
from dynamics.config import resolve_config
from dynamics.io import atomic_write_json

COMPUTED: list[int] = []
STOP_AT: list[int] = []  # compute raises KeyboardInterrupt (a kill) at these values


def plan(args: argparse.Namespace) -> StudyPlan:
    return StudyPlan(resolve_config("tiny"), [{"k": [1, 2, 3, 4] if not args.quick else [1, 2]}])


def compute(values: dict[str, Any]) -> dict[str, Any]:
    if values["k"] in STOP_AT:
        raise KeyboardInterrupt
    COMPUTED.append(values["k"])
    return {**values, "square": values["k"] ** 2}


def finish(out: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    atomic_write_json(out / "toy.json", rows)
    return " ".join(str(r["square"]) for r in rows)


@pytest.fixture
def toy(monkeypatch):
    COMPUTED.clear()
    STOP_AT.clear()
    monkeypatch.setitem(STUDIES, "toy", Study("toy", "squares of 1..4", __name__, {"toy.json": "the rows"}))


def test_a_killed_study_resumes_without_recomputing_finished_points(toy, tmp_path, capsys):
    out = tmp_path / "toy"
    STOP_AT.append(3)
    assert main(["study", "toy", "--quiet", "--out", str(out)]) == 130  # killed at the third point
    assert capsys.readouterr().err.strip() == (f"factrecall: interrupted; 2 finished points kept in {out}; "
                                               "rerun the same command to resume")
    assert COMPUTED == [1, 2] and not (out / "toy.json").exists()
    assert len(list((out / "points").glob("p*.json"))) == 2  # the finished points are kept
    STOP_AT.clear()
    capsys.readouterr()
    assert main(["study", "toy", "--quiet", "--out", str(out)]) == 0
    assert COMPUTED == [1, 2, 3, 4]  # only the unfinished points ran again
    assert capsys.readouterr().out.strip() == "1 4 9 16"
    assert [r["square"] for r in json.loads((out / "toy.json").read_text())] == [1, 4, 9, 16]
    assert (out / "results.csv").read_text().splitlines()[0] == "k,square,status"
    assert main(["sweep-plot", str(out), "--x", "k", "--value", "square"]) == 0  # the store's table drawn
    assert main(["study", "toy", "--quiet", "--out", str(out)]) == 0  # all done: nothing runs, figure kept
    assert COMPUTED == [1, 2, 3, 4] and (out / "sweep_square_k.png").is_file()


def test_study_out_is_refused_before_any_work(toy, tmp_path, capsys, monkeypatch):
    STOP_AT.extend([1, 2, 3, 4])  # any point that runs fails the test through an exit status of 130
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("mine")
    quick = tmp_path / "quick"
    quick.mkdir()
    atomic_write_json(quick / "study.json", {"study": "toy", "quick": True})
    held = tmp_path / "held"
    held.mkdir()
    atomic_write_json(held / "study.json", {"study": "toy", "quick": False})
    (held / "notes.txt").write_text("mine")
    for out, needle in ((other, "is not empty and holds no study"), (quick, "holds the toy study (--quick)"),
                        (held, "holds files factrecall study toy did not write (notes.txt)"),
                        (tmp_path / "other" / "mine.txt" / "x", "lies below a file")):
        assert main(["study", "toy", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in quick.iterdir()) == ["study.json"]
    assert main(["study", "toy", "--workers", "0", "--out", str(tmp_path / "w")]) == 2
    assert "--workers='0': must be one integer >= 1" in capsys.readouterr().err


def toy_arguments(parser: argparse.ArgumentParser, presets: Any) -> None:
    parser.add_argument("--times", default="2", help="how often to say it")


def toy_command(args: argparse.Namespace) -> int:
    print("toy " * int(args.times))
    return 0


def test_a_command_registered_from_outside_is_in_the_help_and_runs(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "toy", Command("toy", "say toy a few times", __name__, "toy_command",
                                                     arguments=toy_arguments, engine=False))
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    assert "say toy a few times" in capsys.readouterr().out
    assert main(["toy", "--times", "3"]) == 0
    assert capsys.readouterr().out.split() == ["toy"] * 3
    with pytest.raises(ValueError, match="'toy': already registered"):
        cli.register_command(Command("toy", "again", __name__))


def test_every_registered_study_is_a_subcommand_with_its_outputs_in_its_help(capsys):
    for name, study in STUDIES.items():
        with pytest.raises(SystemExit):
            main(["study", name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert study.summary in text and all(f"{file}:" in text for file in study.outputs)


def test_the_documented_command_recipe_runs(monkeypatch, capsys, tmp_path):
    """docs/extending.md's example command, taken from the page, registered with its one line."""
    import re
    import sys
    import types

    text = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    section = text[text.index("## A command"):]
    source = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    line = re.search(r"\+\s+(Command\(.*\)),", section).group(1)
    module = types.ModuleType("analysis.hello.command")
    exec(compile(source, "extending.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "analysis.hello.command", module)
    monkeypatch.setitem(cli.COMMANDS, "hello", eval(line, {"Command": Command}))
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "how many facts a preset's task holds" in capsys.readouterr().out
    assert main(["hello", "--preset", "figure5"]) == 0
    assert capsys.readouterr().out == "hello: 64 facts\n"


def _fake_experiment(name: str, quick: bool, sgd_lr: float | None) -> dict[str, Any]:
    """What each data-over-time experiment returns, on a five-point clock (numpy arrays, a NaN included)."""
    import numpy as np

    COMPUTED.append(name)
    t = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    times = {"t_10": 1.0, "t_50": 10.0, "t_90": float("nan"), "plateau_end": 50.0, "recalled_at_budget": 0.5,
             "status": "ok"}
    if name == "zipf":
        return {"budget": 20.0, "rows": [{"alpha": a, "flow": times, "sgd": times} for a in (0.0, 1.0)]}
    if name == "warmup":
        return {"t_50_without_warmup": 10.0, "rows": [
            {"budget": 10.0 * m, "budget_over_t50": m, "share": s, "flow_recalled": 0.5,
             "flow_final_loss": 0.1} for m in (0.5, 1.0) for s in (1.0, 0.5)]}
    if name == "finetune":
        return {"summary": {"old_subjects": 4, "runs": {"replay 0": {"old_recalled_end": 0.5}}},
                "curves": {"replay 0": (t, np.linspace(1, 0.5, 5), np.linspace(0, 1, 5))}}
    return {"summary": {"log_answers": 3.4, "log_D": 2.0, "H(A|R)": 1.7, "held_out": 1},
            "curves": (t, np.array([3.4, 3.4, np.nan, 4.0, 4.1]), np.linspace(3.4, 0, 5), np.zeros(5))}


def test_the_timeline_study_keeps_each_experiment_and_its_curves(tmp_path, monkeypatch, capsys):
    """Each experiment is a point: its curves go through the point store (NaN as null and back) into the
    figure; experiments.json holds the numbers only; a rerun runs nothing."""
    from analysis.study import timeline

    COMPUTED.clear()
    monkeypatch.setattr(timeline, "run_experiment", _fake_experiment)
    out = tmp_path / "t"
    assert main(["study", "timeline", "--quick", "--quiet", "--out", str(out)]) == 0, capsys.readouterr().err
    assert COMPUTED == ["zipf", "warmup", "finetune", "unseen"]
    saved = json.loads((out / "experiments.json").read_text())
    assert set(saved) == {"zipf", "warmup", "finetune", "unseen"} and "curves" not in saved["unseen"]
    assert saved["zipf"]["rows"][0]["flow"]["t_90"] is None and saved["unseen"]["H(A|R)"] == 1.7
    assert (out / "data_over_time.png").stat().st_size > 0
    assert main(["study", "timeline", "--quick", "--quiet", "--out", str(out)]) == 0
    assert COMPUTED == ["zipf", "warmup", "finetune", "unseen"]
    assert main(["study", "timeline", "--quiet", "--out", str(out)]) == 2  # the full study: not here
    assert "holds the timeline study (--quick)" in capsys.readouterr().err


@pytest.mark.slow
def test_points_run_in_worker_processes(toy, tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["study", "toy", "--quiet", "--workers", "2", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "1 4 9 16"  # in plan order, whichever finished first
    assert COMPUTED == []  # computed in the workers, not here


def test_the_dsweep_study_runs_a_point_and_refuses_unknown_options(tmp_path, capsys, monkeypatch):
    from analysis.study import dsweep

    out = tmp_path / "d"
    argv = ["study", "dsweep", "--pairs", "4x2", "--answers", "S", "--geometries", "euclidean", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("euclidean D=  S S=  4 R= 2") and " ok " in text
    header, row = (out / "dsweep.csv").read_text().splitlines()
    assert dict(zip(header.split(","), row.split(","), strict=True))["status"] == "ok"
    monkeypatch.setattr(dsweep, "run_point", lambda *a: pytest.fail("ran a finished point again"))
    assert main([*argv, "--out", str(out)]) == 0
    for option, needle in ((["--geometries", "lion"], "--geometries='lion'"),
                           (["--answers", "1"], "--answers='1'"), (["--eps-sign", "0"], "--eps-sign=0.0")):
        assert main(["study", "dsweep", "--out", str(tmp_path / "x"), *option]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_the_geometry_study_records_its_setting_and_resumes_only_the_same_one(tmp_path, capsys, monkeypatch):
    """One gradient-flow cell (4 × 2, to t = 200) at D = S from the manifold start with T at p = 0.95: the
    printed header and table.csv name the setting; a rerun resumes it, another --delta is a new point."""
    from dataclasses import replace

    from analysis.study import geometry

    monkeypatch.setitem(geometry.ROWS, "gf", replace(geometry.ROWS["gf"], t_max=200.0))
    out = tmp_path / "g"
    argv = ["study", "geometry", "--rows", "gf", "--pairs", "4x2", "--embeddings-point", "", "--quiet",
            "--answers-per-relation", "S", "--start", "manifold", "--time", "p", "--out", str(out)]
    assert main([*argv, "--delta", "0.05"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("D=S answers per relation, manifold start; T_R, T_S: when the mean "
                     "p(relation's answers), p(subject's answers) first reach 0.95")
    header, row = (out / "table.csv").read_text().splitlines()
    cell = dict(zip(header.split(","), row.split(","), strict=True))
    assert (cell["answers"], cell["D"], cell["start"], cell["time"], cell["delta"], cell["status"]) == (
        "S", "4", "manifold", "p", "0.05", "ok")
    monkeypatch.setattr(geometry, "run_point", lambda *a: pytest.fail("ran a finished point again"))
    assert main([*argv, "--delta", "0.05"]) == 0
    with pytest.raises(pytest.fail.Exception):
        main([*argv, "--delta", "0.1"])
