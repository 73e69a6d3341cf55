"""Writes notebooks/semi_structured_sparse.ipynb (no outputs) from the cells below.

The notebook is executed on the GPU machine with nbclient (notebooks/execute.py), and its outputs are
committed. tests/test_notebook.py runs the same code cells on a tiny configuration on the CPU
(SPARSE24_NOTEBOOK_TINY=1), so it cannot rot.

    python notebooks/build_notebook.py
"""

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "semi_structured_sparse.ipynb"

CELLS = [
    ("md", """# Accelerating a BERT-geometry model with 2:4 sparsity, on Hopper, with sparse24

This follows the story of PyTorch's tutorial *Accelerating BERT with semi-structured (2:4)
sparsity*, with sparse24 in place of `torch.sparse.to_sparse_semi_structured`:

1. one `nn.Linear`: prune it 2:4, pack it, check the round trip and the product, and time it
   against cuBLAS dense and torch's own 2:4;
2. prune a question-answering model;
3. fine-tune it with fixed 2:4 masks to recover accuracy (SQuAD v1.1);
4. swap in sparse24's kernels, check the accuracy holds and time the model;
5. the recorded tables and plots.

On a machine without a GPU (or with `SPARSE24_NOTEBOOK_TINY=1`) every cell runs on a tiny
configuration through the Triton interpreter: that is how the tests keep this notebook working."""),
    ("code", """import os
import time

import torch

ON_GPU = torch.cuda.is_available()
TINY = os.environ.get("SPARSE24_NOTEBOOK_TINY") == "1" or not ON_GPU
if not ON_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before sparse24's kernels are imported
DEVICE = "cuda" if ON_GPU else "cpu"
# A local checkpoint directory or a hub name (bert-base-cased where the hub is reachable).
MODEL = os.environ.get("SPARSE24_NOTEBOOK_MODEL", "bert-base-cased")
REPO = os.path.abspath(os.environ.get("SPARSE24_REPO", ".."))

import sparse24
import sparse24.ops as ops
from sparse24.nn import prune_, sparsify_, squash_

print("device:", torch.cuda.get_device_name() if ON_GPU else "CPU (Triton interpreter)",
      "| torch", torch.__version__, "| sparse24", sparse24.__version__, "| tiny run:", TINY)"""),
    ("md", """## 1. One Linear layer

`prune_24` keeps the two largest magnitudes of every group of four inputs. `compress` packs the
kept half and 2 bits of position per value into sparse24's layout: 9/16 of the dense fp16 bytes.
`decompress` gives the pruned weight back bit for bit, and `linear` multiplies on the sparse
tensor cores."""),
    ("code", """n, k, m = (3072, 768, 6144) if not TINY else (64, 128, 32)
dtype = torch.float16
w = torch.randn(n, k, dtype=dtype, device=DEVICE)
x = torch.randn(m, k, dtype=dtype, device=DEVICE)
bias = torch.randn(n, dtype=dtype, device=DEVICE)

pruned = ops.prune_24(w)
values, meta = ops.compress(pruned)
assert torch.equal(ops.decompress(values, meta), pruned)
packed = values.numel() * values.element_size() + meta.numel() * meta.element_size()
print(f"kept {int((pruned != 0).sum()):,} of {n * k:,} weights; packed {packed:,} bytes "
      f"for {pruned.numel() * pruned.element_size():,} dense ({packed / (pruned.numel() * 2):.4f})")

y = ops.linear(x, values, meta, bias, activation="gelu")
reference = torch.nn.functional.gelu(x.float() @ pruned.float().t() + bias.float())
print(f"relative error against F.linear on the pruned weight: "
      f"{((y.float() - reference).norm() / reference.norm()).item():.1e}")"""),
    ("code", """def time_ms(fn):
    import triton.testing
    return triton.testing.do_bench(fn, return_mode="median")


if ON_GPU and not TINY:
    rows = []
    for tokens in (16, 1536, 24576):
        xt = torch.randn(tokens, k, dtype=dtype, device=DEVICE)
        dense = time_ms(lambda: torch.nn.functional.linear(xt, pruned))
        try:
            semi = torch.sparse.to_sparse_semi_structured(pruned)
            torch24 = time_ms(lambda: torch.nn.functional.linear(xt, semi))
        except Exception as exc:  # CUTLASS refuses sm90; say so rather than hide it
            torch24 = float("nan")
            print("torch 2:4:", type(exc).__name__, str(exc)[:80])
        ours = time_ms(lambda: ops.linear(xt, values, meta))
        rows.append((tokens, dense, torch24, ours))
    print(f"{'tokens':>7} {'cuBLAS us':>10} {'torch 2:4 us':>13} {'sparse24 us':>12} {'vs dense':>9}")
    for tokens, dense, torch24, ours in rows:
        print(f"{tokens:>7} {dense * 1e3:>10.1f} {torch24 * 1e3:>13.1f} {ours * 1e3:>12.1f} {dense / ours:>8.2f}x")
else:
    print("timings need a GPU; skipped in the tiny run")"""),
    ("md", """## 2. Pruning a question-answering model

`prune_` puts a fixed 2:4 magnitude mask on every Linear layer that sparse24 can pack (a
`torch.nn.utils.parametrize` parametrization), so fine-tuning updates only the kept weights. The
2-wide QA head is left dense, and the report says why."""),
    ("code", """from transformers import AutoModelForQuestionAnswering

if TINY:
    import json
    import random
    import tempfile

    from sparse24.squad.tiny import save_tiny_checkpoint, squad_texts, synthetic_squad

    work = tempfile.mkdtemp()
    rng = random.Random(0)
    train_doc, dev_doc = synthetic_squad(rng, n_articles=2), synthetic_squad(rng, n_articles=1)
    for name, doc in (("train.json", train_doc), ("dev.json", dev_doc)):
        with open(os.path.join(work, name), "w") as f:
            json.dump(doc, f)
    MODEL = str(save_tiny_checkpoint(squad_texts(train_doc) + squad_texts(dev_doc),
                                     os.path.join(work, "model")))

model = AutoModelForQuestionAnswering.from_pretrained(MODEL, dtype=torch.float32)
report = prune_(model)
print(report)
layer = next(mod for name, mod in model.named_modules() if name.endswith("intermediate.dense"))
print("zeros in one pruned weight:", f"{(layer.weight == 0).float().mean().item():.2f}")"""),
    ("md", """## 3. Fine-tuning with fixed masks, then the kernels

`sparse24.squad.run` does the tutorial's whole experiment: fine-tune dense, prune 2:4 (and score
without retraining), fine-tune with the fixed masks, `squash_` the masks into the weights,
`sparsify_` to sparse24's kernels in fp16 and check the kernels' F1 matches the masked dense
model's within 0.1. Data: the SQuAD v1.1 dev set split by article (the train set is not available
offline): 5,946 questions to fine-tune on, 4,624 to evaluate."""),
    ("code", """from sparse24.squad import run

if TINY:
    settings = dict(model=MODEL, train_file=os.path.join(work, "train.json"),
                    dev_file=os.path.join(work, "dev.json"), max_length=64, stride=16,
                    max_steps=2, batch_size=4, eval_batch_size=8, output_dir=work)
else:
    import tempfile

    settings = dict(model=MODEL, offline=True, epochs=4, sparse_epochs=4, lr=1e-4,
                    output_dir=tempfile.mkdtemp())
t0 = time.perf_counter()
results = run(run_name="notebook", progress=False, **settings)
print(f"done in {time.perf_counter() - t0:.0f} s")
for stage, scores in results["results"].items():
    print(f"{stage:>20}: EM {scores['exact_match']:6.2f}  F1 {scores['f1']:6.2f}")"""),
    ("md", """## 4. Accelerating the model

The same swap on BERT-base's geometry (random weights: values do not change the speed), fp16,
sequence length 384: dense against sparse24, in eager mode. `bench/bert.py` records the full table,
with torch's 2:4 and `torch.compile` rows."""),
    ("code", """from transformers import BertConfig, BertForQuestionAnswering

config = BertConfig(vocab_size=28996) if not TINY else BertConfig(
    vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=2, max_position_embeddings=128)
seq, batches = (384, (16, 64)) if not TINY else (32, (2,))
import copy

pruned_model = BertForQuestionAnswering(config).eval()
prune_(pruned_model)
squash_(pruned_model)
dense_model = copy.deepcopy(pruned_model).half().to(DEVICE)  # the same pruned weights, dense
sparse_model = pruned_model.half().to(DEVICE)
print(sparsify_(sparse_model))

with torch.inference_mode():
    for batch in batches:
        ids = torch.randint(0, config.vocab_size, (batch, seq), device=DEVICE)
        a = dense_model(ids).start_logits.float()
        b = sparse_model(ids).start_logits.float()
        err = ((a - b).norm() / a.norm()).item()
        if ON_GPU and not TINY:
            from torch.utils import benchmark

            def median_ms(model):
                timer = benchmark.Timer("model(ids)", globals={"model": model, "ids": ids})
                return timer.blocked_autorange(min_run_time=1.0).median * 1e3

            dense_ms, sparse_ms = median_ms(dense_model), median_ms(sparse_model)
            print(f"batch {batch}: dense {dense_ms:.2f} ms, sparse24 {sparse_ms:.2f} ms "
                  f"({dense_ms / sparse_ms:.2f}x), logits rel. error {err:.1e}")
        else:
            print(f"batch {batch}: logits relative error against dense fp16 {err:.1e}")"""),
    ("md", """## 5. The recorded tables and plots

Every number below was measured on the GPU machine by the scripts under `bench/` and
`python -m sparse24 squad`, with the device, versions and commit on top of each table."""),
    ("code", """from pathlib import Path

from IPython.display import Image, Markdown, display

results_dir = Path(REPO) / "bench" / "results" / "h200"
for name in ("squad_mpnet.md", "bert.md"):
    path = results_dir / name
    if path.exists():
        display(Markdown(path.read_text()))
for name in ("bert_speedup.png", "gemm_speedup.png", "squad_mpnet_loss.png"):
    path = results_dir / name
    if path.exists():
        display(Image(filename=str(path)))"""),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, text in CELLS:
        cell = nbformat.v4.new_markdown_cell(text) if kind == "md" else nbformat.v4.new_code_cell(text)
        nb.cells.append(cell)
    return nb


if __name__ == "__main__":
    nbformat.write(build(), NOTEBOOK)
    print("wrote", NOTEBOOK)
