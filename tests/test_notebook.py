"""The notebook's code runs on a tiny configuration (CPU, Triton interpreter), so it cannot rot."""

import json
from pathlib import Path

import pytest
import torch

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.slow
def test_notebook_runs_tiny(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(NOTEBOOKS))
    import build_notebook
    import execute

    committed = nbformat.read(NOTEBOOKS / "semi_structured_sparse.ipynb", as_version=4)
    built = build_notebook.build()
    # the committed notebook's code is the generator's code (outputs may differ)
    assert [c.source for c in committed.cells] == [c.source for c in built.cells]

    monkeypatch.setenv("SPARSE24_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    out = tmp_path / "tiny.ipynb"
    nb = execute.execute(out, timeout=600)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, json.dumps(errors[0])[:2000]
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "relative error against F.linear" in text
    # a GPU runs the kernels; a CPU the PyTorch reference, labelled as such (never "kernels")
    assert ("sparse24_kernels: EM" if torch.cuda.is_available() else "sparse24_reference: EM") in text
    assert "logits relative error" in text
