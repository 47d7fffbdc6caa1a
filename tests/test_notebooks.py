"""The notebooks in notebooks/ run top to bottom in a real Jupyter kernel, without error.

Each notebook is executed by ``nbclient`` in an ``ipykernel`` kernel whose kernelspec is written
into a temporary folder (``JUPYTER_PATH``), so the kernel is this interpreter — the venv's python —
whatever kernels the machine has installed. The kernel runs in a temporary working directory with
``MEDVL_CACHE`` (tiny model builds) and ``MEDVL_NOTEBOOK_OUT`` (everything a notebook writes)
pointing at temporary folders, so nothing is written into the repository or the user's cache.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernelspec
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL_NAME = "medvl-notebook-test"
CELL_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory, medvl_cache: Path) -> dict[str, str]:
    """A kernelspec running this interpreter, and a cache shared by the notebooks of the run."""
    root = tmp_path_factory.mktemp("jupyter")
    install_kernelspec(kernel_name=KERNEL_NAME, prefix=str(root))
    kernel_dir = root / "share" / "jupyter" / "kernels" / KERNEL_NAME
    argv = json.loads((kernel_dir / "kernel.json").read_text())["argv"]
    assert argv[0] == sys.executable, argv
    return {
        "JUPYTER_PATH": str(root / "share" / "jupyter"),
        "MEDVL_CACHE": str(medvl_cache),  # conftest's session cache: tiny builds are shared
    }


def execute(name: str, tmp_path: Path, env: dict[str, str], monkeypatch) -> tuple[Path, Any]:
    """Run notebooks/<name> in a fresh kernel (raises CellExecutionError on a failing cell);
    returns the output folder and the executed notebook."""
    out = tmp_path / "out"
    out.mkdir()
    work = tmp_path / "cwd"
    work.mkdir()
    for key, value in {**env, "MEDVL_NOTEBOOK_OUT": str(out)}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits the environment
    # Jupyter's inline backend, so that figures become outputs the test can count.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]  # fmt: skip
    assert not errors, errors
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code"), "a cell did not run"
    return out, nb


def _outputs(nb: Any) -> list[Any]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _figures(nb: Any) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


def _text(nb: Any) -> str:
    """Everything the cells printed or displayed as text or HTML."""
    parts = []
    for o in _outputs(nb):
        parts.append(o.get("text", ""))
        data = o.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", ""),
                  data.get("text/markdown", "")]  # fmt: skip
    return "\n".join(parts)


def test_notebooks_are_stored_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.timeout(400)
def test_explore_scans_notebook(tmp_path, kernel_env, monkeypatch) -> None:
    _, nb = execute("01_explore_scans.ipynb", tmp_path, kernel_env, monkeypatch)
    text = _text(nb)
    # CT windows, slice/MIP/montage, video frames, the phantoms with boxes, the knee montage.
    assert _figures(nb) == 5
    assert "lesion visible on tiles" in text and "19 questions about 3 cases" in text
    assert "voxel under pixel (10, 10) of frame 3" in text


@pytest.mark.timeout(400)
def test_evaluate_model_notebook(tmp_path, kernel_env, monkeypatch) -> None:
    out, nb = execute("02_evaluate_model.ipynb", tmp_path, kernel_env, monkeypatch)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 19  # one per question: 3 phantom cases x 6-7 questions
    page = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert page.count('<figure class="case') == 4 and 'class="missing"' not in page
    # Three report plots, the chest case and the knee slice with their boxes.
    assert _figures(nb) >= 5
    text = _text(nb)
    for kind in ("choice", "closed", "grounding", "open", "severity"):
        assert f"<th>{kind}</th>" in text  # the accuracy-by-type table has every type
    assert text.count('<figure class="case') >= 4  # the worst cases shown in the notebook


@pytest.mark.timeout(400)
def test_compare_models_notebook(tmp_path, kernel_env, monkeypatch) -> None:
    out, nb = execute("03_compare_models.ipynb", tmp_path, kernel_env, monkeypatch)
    text = _text(nb)
    assert "26 common samples" in text and "B − A (qwen3 − qwen2.5)" in text
    assert "<th>qwen2.5</th>" in text and "<th>qwen3</th>" in text  # the side-by-side table
    assert "reasoning_f1" in text
    # The report's reasoning table, one row per model.
    assert "step F1" in text and "| qwen2.5 |" in text and "| qwen3 |" in text
    assert (out / "report" / "report.html").is_file()
