"""Stage detection (``analysis/stages/detect.py``): the report's one-line summary and the keys of
``stages.json``'s aggregate part. Written for the survivors of ``python tests/mutation.py
analysis/stages/detect.py -- tests/test_stages.py tests/test_detect_mutants.py
tests/test_fact_stages_vectorised.py tests/test_mutants_detect.py``."""

from __future__ import annotations

from analysis.stages.detect import DetectorSettings, Stage, StageReport


def stage(name: str) -> Stage:
    return Stage(name=name, t_start=0.0, t_end=None, level=0.0, expected_level=0.0, level_name="0",
                 plateau_start=1.0, plateau_end=2.0)


def test_summary_names_the_chain_and_says_when_no_plateau_or_no_intermediate_one():
    assert StageReport([], [], {}, ["init", "recall"]).summary() == "no plateau found"
    plain = StageReport([stage("init"), stage("recall")], [], {}, ["init", "recall"])
    assert plain.summary() == "init → recall (no intermediate plateau)"
    staged = StageReport([stage("init"), stage("hallucination"), stage("recall")], [], {}, [])
    assert staged.summary() == "init → hallucination → recall"


def test_to_dict_holds_what_stages_json_documents():
    report = StageReport([stage("init"), stage("hallucination")], [{"from": "init", "to": "hallucination",
                                                                    "t": 1.5}], {"0": 0.0}, ["init"])
    tree = report.to_dict()
    assert tree["summary"] == "init → hallucination"
    assert tree["sequence"] == ["init", "hallucination"] and tree["intermediate"] == ["hallucination"]
    assert tree["levels"] == {"0": 0.0} and tree["candidates"] == ["init"]
    assert tree["settings"] == DetectorSettings().__dict__
    assert tree["transitions"] == [{"from": "init", "to": "hallucination", "t": 1.5}]
    assert [s["name"] for s in tree["stages"]] == ["init", "hallucination"]
