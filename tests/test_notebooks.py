"""The documentation's code runs: README's Python example, and the notebooks top to bottom on a
fresh Jupyter kernel, showing what they claim. (Not part of .ci/sanitize: matplotlib's own
extensions do not load under AddressSanitizer.)

Each notebook is executed with nbclient on the "python3" kernel (jupyter_client starts it with
this interpreter), in a temporary working directory, so that nothing is written into the
checkout. The kernel imports the same den as this test process: the installed one, or this
checkout built in place (then its folder goes on the kernel's PYTHONPATH).
"""

import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

import den  # noqa: E402
from children import child_env  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("quickstart.ipynb", "reproduce.ipynb")
CELL_TIMEOUT = 300  # seconds per cell
MODELS = ("DEN", "STL", "MTL", "DNN", "L2", "EWC", "Progressive")


def _execute(name, workdir):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, startup_timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    try:
        client.execute(env=child_env())
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{name}: a cell raised\n{exc}", pytrace=False)
    print(f"{name}: executed in {time.perf_counter() - start:.1f} s")
    return nb


def _text(cell):
    """Everything a cell printed or displayed, as text (stdout, text/plain, text/markdown)."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts += [out["data"][mime] for mime in ("text/markdown", "text/plain") if mime in out["data"]]
    return "\n".join(parts)


def _images(nb):
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def _code(nb):
    return [cell for cell in nb.cells if cell["cell_type"] == "code"]


def _check_same_den(nb):
    """The first code cell prints 'den VERSION from FOLDER': the kernel's den must be ours."""
    m = re.search(r"^den (\S+) from (.+)$", _text(_code(nb)[0]), re.M)
    assert m, "the first cell should print which den it imported"
    assert m.group(1) == den.__version__
    assert Path(m.group(2).strip()).resolve() == Path(den.__file__).resolve().parent


def _table_rows(text):
    """Model names of the rows of every markdown comparison table in text."""
    return re.findall(r"^\| ([A-Za-z0-9-]+) \| \d+ \| [01]\.\d{4} ± ", text, re.M)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_clean(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in _code(nb):
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name}: clear the outputs"
        assert "sys.path" not in cell["source"], f"{name}: notebooks import den as installed"


def test_quickstart(tmp_path):
    nb = _execute("quickstart.ipynb", tmp_path)
    _check_same_den(nb)
    cells = _code(nb)
    out = "\n".join(_text(c) for c in cells)
    assert _table_rows(out) == ["DEN", "DNN", "STL"]
    assert "DEN: AUROC on task j" in out and "DNN: AUROC on task j" in out
    assert "identical predictions: True" in out
    assert _images(nb) >= 3  # the permuted digits, the paper's panels, DEN's growth
    assert "quickstart checks passed" in _text(cells[-1])
    assert list(tmp_path.iterdir()) == [], "the notebook should write only into temporary folders"


def test_reproduce(tmp_path):
    nb = _execute("reproduce.ipynb", tmp_path)
    _check_same_den(nb)
    cells = _code(nb)
    out = "\n".join(_text(c) for c in cells)
    rows = _table_rows(out)
    assert rows[: len(MODELS)] == list(MODELS), rows  # digits: all seven models
    assert all(f"| {m} | 2 |" in out for m in MODELS), "digits runs two seeds"
    for ablation in ("DNN-L2-Selective", "DEN-Constant", "DEN-No-Stamp", "DEN-Finetune"):
        assert ablation in rows, rows
    try:
        den.datasets.find_data("fashion-mnist")
        has_fashion = True
    except FileNotFoundError:
        has_fashion = False
    # with Fashion-MNIST: digits, Fashion-MNIST, ablations; without: a note instead
    assert rows.count("DEN") == (3 if has_fashion else 2), rows
    assert ("Fashion-MNIST is not installed" in out) != has_fashion
    assert "| DEN | 0.9965 |" in out  # the paper's numbers beside ours
    assert _images(nb) >= (3 if has_fashion else 2)
    assert "reproduce checks passed" in _text(cells[-1])
    assert list(tmp_path.iterdir()) == [], "the notebook should write only into temporary folders"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    # the 60-second example in README.md must keep working as the API evolves
    import matplotlib

    matplotlib.use("Agg")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "m.den").exists()
