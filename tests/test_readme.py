"""The README's op snippet runs as written (on a CPU: the PyTorch reference path)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = text[text.index(f"## {section}\n"):]
    body = body[:body.find("\n## ", 1)] if "\n## " in body[1:] else body
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_the_op_snippet_runs_as_written():
    snippet = python_blocks("Use")[0]
    assert "ops.linear(x, values, meta, bias" in snippet
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # a fresh process: the snippet must define everything it uses
    done = subprocess.run([sys.executable, "-c", snippet + "\nprint(tuple(y.shape))"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("(4, 128, 3072)")


def test_the_gated_snippet_runs_after_the_op_snippet():
    """The gated epilogue's snippet continues the op snippet's session (w, x, ops), and its
    output matches silu(gate) * up computed apart."""
    op_snippet, gated = python_blocks("Use")[:2]
    assert 'activation="swiglu"' in gated
    check = ("import torch.nn.functional as F\n"
             "want = F.silu(x.float() @ gate.float().t()) * (x.float() @ up.float().t())\n"
             "err = ((h.float() - want).norm() / want.norm()).item()\n"
             "print(tuple(h.shape), err < 2e-3)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", "\n".join([op_snippet, gated, check])],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("(4, 128, 1536) True")
