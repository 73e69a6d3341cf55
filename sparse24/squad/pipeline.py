"""The SQuAD v1.1 experiment: dense fine-tune -> 2:4 prune -> sparse fine-tune -> sparse24 kernels.

Stages and what each score means (all Exact Match / F1 on the same evaluation questions):

1. ``dense``: the checkpoint fine-tuned densely.
2. ``pruned_no_retrain``: the dense model with 2:4 magnitude masks (``sparse24.nn.prune_``), as is.
3. ``sparse_finetuned``: fine-tuned again with the masks fixed, then ``squash_``-ed: a dense model
   whose weights are exactly 2:4 ("masked dense").
4. ``masked_dense_fp16`` (CUDA only): the stage-3 model converted to fp16 (``model.half()``),
   F.linear, no autocast: the precision the kernel model runs in. Autocast (stage 3) keeps
   LayerNorm and softmax in float32, a whole-fp16 model does not, and on MiniLM that alone moved F1
   by about 0.1 (a notebook run on the H200), so the kernels are checked against this.
5. ``sparse24_kernels``: the same weights packed into sparse24's kernels (``sparsify_``), in fp16
   on CUDA. It must match stage 4 within 0.1 F1: the kernels change the arithmetic of the Linear
   layers, not the model. Without a GPU the packed layers run ops.linear's PyTorch reference in
   float32 instead, checked against stage 3: that stage is ``sparse24_reference``, labelled so
   (not as kernels) in the logs and tables.

Under ``torchrun`` every rank trains (the Trainer shards the data); evaluation, the kernel swap and
the result files are the main process's job.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import torch

from sparse24.squad import report
from sparse24.squad.data import SquadData, SquadExample, SquadFormatError, load_squad
from sparse24.squad.evaluate import evaluate
from sparse24.squad.preprocess import (
    EvalFeatureMap,
    FeatureDataset,
    build_eval_features,
    build_train_dataset,
)
from sparse24.squad.train import TrainSettings, barrier, fine_tune, is_main_process, world

KERNEL_F1_TOLERANCE = 0.1  # sparse24 kernels vs the masked dense model, in F1 points
# The shortest window: special tokens, a question and some context must fit in --max-length.
MIN_MAX_LENGTH = 32


class SquadUsageError(Exception):
    """A problem with what the run was asked to do (a missing model or data file, a malformed data
    file, options that go together, a value no run can use): the command line prints it as one
    line and exits with status 2."""


@dataclass
class SquadConfig:
    """Everything a run depends on; recorded in the results JSON as its hyperparameters."""

    model: str = "bert-base-cased"  # hub name or local directory
    # Data: local files, or the hub, or the offline split of the dev set (see data.load_squad).
    train_file: str | None = None
    dev_file: str | None = None
    squad_dev_gz: str | None = None
    offline: bool = False
    hub_dataset: str = "squad"
    max_train_samples: int | None = None  # first N questions, for quick runs
    max_eval_samples: int | None = None
    # Features and answers.
    max_length: int = 384
    stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    # Training (both phases share all but epochs and lr).
    epochs: float = 2.0
    sparse_epochs: float = 2.0
    max_steps: int = -1  # > 0: this many optimizer steps per phase instead of epochs
    lr: float = 3e-5
    sparse_lr: float | None = None  # None: same as lr
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    precision: str = "auto"  # training: auto, fp32, fp16, bf16
    logging_steps: int = 50
    # Outputs.
    output_dir: str | None = None  # None: bench/results/<device> of the checkout
    run_name: str | None = None  # None: squad_<model>
    speed_results: str | None = None  # BERT speed bench JSON to append timing rows from
    skip_kernels: bool = False  # stop after the masked dense model (no sparsify_)
    progress: bool = True

    def train_settings(self, sparse: bool) -> TrainSettings:
        return TrainSettings(
            lr=(self.sparse_lr or self.lr) if sparse else self.lr,
            epochs=self.sparse_epochs if sparse else self.epochs,
            batch_size=self.batch_size,
            max_steps=self.max_steps,
            grad_accum=self.grad_accum,
            warmup_ratio=self.warmup_ratio,
            weight_decay=self.weight_decay,
            seed=self.seed,
            precision=self.precision,
            logging_steps=self.logging_steps,
            progress=self.progress,
        )


def log(msg: str, all_ranks: bool = False) -> None:
    """Print from the main process (or every rank, tagged), flushed for torchrun's sake."""
    rank, world_size = world()
    if all_ranks and world_size > 1:
        line = f"[squad] rank {rank}/{world_size}: {msg}\n"
    elif rank == 0:
        line = f"[squad] {msg}\n"
    else:
        return
    # One write per line: ranks share the terminal, and print() writes text and newline apart.
    sys.stdout.write(line)
    sys.stdout.flush()


def set_seed(seed: int) -> None:
    """Seed Python, torch (and CUDA) so the fresh QA head and data order repeat from run to run."""
    from transformers import set_seed as hf_set_seed  # noqa: PLC0415

    random.seed(seed)
    hf_set_seed(seed)


def _model_not_found(name: str, offline: bool, err: Exception) -> SquadUsageError:
    from pathlib import Path  # noqa: PLC0415

    try:
        from huggingface_hub import constants  # noqa: PLC0415

        cache = constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover (transformers depends on it)
        cache = "the Hugging Face cache"
    where = f"no directory {Path(name).resolve()}, and not in the Hugging Face cache {cache}"
    if offline:
        return SquadUsageError(f"model {name!r} not found: {where} (--offline: nothing is downloaded)")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return SquadUsageError(f"model {name!r} not found: {where}, and the hub said: {first}")


def load_model(name: str, offline: bool = False):
    """(model, fast tokenizer) from a local directory, the local Hugging Face cache or (unless
    ``offline``) the hub. A model found nowhere raises SquadUsageError naming where it looked.

    A checkpoint without a QA head (e.g. a sentence-embedding model) gets a freshly initialized
    ``qa_outputs`` layer; transformers warns about it, and fine-tuning trains it.
    """
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer  # noqa: PLC0415

    from pathlib import Path  # noqa: PLC0415

    if offline and not Path(name).is_dir():
        # Settled before transformers is asked: it may still reach for the hub otherwise.
        from huggingface_hub import snapshot_download  # noqa: PLC0415

        try:
            name_or_dir = snapshot_download(name, local_files_only=True)
        except Exception as err:  # noqa: BLE001  (not cached, or not a valid repo id)
            raise _model_not_found(name, offline, err) from None
        name = name_or_dir
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, use_fast=True, local_files_only=offline)
    except OSError as err:  # transformers' "not a local folder and not a valid model identifier"
        raise _model_not_found(name, offline, err) from None
    if not tokenizer.is_fast:
        raise ValueError(f"{name} has no fast tokenizer; SQuAD preprocessing needs offset mappings")
    # float32 master weights whatever the checkpoint stores: transformers 5 loads the stored dtype
    # by default, and the fp16 offline checkpoints then trained not at all (loss stuck at ln(384)).
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(
            name, dtype=torch.float32, local_files_only=offline
        )
    except OSError as err:
        raise _model_not_found(name, offline, err) from None
    return model, tokenizer


def _take(examples: list[SquadExample], n: int | None) -> list[SquadExample]:
    return examples if n is None else examples[:n]


def _prune(model: torch.nn.Module):
    """``sparse24.nn.prune_`` where the weights are (fp32 master weights on CUDA included: the mask
    kernel takes float32)."""
    from sparse24.nn import prune_  # noqa: PLC0415  (the model layer is optional for data tests)

    prune_report = prune_(model)
    if not prune_report.pruned:
        raise RuntimeError(f"prune_ masked no layer of the model:\n{prune_report}")
    return prune_report


def _masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The fixed 2:4 mask of every layer prune_ masked, by module name."""
    from sparse24.nn import Mask24  # noqa: PLC0415

    masks = {}
    for fqn, module in model.named_modules():
        plist = getattr(getattr(module, "parametrizations", None), "weight", None)
        for p in plist or ():
            if isinstance(p, Mask24):
                masks[fqn] = p.mask
    return masks


def _masks_held(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> bool:
    """True when every squashed weight is zero outside the mask it was given at prune time."""
    modules = dict(model.named_modules())
    return all(
        not modules[fqn].weight.detach()[~mask.to(modules[fqn].weight.device)].any()
        for fqn, mask in masks.items()
    )


def _log_trained(summary: dict) -> None:
    log(
        f"{summary['phase']} fine-tuning done: {summary['global_steps']} steps, final loss "
        f"{summary['loss_history'][-1]['loss']:.4f}, "
        f"parameter checksum {summary['param_checksum']:.10e}",
        all_ranks=True,
    )


@dataclass
class _Prepared:
    """What every stage shares: the data, the model and tokenizer, and the features."""

    data: SquadData
    model: torch.nn.Module
    tokenizer: object
    train_examples: list[SquadExample]
    eval_examples: list[SquadExample]
    train_ds: FeatureDataset
    eval_ds: FeatureDataset
    feature_map: EvalFeatureMap


def _prepare(config: SquadConfig) -> _Prepared:
    """Load data, model and tokenizer; build the training and evaluation features."""
    try:
        data = load_squad(
            config.train_file,
            config.dev_file,
            config.squad_dev_gz,
            config.offline,
            config.hub_dataset,
            log=log,
        )
    except (FileNotFoundError, SquadFormatError) as err:  # the message names the file
        raise SquadUsageError(str(err)) from None
    model, tokenizer = load_model(config.model, offline=config.offline)
    train_examples = _take(data.train, config.max_train_samples)
    eval_examples = _take(data.eval, config.max_eval_samples)
    show = config.progress and is_main_process()
    args = (tokenizer, config.max_length, config.stride, show)
    try:
        train_ds = build_train_dataset(train_examples, *args)
        eval_ds, feature_map = build_eval_features(eval_examples, *args)
    except ValueError as err:  # e.g. a question too long for --max-length: the message says so
        raise SquadUsageError(str(err)) from None
    log(
        f"fine-tune on {len(train_examples):,} questions ({len(train_ds):,} features), evaluate on "
        f"{len(eval_examples):,} questions ({len(eval_ds):,} features); model {config.model}"
    )
    return _Prepared(
        data, model, tokenizer, train_examples, eval_examples, train_ds, eval_ds, feature_map
    )


def _score(p: _Prepared, config: SquadConfig, stage: str, autocast: bool = True) -> dict:
    """Evaluate the model as it is now, and log the stage's scores."""
    device = next(p.model.parameters()).device
    # Dense stages run under fp16 autocast on GPUs, so that they are compared with the fp16
    # kernel model in the same precision; the CPU stays fp32.
    dtype = torch.float16 if autocast and device.type == "cuda" else None
    result = evaluate(
        p.model,
        p.eval_examples,
        p.eval_ds,
        p.feature_map,
        config.eval_batch_size,
        device,
        dtype,
        config.n_best,
        config.max_answer_length,
        desc=f"eval {stage}",
        progress=config.progress,
    )
    log(f"{report.STAGES[stage]}: EM {result['exact_match']:.2f}  F1 {result['f1']:.2f}")
    return result


def _runs_kernels(model: torch.nn.Module) -> bool:
    """True when the swapped layers run sparse24's Triton kernels (fp16/bf16 on CUDA, or under the
    Triton interpreter); False when ops.linear falls back to its PyTorch reference (e.g. a float32
    model on a CPU)."""
    from sparse24.nn import SparseLinear  # noqa: PLC0415
    from sparse24.ops import runs_kernels  # noqa: PLC0415

    layers = [m for m in model.modules() if isinstance(m, SparseLinear)]
    return bool(layers) and all(
        runs_kernels(m.values.device, m.values.dtype) for m in layers
    )


def _kernel_stage(p: _Prepared, config: SquadConfig, scores: dict) -> tuple[object, dict, float]:
    """Swap in sparse24's SparseLinear layers, evaluate, and check the F1 against the masked dense
    model. On CUDA the model goes to fp16 and the layers run the kernels (stage
    ``sparse24_kernels``); without a GPU the model stays float32 and ops.linear runs its PyTorch
    reference, so the stage is ``sparse24_reference`` and is reported as such, never as kernels.

    Returns (sparsify report, check record, seconds spent in sparsify_).
    """
    from sparse24.nn import sparsify_  # noqa: PLC0415

    reference = "sparse_finetuned"
    if torch.cuda.is_available():
        p.model.half()  # the sparse GEMM kernels serve fp16/bf16; fp16 as in the tutorial
        reference = "masked_dense_fp16"
        scores[reference] = _score(p, config, reference, autocast=False)
    t0 = time.perf_counter()
    sparsify_report = sparsify_(p.model)
    seconds = time.perf_counter() - t0
    log(str(sparsify_report).splitlines()[0])
    kernels = _runs_kernels(p.model)
    stage = "sparse24_kernels" if kernels else "sparse24_reference"
    scores[stage] = _score(p, config, stage, autocast=False)
    f1_sparse, f1_dense = scores[stage]["f1"], scores[reference]["f1"]
    diff = abs(f1_sparse - f1_dense)
    check = {
        "ran": report.STAGES[stage],
        "stage": stage,
        "reference": reference,
        "f1_sparse24": f1_sparse,
        "f1_masked_dense": f1_dense,
        "abs_diff_f1": diff,
        # against the autocast masked dense model too, for the record (not checked)
        "abs_diff_f1_autocast": abs(f1_sparse - scores["sparse_finetuned"]["f1"]),
        "tolerance_f1": KERNEL_F1_TOLERANCE,
        "passed": diff <= KERNEL_F1_TOLERANCE,
    }
    verdict = "<= {} -> OK" if check["passed"] else "> {} -> FAILED"
    log(
        f"check: {report.STAGES[stage]} F1 {f1_sparse:.2f} vs {report.STAGES[reference]} F1 "
        f"{f1_dense:.2f}: |dF1| = {diff:.3f} " + verdict.format(KERNEL_F1_TOLERANCE)
    )
    return sparsify_report, check, seconds


def _integer(least: int) -> tuple:
    return lambda v: isinstance(v, int) and v >= least, f"an integer >= {least}"


def _number(test, rule: str) -> tuple:
    return lambda v: isinstance(v, (int, float)) and math.isfinite(v) and test(v), rule


_POSITIVE = _number(lambda v: v > 0, "a finite number > 0")
# SquadConfig field -> (test, what the value must be); the option is --field-with-dashes.
_VALUE_RULES = {
    "max_train_samples": _integer(1),
    "max_eval_samples": _integer(1),
    "max_length": _integer(MIN_MAX_LENGTH),
    "n_best": _integer(1),
    "max_answer_length": _integer(1),
    "epochs": _POSITIVE,
    "sparse_epochs": _POSITIVE,
    "max_steps": (lambda v: isinstance(v, int), "an integer"),  # <= 0: the epochs count
    "lr": _POSITIVE,
    "sparse_lr": _POSITIVE,
    "batch_size": _integer(1),
    "eval_batch_size": _integer(1),
    "grad_accum": _integer(1),
    "warmup_ratio": _number(lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": _number(lambda v: v >= 0, "a finite number >= 0"),
    "seed": (lambda v: isinstance(v, int) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "logging_steps": _integer(1),
}
_UNSET_ALLOWED = {"max_train_samples", "max_eval_samples", "sparse_lr"}  # None: all, or --lr


def check_values(config: SquadConfig) -> None:
    """Raise SquadUsageError, naming the option, for a number no run can use."""
    for field, (test, rule) in _VALUE_RULES.items():
        value = getattr(config, field)
        if not (test(value) or (value is None and field in _UNSET_ALLOWED)):
            raise SquadUsageError(f"--{field.replace('_', '-')} must be {rule}, got {value}")
    # A window holds special tokens and the question too, and the next window starts `stride`
    # context tokens before this one ends: half the window keeps room for both.
    if not (isinstance(config.stride, int) and 0 <= 2 * config.stride < config.max_length):
        raise SquadUsageError(
            f"--stride must be >= 0 and less than half of --max-length ({config.max_length}), "
            f"got {config.stride}"
        )


def check_usage(config: SquadConfig) -> None:
    """What can be refused before anything is loaded; with ``offline``, also turn the Hugging Face
    libraries offline (read when they are first imported; from_pretrained also gets
    local_files_only)."""
    check_values(config)
    if (config.train_file is None) != (config.dev_file is None):
        given, missing = (
            ("--train-file", "--dev-file") if config.train_file else ("--dev-file", "--train-file")
        )
        raise SquadUsageError(
            f"{given} needs {missing} as well (local files: both); to split a single dev set by "
            "article use --offline or --squad-dev-gz PATH"
        )
    try:
        import transformers  # noqa: F401, PLC0415
    except ImportError:
        raise SquadUsageError(
            "the squad command needs transformers, accelerate, matplotlib and tqdm: "
            "pip install -e '.[bert]'"
        ) from None
    if config.offline:
        import os  # noqa: PLC0415

        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(var, "1")


def run(config: SquadConfig | None = None, **overrides) -> dict | None:
    """Run the whole experiment and write its results; returns them (None on non-main ranks).

    ``run(SquadConfig(...))`` or ``run(model="...", max_steps=10, ...)``: keyword arguments
    override fields of ``config``.
    """
    config = dataclasses.replace(config or SquadConfig(), **overrides)
    check_usage(config)
    t_start = time.perf_counter()
    set_seed(config.seed)
    if config.speed_results:
        report.load_speed_rows(config.speed_results)  # a bad path fails now, not after training
    p = _prepare(config)
    main = is_main_process()
    scores: dict[str, dict] = {}
    training: dict[str, dict] = {}
    timings: dict[str, float] = {}

    log(f"fine-tuning dense on {len(p.train_ds):,} features", all_ranks=True)
    training["dense"] = fine_tune(p.model, p.train_ds, config.train_settings(sparse=False), "dense")
    _log_trained(training["dense"])
    if main:
        scores["dense"] = _score(p, config, "dense")

    t0 = time.perf_counter()
    prune_report = _prune(p.model)
    timings["prune_s"] = time.perf_counter() - t0
    masks = _masks(p.model)
    log(
        f"prune_: {len(prune_report.pruned)} Linear layers masked 2:4, "
        f"{len(prune_report.skipped)} left dense"
    )
    if main:
        scores["pruned_no_retrain"] = _score(p, config, "pruned_no_retrain")
    barrier()  # the other ranks wait here while the main process evaluates

    log(f"fine-tuning 2:4 sparse (fixed masks) on {len(p.train_ds):,} features", all_ranks=True)
    training["sparse"] = fine_tune(
        p.model, p.train_ds, config.train_settings(sparse=True), "sparse"
    )
    _log_trained(training["sparse"])
    if not main:
        return None  # training is the only collective work; the rest is the main process's

    from sparse24.nn import squash_  # noqa: PLC0415

    squash_(p.model)
    masks_held = _masks_held(p.model, masks)
    scores["sparse_finetuned"] = _score(p, config, "sparse_finetuned")
    kernel_check = sparsify_report = None
    if not config.skip_kernels:
        sparsify_report, kernel_check, timings["sparsify_s"] = _kernel_stage(p, config, scores)
    timings["total_s"] = time.perf_counter() - t_start

    for result in scores.values():
        result.pop("predictions", None)  # thousands of strings: not for the summary JSON
    on_gpu = torch.cuda.is_available()
    results = {
        "benchmark": "squad_v1.1",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": config.model,
        "model_class": type(p.model).__name__,
        "data": {
            **p.data.summary(),
            "train_questions": len(p.train_examples),
            "eval_questions": len(p.eval_examples),
            "train_features": len(p.train_ds),
            "eval_features": len(p.eval_ds),
            "split_questions_before_limits": {"train": len(p.data.train), "eval": len(p.data.eval)},
        },
        "hyperparameters": dataclasses.asdict(config),
        "precision": {
            "train": training["dense"]["precision"],
            "eval": "fp16 autocast" if on_gpu else "fp32",
            "sparse24": None if kernel_check is None else (
                "fp16, sparse24 kernels" if kernel_check["stage"] == "sparse24_kernels"
                else "fp32, PyTorch reference (no GPU)"),
        },
        "world_size": world()[1],
        "environment": report.environment(),
        "results": scores,
        "kernel_check": kernel_check,
        "pruning": {
            "pruned": prune_report.pruned,
            "skipped": prune_report.skipped,
            "masks_held_during_finetuning": masks_held,
        },
        "sparsify_report": sparsify_report,
        "training": training,
        "timings_s": timings,
    }
    run_name = config.run_name or f"squad_{report.slug(config.model)}"
    report.write_outputs(
        results, config.output_dir or report.default_output_dir(), run_name, config.speed_results
    )
    speed_rows = (results["speed_results"] or {}).get("rows", [])
    sys.stdout.write(report.markdown_table(results, speed_rows))
    sys.stdout.flush()
    return results
