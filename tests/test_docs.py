"""The documentation: the README is a short front door whose Quickstart CI runs, the generated pages
(docs/cli.md, docs/configuration.md, docs/api.md, docs/stages.md) are what the code gives, every key and
every API name they list exists, the stage words are the detector's, and docs/README.md maps every page
and figure."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from analysis import docgen, glossary
from analysis.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICKSTART = ['pip install -c constraints.txt . && factrecall simulate',
              'pip install -c constraints.txt ".[test]" && python -m pytest -q']


def test_generated_docs_are_current():
    stale = [path.name for path, (old, new) in docgen.generate().items() if old != new]
    assert not stale, f"docs/{', docs/'.join(stale)} not current: run python -m analysis.docgen and commit"


def test_every_config_key_has_one_line_of_documentation():
    from dynamics.config.schema import KEY_DOCS

    keys = [key for key, _ in docgen.config_keys()]
    missing, extra = set(keys) - set(KEY_DOCS), set(KEY_DOCS) - set(keys)
    assert not missing, f"add to KEY_DOCS in dynamics/config/schema.py: {sorted(missing)}"
    assert not extra, f"KEY_DOCS documents keys the schema lacks: {sorted(extra)}"
    for key in keys:  # a choice's allowed values come from its own check when KEY_DOCS leaves them empty
        allowed, what = KEY_DOCS[key]
        assert what and (allowed or docgen._probed_choices(key)), key


def test_choices_are_read_from_the_keys_own_check():
    from dynamics.solvers.registry import METHODS

    assert docgen._probed_choices("flow.method") == ", ".join(f"`{name}`" for name in METHODS)


def test_every_api_name_exists_and_has_a_docstring():
    for _, _, names in docgen.API:
        for dotted in names:
            assert docgen.resolve(dotted).__doc__, f"{dotted} has no docstring"
    with pytest.raises(docgen.DocgenError, match="dynamics.no_such_function"):
        docgen.resolve("dynamics.no_such_function")


def test_the_cli_reference_has_every_command_and_option():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    for name, sub in docgen.subcommands(parser).items():
        assert f"### `factrecall {name}`" in text, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text or f", {flag}" in text, f"{name} {flag}"


def test_a_block_without_its_markers_is_refused():
    with pytest.raises(docgen.DocgenError, match="keys"):
        docgen.fill("# a page without markers\n", {"keys": "table"}, "page.md")
    filled = docgen.fill(f"a\n{docgen.begin_marker('x')}\nold\n{docgen.end_marker('x')}\nb\n", {"x": "new"})
    assert filled == f"a\n{docgen.begin_marker('x')}\nnew\n{docgen.end_marker('x')}\nb\n"


def test_check_reports_a_stale_page_and_writes_nothing(tmp_path, monkeypatch, capsys):
    for name in docgen.FILES:
        (tmp_path / name).write_text((docgen.DOCS / name).read_text(encoding="utf-8"), encoding="utf-8")
    page = tmp_path / "configuration.md"
    text = page.read_text(encoding="utf-8")
    page.write_text(text.replace("| `task.subjects` | 16 |", "| `task.subjects` | 17 |"), encoding="utf-8")
    before = page.read_text(encoding="utf-8")
    monkeypatch.setattr(docgen, "DOCS", tmp_path)
    assert docgen.main(["--check"]) == 1
    assert page.read_text(encoding="utf-8") == before
    assert "docs/configuration.md is not current: run python -m analysis.docgen" in capsys.readouterr().out


def test_a_name_gone_from_the_api_is_named_and_the_rest_written(tmp_path, monkeypatch, capsys):
    for name in docgen.FILES:
        (tmp_path / name).write_text((docgen.DOCS / name).read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(docgen, "DOCS", tmp_path)
    monkeypatch.setattr(docgen, "API", [("Runs", "intro", ["dynamics.run_flow", "dynamics.gone_away"])])
    assert docgen.main([]) == 2
    assert "dynamics.gone_away: not found" in capsys.readouterr().err
    page = (tmp_path / "api.md").read_text(encoding="utf-8")
    assert "### `dynamics.run_flow`" in page and "gone_away" not in page


# --- the README -----------------------------------------------------------------------------------------

def test_the_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 6000, "README.md over 6 kB: move details into docs/"
    for page in ("docs/README.md", "docs/cli.md", "docs/configuration.md", "docs/api.md", "docs/stages.md"):
        assert f"]({page})" in text, page
    assert "](docs/figure5_loss.png)" in text


def test_ci_reads_the_two_quickstart_commands_unchanged():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extraction = re.search(r"< <\((awk .*README\.md)\)", script).group(1)
    found = subprocess.run(["bash", "-c", extraction], cwd=ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.splitlines() == QUICKSTART


def test_the_readme_shows_every_command():
    blocks = "".join(re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S))
    for name in docgen.subcommands(build_parser()):
        assert re.search(rf"^factrecall {re.escape(name)}\b", blocks, re.M), f"README: no example of {name}"


def test_the_docs_map_lists_every_page_and_figure():
    text = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "docs").glob("*")):
        if path.suffix in (".md", ".png") and path.name != "README.md":
            assert f"]({path.name})" in text, f"docs/README.md does not list {path.name}"
    layout = text.split("## Layout of the repository")[1].split("notebooks/", 1)[1].split("```")[0]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert re.search(rf"\b{notebook.stem}\b", layout), f"docs/README.md's layout omits {notebook.name}"


# --- the words ------------------------------------------------------------------------------------------

def test_the_glossary_defines_the_detectors_words():
    from analysis.stages.detect import INTERMEDIATE, STAGE_LEVELS
    from dynamics.trajectory import FactClass

    assert [word for word, _ in glossary.STAGES] == list(STAGE_LEVELS)
    assert [word for word, _ in glossary.FACT_STATES] == [c.name.lower() for c in FactClass]
    intermediate = dict(glossary.TERMS)["intermediate"]
    assert all(name in intermediate for name in INTERMEDIATE)


def test_stages_help_prints_the_glossary(capsys):
    with pytest.raises(SystemExit):
        main(["stages", "--help"])
    out = capsys.readouterr().out
    for word, _ in (*glossary.STAGES, *glossary.FACT_STATES, *glossary.TERMS):
        assert re.search(rf"^  {re.escape(word)}\s", out, re.M), word
    assert glossary.epilog().splitlines()[1] in out  # laid out one word a line, not reflowed


def test_keys_table_matches_the_schema_defaults():
    from dynamics.config.schema import Config

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    config = Config()
    for section in dataclasses.fields(Config):
        value = getattr(config, section.name)
        if dataclasses.is_dataclass(value):
            for key in dataclasses.fields(value):
                assert f"| `{section.name}.{key.name}` | {docgen._value(getattr(value, key.name))} |" in text


@pytest.mark.slow  # ~7 s of CPU: a flow, a short discrete run and three figures
def test_the_api_page_examples_run(tmp_path, monkeypatch):
    """The examples of docs/api.md, run as written on the tiny preset (a short discrete run), in a
    temporary folder: a run directory written from Python that `factrecall stages` reads."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8").split("## Reference")[0]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3 and '"figure5", overrides={"init.scale": 1e-4}' in blocks[0]
    blocks[0] = blocks[0].replace('"figure5", overrides={"init.scale": 1e-4}',
                                  '"tiny", overrides={"init.scale": 1e-4, "train.steps": 100}')
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    written = {path.name for path in (tmp_path / "runs" / "mine").iterdir()}
    assert {"stages.json", "loss.png", "facts.png", "trajectory.npz"} <= written
    assert main(["stages", str(tmp_path / "runs" / "mine")]) == 0


def test_the_sweep_columns_are_documented():
    """Every column of a sweep's results.csv row is in docs/run-directory.md's table, and nothing else."""
    from analysis.sweep.run import summarise, train_columns
    from dynamics import resolve_config, run_flow

    config = resolve_config("tiny", overrides={"flow.t_max": 20.0, "flow.points": 8})
    row = {**summarise({}, config, run_flow(config), None, 0.0), **train_columns(RuntimeError("x"))}
    text = (ROOT / "docs" / "run-directory.md").read_text(encoding="utf-8").split("## A sweep's directory")[1]
    first_cells = re.findall(r"^\| (.*?) \|", text, re.M)
    documented = {name for cells in first_cells for name in re.findall(r"`(\w+)`", cells)}
    assert set(row) == documented, (set(row) - documented, documented - set(row))


@pytest.mark.parametrize("page", ["README.md", "docs/cli.md"])
def test_every_documented_command_parses(page):
    """Each `factrecall ...` line of the page's bash blocks is a command line the parser accepts."""
    from analysis.cli import UsageError

    parser = build_parser()
    text = (ROOT / page).read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
             for line in block.replace("\\\n", " ").splitlines() if line.startswith("factrecall ")]
    assert lines
    for line in lines:
        try:
            parser.parse_args(shlex.split(line.split("#", 1)[0])[1:])
        except UsageError as err:
            pytest.fail(f"{page}: {line.strip()}: {err}")


def test_the_readme_names_every_study():
    from analysis.study.registry import STUDIES

    line = next(line for line in README.read_text(encoding="utf-8").splitlines()
                if line.startswith("factrecall study "))
    for name in STUDIES:
        assert re.search(rf"\b{name}\b", line), f"README's study line does not name {name}"
