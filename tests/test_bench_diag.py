"""CPU checks of the diagnostics' bookkeeping (python -m bench.diag.gpu_breakdown) and of
python -m bench.bert's profile options: the device runs depend on them, and a wrong attribution
would go unnoticed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

from bench import bert
from bench.diag import gpu_breakdown


@pytest.mark.parametrize("name, part", [
    # kernel names as the H200 profiles at 642f629 print them
    ("nvjet_sm90_hsh_192x192_64x4_2x1_v_bz_coopB_bias_TNN", "linear"),
    ("_sparse_wgmma_kernel", "linear"),
    ("void at::native::vectorized_elementwise_kernel<8, at::native::GeluCUDAKernelImpl", "linear"),
    ("triton_poi_fused_gelu_view_3", "linear"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_f16_s161616gemm_f16_32x32", "linear"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x64", "attention"),
    ("triton_poi_fused__scaled_dot_product_cudnn_attention__to_copy_add_arange", "attention"),
    ("triton_per_fused_add_native_layer_norm_view_2", "layernorm"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::Half", "layernorm"),
    ("Memset (Device)", "other"),
    ("void at::native::vectorized_gather_kernel<16, long>", "other"),
])
def test_kernel_names_go_to_their_part(name, part):
    assert gpu_breakdown.part_of(name) == part


def _kernel(name, start, us):
    return SimpleNamespace(device_type=DeviceType.CUDA, name=name,
                           time_range=SimpleNamespace(start=start, elapsed_us=lambda: us))


def test_sparse_kernels_are_told_apart_by_their_order_in_the_layer():
    """Two layers per forward, ITERS forwards; each layer's four GEMMs take distinct times, and
    the events arrive out of order (the profiler does not sort them)."""
    per_shape_us = dict(zip(gpu_breakdown.SPARSE_LAYER_ORDER, (31.0, 15.0, 65.0, 51.0)))
    events, t = [], 0
    for _ in range(gpu_breakdown.ITERS * 2):
        for shape in gpu_breakdown.SPARSE_LAYER_ORDER:
            events.append(_kernel("_sparse_wgmma_kernel", t, per_shape_us[shape]))
            t += 100
        events.append(_kernel("cudnn_generated_fort_native_sdpa", t, 7.0))  # not a sparse GEMM
        t += 100
    events.append(SimpleNamespace(device_type=DeviceType.CPU, name="_sparse_wgmma_kernel",
                                  time_range=SimpleNamespace(start=0, elapsed_us=lambda: 1e6)))
    prof = SimpleNamespace(events=lambda: list(reversed(events)))
    shapes = gpu_breakdown.sparse_kernel_shapes(prof)
    assert set(shapes) == set(gpu_breakdown.SPARSE_LAYER_ORDER)
    for shape, us in per_shape_us.items():
        calls, ms = shapes[shape]
        assert calls == 2
        assert ms == pytest.approx(2 * us / 1e3)


def test_sparse_kernel_counts_that_do_not_fit_the_layer_order_give_nothing():
    events = [_kernel("_sparse_wgmma_kernel", i, 10.0) for i in range(4 * gpu_breakdown.ITERS + 1)]
    assert gpu_breakdown.sparse_kernel_shapes(SimpleNamespace(events=lambda: events)) == {}


def test_breakdown_tables_are_markdown_with_the_difference_row():
    row = {"wall_ms": 4.0, "gpu_ms": 3.0, "host_gap_ms": 1.0, "parts": {"linear": 2.0, "other": 1.0},
           "linear_shapes": {"768x768": (24, 0.48)}}
    faster = {**row, "wall_ms": 3.0, "host_gap_ms": 0.0, "parts": {"linear": 1.5, "other": 1.0}}
    rows = {("dense", "eager", 16): row, ("sparse24", "eager", 16): faster}
    text = gpu_breakdown.fmt_table(rows, [16], ["eager", "default"])
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert [c.strip() for c in lines[4].strip("|").split("|")] == [
        "16", "sparse24 - dense", "-1.00", "+0.00", "-1.00", "-0.500", "+0.000", "+0.000", "+0.000"]
    assert "768x768: 24 x 20.0 us = 0.480" in text
    assert "## default" in text  # a mode with no rows still gets its (empty) table


def test_bert_profile_only_needs_batch_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bert.main(["--profile-only", "--out-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "--profile-only needs --profile" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_compile_for_returns_the_model_in_eager_and_a_compiled_wrapper_otherwise(monkeypatch):
    import torch

    model = torch.nn.Linear(4, 4)
    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    assert bert.compile_for(model, "eager") is model
    compiled = bert.compile_for(model, "reduce-overhead")
    assert compiled is not model and compiled._orig_mod is model
    bert.compile_for(model, "default", fresh=False)
    assert resets == [1]  # only the fresh compile emptied dynamo's caches


@pytest.mark.parametrize("stub", ["kernel", "family"])
def test_eager_frames_runs_without_a_gpu(stub):
    """bench.diag.eager_frames runs on a CPU without the interpreter (its own process: it unsets
    TRITON_INTERPRET before sparse24 is imported), the third call through the direct launch
    where the kernel is stubbed."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "bench.diag.eager_frames", "--stub", stub],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if "frames of sparse24" in line]
    assert len(lines) == 2, done.stdout
    if stub == "kernel":
        assert all(line.endswith("_linear_impl launch_guard launch get") for line in lines), lines


@pytest.fixture
def grad_mode_restored():
    """bench.bert's main turns grad off for the process (a script's choice); tests after these
    need it back."""
    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)


class _FakeQA(torch.nn.Module):
    """Stands in for BertForQuestionAnswering: logits of the right kind from any batch."""

    config = SimpleNamespace(_attn_implementation="fake")

    def forward(self, input_ids, **_):
        ones = torch.ones(input_ids.shape[0], 2)
        return SimpleNamespace(start_logits=ones, end_logits=ones)


def _run_bert_on_fakes(monkeypatch, tmp_path, dense, sparse, fake_time, variants="dense,sparse24",
                       synchronize=lambda: None) -> dict:
    """bench.bert's main, eager at batch 4, 3 rounds, on stand-in models with ``fake_time`` as
    its timer; its rows by variant."""
    monkeypatch.setattr(bert.common, "require_cuda", lambda script: None)
    monkeypatch.setattr(bert, "build_dense", lambda dtype: dense)
    monkeypatch.setattr(bert, "build_sparse24", lambda d, fuse_qkv=True: (sparse, dense, {}))
    monkeypatch.setattr(bert, "make_batches",
                        lambda sizes, seq: {bs: {"input_ids": torch.ones(bs, seq)} for bs in sizes})
    monkeypatch.setattr(bert, "time_tutorial", fake_time)
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    assert bert.main(["--variants", variants, "--modes", "eager", "--batch-sizes", "4",
                      "--rounds", "3", "--seq-len", "8", "--no-plot", "--out-dir", str(tmp_path)]) == 0
    return {r["variant"]: r for r in bert.common.read_jsonl(tmp_path / "bert.jsonl")}


def test_bert_times_its_variants_in_turns_and_takes_the_median_of_the_rounds_ratios(
        tmp_path, monkeypatch, grad_mode_restored):
    """Each round times dense, then sparse24, after one untimed turn; the speedup is the median of
    the rounds' ratios, not the ratio of the medians (here 2.0 against 2.2): a slow spell of the
    host in round 2 slows both variants of that round and cancels."""
    dense, sparse = _FakeQA(), _FakeQA()
    name = {id(dense): "dense", id(sparse): "sparse24"}
    planned = {"dense": [9.0, 2.0, 4.0, 2.2], "sparse24": [9.0, 1.0, 4.0, 1.0]}  # a warm-up turn first
    order = []

    def fake_time(fn, batch, min_run_time):
        order.append(name[id(fn)])
        return planned[name[id(fn)]][order.count(name[id(fn)]) - 1]

    rows = _run_bert_on_fakes(monkeypatch, tmp_path, dense, sparse, fake_time, "sparse24,dense")
    assert order == ["dense", "sparse24"] * 4
    assert rows["dense"]["ms_rounds"] == planned["dense"][1:] and rows["dense"]["ms"] == 2.2
    assert rows["dense"]["rounds"] == 3
    assert rows["sparse24"]["ms"] == 1.0
    assert (rows["sparse24"]["speedup"], rows["sparse24"]["speedup_min"],
            rows["sparse24"]["speedup_max"]) == (2.0, 1.0, 2.2)
    assert "| 2.20  | 1.00     | 2.00x (1.00-2.20)" in (tmp_path / "bert.md").read_text()


def test_a_variant_that_fails_in_a_later_round_fails_its_row_and_the_others_stand(
        tmp_path, monkeypatch, grad_mode_restored):
    dense, sparse = _FakeQA(), _FakeQA()
    calls = []

    def fake_time(fn, batch, min_run_time):
        calls.append(fn)
        if fn is sparse and calls.count(sparse) == 3:  # its second timed round
            raise RuntimeError("CUDA out of memory")
        return 1.0

    rows = _run_bert_on_fakes(monkeypatch, tmp_path, dense, sparse, fake_time)
    assert calls.count(sparse) == 3 and calls.count(dense) == 4  # not timed again once failed
    assert rows["dense"]["status"] == "ok" and rows["dense"]["ms"] == 1.0
    assert rows["sparse24"]["status"] == "failed" and rows["sparse24"]["ms"] is None
    assert "out of memory" in rows["sparse24"]["error"] and rows["sparse24"]["speedup"] is None


def test_a_failure_that_breaks_the_cuda_context_stops_the_turns_and_spares_the_others(
        tmp_path, monkeypatch, grad_mode_restored):
    """An error after which every CUDA call fails (an illegal memory access) is sparse24's, not
    dense's: dense keeps the round it finished, with a note, and is not timed in the broken
    context; sparse24's row fails with its own error."""
    dense, sparse = _FakeQA(), _FakeQA()
    calls, broken = [], []

    def fake_time(fn, batch, min_run_time):
        if broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        calls.append(fn)
        if fn is sparse and calls.count(sparse) == 3:
            broken.append(True)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return 2.0 if fn is dense else 1.0

    def synchronize():
        if broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    rows = _run_bert_on_fakes(monkeypatch, tmp_path, dense, sparse, fake_time,
                              synchronize=synchronize)
    assert rows["dense"]["status"] == "ok" and rows["dense"]["ms_rounds"] == [2.0, 2.0]
    assert "stopped after 2 of 3 rounds" in rows["dense"]["note"] and "sparse24" in rows["dense"]["note"]
    assert rows["sparse24"]["status"] == "failed" and "illegal memory" in rows["sparse24"]["error"]
    assert rows["sparse24"]["speedup"] is None


def test_ncu_stall_groups_from_the_sass_source_page(tmp_path):
    """bench.diag.ncu_stalls on a source page shaped like ncu's CSV (the 4096^3 profile's
    instructions, samples invented): the drain, a try-wait loop's branch (its try-wait a dozen
    instructions up) by run count, the once-per-program warps, the rest; the real profiles are
    gzipped under bench/results/h100/profiles/sm90_stalls."""
    import gzip

    from bench.diag import ncu_stalls

    wait = "SYNCS.PHASECHK.TRANS64.TRYWAIT"
    sass = [("LDC R1, c[0x0][0x28]", 5, 132), (f"{wait} P0, [UR8+-0x10], R6", 2, 65536)]
    sass += [("ULOP3.LUT UR12, UR12, 0x3ffff, URZ, 0xc0, !UPT", 1, 65536)] * 11
    sass += [("@!P0  BRA 0x7f2a9f7cb2e0", 40, 65536),
             ("HGMMA.SP.64x256x32.F32 R24, gdesc[UR12], R24, R152, 0x0", 3, 65536),
             ("WARPGROUP.DEPBAR.LE gsb0, 0x0", 100, 65536), (f"{wait} P1, [R3+UR11]", 0, 16384),
             ("@!P1  BRA 0x7f2a9f7cb310", 20, 16384), ("NOP", 60, 264),
             ("@P1   BRA 0x7f2a9f7c9150", 7, 16384)]
    lines = ["==PROF== Connected to process 763", "4096 4096 4096 {'BT': 256}",
             '"Kernel Name","_sparse_wgmma_kernel",',
             '"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed"']
    lines += [f'"0x{i:x}","      {text}","{samples}","{runs}"'
              for i, (text, samples, runs) in enumerate(sass)]
    path = tmp_path / "page.csv.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    header, rows = ncu_stalls.read_rows(path)
    assert header[1].startswith("4096") and len(rows) == len(sass)
    counts = ncu_stalls.groups(rows)
    assert counts == {"wgmma drain": 100, "mbarrier wait, run 65536 times": 40,
                      "mbarrier wait, run 16384 times": 20, "idle warps (once per program)": 65,
                      "other": 2 + 11 + 3 + 7}
    assert sum(counts.values()) == sum(s for _, s, _ in sass)


def test_stream_rate_fit_recovers_fixed_cost_and_rate():
    """bench.diag.stream_rate's line: the intercept is the fixed cost, the inverse slope the rate."""
    from bench.diag.stream_rate import fit_line

    nbytes = [1e6, 2e6, 4e6, 8e6]
    times = [3.0 + b / 2.5e6 for b in nbytes]  # 3 us fixed, 2.5 TB/s = 2.5e6 bytes per us
    fixed, slope = fit_line(nbytes, times)
    assert abs(fixed - 3.0) < 1e-9 and abs(1 / slope - 2.5e6) < 1e-3


def test_llm_breakdown_parts_and_ceiling():
    """bench.diag.llm_breakdown: kernels sorted into GEMMs, attention and the rest (attention
    first: fmha_cutlassF is attention, not a GEMM), and the Amdahl ceiling of a step."""
    from bench.diag import llm_breakdown as lb

    assert lb.part_of("_sparse_wgmma_kernel") == "gemm"
    assert lb.part_of("nvjet_hsh_128x64_64x4_2x1_v_bz_coopA_TNT") == "gemm"
    assert lb.part_of("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64") == "gemm"
    assert lb.part_of("fmha_cutlassF_f16_aligned_64x64_rf_sm80") == "attention"
    assert lb.part_of("void pytorch_flash::flash_fwd_splitkv_kernel<>") == "attention"
    assert lb.part_of("triton_poi_fused_add_mul_silu_3") == "other"
    parts, kernels = lb.split_by_part([("_sparse_wgmma_kernel", 300.0), ("flash_fwd", 60.0),
                                       ("triton_poi_fused_add_0", 30.0)])
    assert parts == pytest.approx({"gemm": 0.1, "attention": 0.02, "other": 0.01}, rel=1e-12)
    assert sum(kernels.values()) == pytest.approx(sum(parts.values()), rel=1e-12)
    # GEMMs 60% of the step, 2x faster: 1 / (0.4 + 0.3)
    assert abs(lb.ceiling({"gemm": 6.0, "attention": 3.0, "other": 1.0}, 2.0) - 1 / 0.7) < 1e-12
