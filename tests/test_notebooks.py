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


def execute(name: str, tmp_path: Path, env: dict[str, str], monkeypatch) -> Path:
    """Run notebooks/<name> in a fresh kernel (raises CellExecutionError on a failing cell)."""
    out = tmp_path / "out"
    out.mkdir()
    work = tmp_path / "cwd"
    work.mkdir()
    for key, value in {**env, "MEDVL_NOTEBOOK_OUT": str(out)}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "agg")
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
    return out


def test_notebooks_are_stored_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.timeout(400)
def test_evaluate_phantoms_notebook(tmp_path, kernel_env, monkeypatch) -> None:
    out = execute("evaluate_phantoms.ipynb", tmp_path, kernel_env, monkeypatch)
    report = out / "report" / "report.md"
    assert report.is_file() and report.read_text().strip()
    assert (out / "report" / "summary.json").is_file()
    assert list((out / "report").glob("*.png"))
    for preds in ("preds_a.jsonl", "preds_b.jsonl"):
        lines = (out / preds).read_text().splitlines()
        assert len(lines) == 19, preds  # one per question: 3 phantom cases x 6-7 questions


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in NOTEBOOKS.glob("*.ipynb") if p.name != "evaluate_phantoms.ipynb"),
)
def test_other_notebooks_run(name, tmp_path, kernel_env, monkeypatch) -> None:
    out = execute(name, tmp_path, kernel_env, monkeypatch)  # raises on any failing cell
    assert out.is_dir()
