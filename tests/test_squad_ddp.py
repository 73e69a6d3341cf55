"""Data-parallel fine-tuning: ``torchrun --nproc_per_node 2`` (gloo on CPU) on a tiny model.

Checks that both ranks trained both phases, that the data was sharded between them (each rank
takes half the batches of an epoch), and that their replicas stayed identical (gradients were
all-reduced: unsynced ranks, each seeing other batches, would end with different weights).
"""

import json
import math
import os
import random
import re
import subprocess
import sys

import pytest

from sparse24.squad.tiny import save_tiny_checkpoint, squad_texts, synthetic_squad

WORLD = 2
BATCH = 2


@pytest.mark.slow
def test_torchrun_two_ranks_train_in_step(tmp_path, seed):
    rng = random.Random(seed)
    train_doc, dev_doc = synthetic_squad(rng, n_articles=2), synthetic_squad(rng, n_articles=1)
    (tmp_path / "train.json").write_text(json.dumps(train_doc))
    (tmp_path / "dev.json").write_text(json.dumps(dev_doc))
    save_tiny_checkpoint(squad_texts(train_doc) + squad_texts(dev_doc), tmp_path / "model", seed)

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(WORLD),
        "--master_port",
        str(29500 + seed % 1000),
        "-m",
        "sparse24.squad.cli",
        "--model",
        str(tmp_path / "model"),
        "--train-file",
        str(tmp_path / "train.json"),
        "--dev-file",
        str(tmp_path / "dev.json"),
        "--max-length",
        "64",
        "--stride",
        "16",
        "--max-steps",
        "2",
        "--batch-size",
        str(BATCH),
        "--logging-steps",
        "1",
        "--seed",
        str(seed),
        "--output-dir",
        str(tmp_path / "out"),
        "--run-name",
        "ddp",
        "--no-progress",
        "--skip-kernels",  # the kernels run on the main rank only; the DDP part is training
    ]
    # One thread per rank: two ranks on a 2-core machine would otherwise oversubscribe it.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # Both ranks finished both phases, with the same weights afterwards.
    for phase in ("dense", "sparse"):
        done = dict(
            re.findall(
                rf"\[squad\] rank (\d)/{WORLD}: {phase} fine-tuning done: 2 steps, "
                r".*checksum (\S+)",
                out,
            )
        )
        assert sorted(done) == ["0", "1"], out[-4000:]
        assert done["0"] == done["1"], (phase, done)

    results = json.loads((tmp_path / "out" / "ddp.json").read_text())
    assert results["world_size"] == WORLD
    n_features = results["data"]["train_features"]
    for phase in ("dense", "sparse"):
        history = results["training"][phase]["loss_history"]
        assert [e["step"] for e in history] == [1, 2] and all(e["loss"] > 0 for e in history)
        # Sharded data: an epoch is ceil(features / (batch * world)) steps, so step 1 is that
        # fraction of an epoch (a single process would report 1 / ceil(features / batch)).
        assert history[0]["epoch"] == pytest.approx(
            1 / math.ceil(n_features / (BATCH * WORLD)), abs=1e-3
        )
    assert "sparse_finetuned" in results["results"]
