"""Fine-tuning with the Hugging Face Trainer, and the bits of distributed bookkeeping the run needs.

The Trainer does the data parallelism: started under ``torchrun --nproc_per_node N`` each process
trains on its shard and gradients are all-reduced (NCCL on GPUs, gloo on CPUs). Nothing is saved to
disk during training (``save_strategy="no"``): the run keeps the model in memory between phases.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class TrainSettings:
    """Hyperparameters of one fine-tuning phase."""

    lr: float
    epochs: float
    batch_size: int  # per device
    max_steps: int = -1  # > 0 overrides epochs (quick runs)
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    precision: str = "auto"
    logging_steps: int = 50
    progress: bool = True


def world() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    return world()[0] == 0


def barrier() -> None:
    """Wait for every rank, when a process group is up (a no-op for a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def resolve_precision(precision: str) -> str:
    """Mixed precision for training: "auto" is bf16 on GPUs that have it, fp16 on older GPUs,
    and fp32 on CPU (CPU autocast would only slow the small CPU runs down)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        if precision != "fp32" and not torch.cuda.is_available():
            raise ValueError(f"--precision {precision} needs CUDA; use fp32 or auto on CPU")
        return precision
    if not torch.cuda.is_available():
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def warmup_steps(n_features: int, s: TrainSettings) -> int:
    """Warmup as a step count from the ratio (older transformers take only integer steps)."""
    _, world_size = world()
    batches_per_epoch = math.ceil(n_features / (s.batch_size * world_size))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / s.grad_accum))
    total = s.max_steps if s.max_steps > 0 else math.ceil(steps_per_epoch * s.epochs)
    return int(round(s.warmup_ratio * total))


def param_checksum(model: torch.nn.Module) -> float:
    """Sum of every trainable value in float64: equal on all ranks when data parallelism kept
    the replicas in step (each rank sees different batches, so unsynced replicas drift apart)."""
    with torch.no_grad():
        return float(sum(p.double().sum().item() for p in model.parameters() if p.requires_grad))


def fine_tune(
    model: torch.nn.Module, dataset: torch.utils.data.Dataset, s: TrainSettings, phase: str
) -> dict:
    """Train ``model`` in place on ``dataset``; returns the loss history and the Trainer's summary.

    The history is the Trainer's log entries that carry a training loss: dicts with ``step``,
    ``epoch`` and ``loss`` (every ``logging_steps`` optimizer steps, and at the first step).
    """
    from transformers import Trainer, TrainingArguments, default_data_collator  # noqa: PLC0415

    precision = resolve_precision(s.precision)
    _, world_size = world()
    with tempfile.TemporaryDirectory(prefix=f"squad-{phase}-") as work_dir:
        args = TrainingArguments(
            output_dir=work_dir,
            per_device_train_batch_size=s.batch_size,
            num_train_epochs=s.epochs,
            max_steps=s.max_steps,
            learning_rate=s.lr,
            warmup_steps=warmup_steps(len(dataset), s),
            weight_decay=s.weight_decay,
            gradient_accumulation_steps=s.grad_accum,
            fp16=precision == "fp16",
            bf16=precision == "bf16",
            logging_steps=s.logging_steps,
            logging_first_step=True,  # so even a 2-step run has a loss to plot
            seed=s.seed,
            report_to="none",
            save_strategy="no",
            disable_tqdm=not s.progress,
            label_names=["start_positions", "end_positions"],
            dataloader_pin_memory=torch.cuda.is_available(),
            # QA models build their encoder without the pooler, so every parameter gets a gradient
            # and DDP can skip its search for unused ones (an extra autograd traversal per step).
            ddp_find_unused_parameters=False,
            # Without use_cpu, accelerate starts a gloo group on a CPU-only torchrun but reports
            # "not distributed", and the Trainer then trains each rank alone without DDP.
            use_cpu=not torch.cuda.is_available(),
            # gloo is the CPU backend; on GPUs let the Trainer pick NCCL.
            ddp_backend="gloo" if world_size > 1 and not torch.cuda.is_available() else None,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=dataset, data_collator=default_data_collator
        )
        output = trainer.train()
        history = [
            {"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"]}
            for e in trainer.state.log_history
            if "loss" in e
        ]
    return {
        "phase": phase,
        "precision": precision,
        "world_size": world_size,
        "global_steps": output.global_step,
        "train_loss": output.training_loss,
        "train_runtime_s": output.metrics.get("train_runtime"),
        "loss_history": history,
        "param_checksum": param_checksum(model),
    }
