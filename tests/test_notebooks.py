"""The notebooks under notebooks/: each is committed executed with its figures, and each executes
without error (on its own small settings), storing its figures when run headless."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))

# Notebooks that take more than a few seconds to execute on two cores: their execution runs with -m slow.
SLOW = {"capacity", "data_over_time", "figure5", "geometry", "ode_vs_discrete", "phase_diagrams"}

# A code cell draws a figure when it plots with matplotlib, calls one of the package's plot functions or
# displays a saved image.
DRAWS = re.compile(r"\bplt\.|\.subplots\(|\bFigure\(|\.plot\(|\bplot(_\w+)?\(|\bImage\(")


def cells_missing_figures(notebook) -> list[int]:
    """Indices of the code cells that draw a figure but store no image/png output."""
    missing = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not DRAWS.search(cell.source):
            continue
        if not any("image/png" in output.get("data", {}) for output in cell.get("outputs", [])):
            missing.append(index)
    return missing


def test_figure_check_sees_a_cell_without_its_figure():
    drawn = nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nax.plot([0, 1])")
    quiet = nbformat.v4.new_code_cell("x = 1")
    notebook = nbformat.v4.new_notebook(cells=[quiet, drawn])
    assert cells_missing_figures(notebook) == [1]
    drawn.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=",
                                                                   "text/plain": "<Figure>"})]
    assert cells_missing_figures(notebook) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_its_figures(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.get("execution_count") for cell in code), f"{path.name} is not executed"
    assert any(DRAWS.search(cell.source) for cell in code), f"{path.name} draws no figure"
    missing = cells_missing_figures(notebook)
    assert not missing, f"{path.name}: cells {missing} draw a figure but store none"
    errors = [o for cell in code for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} is committed with an error"


def test_notebook_opens_with_its_question():
    for path in NOTEBOOKS:
        first = nbformat.read(path, as_version=4).cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# "), path.name


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] * (p.stem in SLOW))
                                  for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code"
              for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert not cells_missing_figures(notebook), "figures not stored when executed headless"
