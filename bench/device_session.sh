#!/usr/bin/env bash
# The GPU-machine runs behind bench/results/h200 (one call each, stages chosen by argument):
#   bash bench/device_session.sh OUT_DIR tests gemm16      # GPU suite, then the fp16 GEMM table
#   (the GPU suite in three calls that fit: testsrest, wgmmatests, decode)
#   bash bench/device_session.sh OUT_DIR gemmbf16 bert bertprofile bertbf16 overhead pack profile
#   bash bench/device_session.sh OUT_DIR asmloop   # the A/Bs of the sm90 asm k-loop (ASM_LOOP) and split-K (SPLIT_K): bench.gemm_variants --asm-loop / --split-k (the tests stage checks them first)
#   bash bench/device_session.sh OUT_DIR streaming  # the sm90 few-token tiles (BT 8-32): GPU tests, then the A/B against the mma rule
#   bash bench/device_session.sh OUT_DIR decode     # the mma family's A_TILE 2 GPU tests, then the MAXNREG A/B at few tokens
#   bash bench/device_session.sh OUT_DIR versions   # carry .ab (git archive trees): a commit's GEMMs against this one's, in turns
#   bash bench/device_session.sh OUT_DIR llm     # the Llama-8B-shaped decoder (python3 -m bench.llm)
#   bash bench/device_session.sh OUT_DIR directtests hostab midtokens   # carry .ab/<commit>: the direct launches' GPU tests, host time and BERT eager against an older tree, the sm90 tiles at 17-64 tokens
#   bash bench/device_session.sh OUT_DIR gated      # the gated (SwiGLU) epilogues: their GPU tests, then bench.gated
#   bash bench/device_session.sh OUT_DIR gatedllm   # bench.llm without and with SparseGatedMLP (CUDA graphs)
#   bash bench/device_session.sh OUT_DIR metaring   # the sm90 kernel's metadata through the ring (META_RING): GPU tests, then its A/B
#   bash bench/device_session.sh OUT_DIR profilering   # its Nsight Compute profile at 1 and 16 tokens, before and after
#   the GPU suite in three calls with the A/Bs beside it: wgmmatests metaringab; mmatests; restests gatedab
#   bash bench/device_session.sh OUT_DIR midtiles   # issue 22: the sm90 token tiles of 16-128 at 384-1536 tokens, split or not
#   bash bench/device_session.sh OUT_DIR bigring   # issue 22: BT 128-256 with and without the metadata ring, BERT-base and LLM shapes
#   bash bench/device_session.sh OUT_DIR launchparts   # issue 23: one sm90 call's host time part by part (bench/diag/launch_parts.py)
#   bash bench/device_session.sh OUT_DIR midtests versions bertsmall   # carry .ab/<commit before the mid-token rule>: its GPU tests, the A/B, BERT at batch 1-2
#   bash bench/device_session.sh OUT_DIR hostlevers   # carry .ab/<base>: issue 23's host-path levers, tested on the GPU, then base against head (overhead, BERT turns, launch_parts)
#   bash bench/device_session.sh OUT_DIR bertab   # carry .ab/<base>: BERT eager and default-mode turns, base and head processes alternating twice
#   bash bench/device_session.sh OUT_DIR tileorder   # issue 22: the sm90 tile order (GROUP 1, 2, 4, 8) of the untuned config, LLM and BERT-base shapes
#   bash bench/device_session.sh OUT_DIR blockf256 stalls   # issue 22, session 12: BLOCK_F 256 tested and timed; per-instruction stall samples
#   bash bench/device_session.sh OUT_DIR asmahead   # issue 22, session 13: the asm k-loop's metadata 2-4 batches ahead: GPU tests, then its A/B
#   streamk (session 13): stream-K's GPU tests and its A/B, at 88562f3 (reverted: it lost)
#   bash bench/device_session.sh OUT_DIR fewtest versions streamrate decodeprofile stallsx wraptriton llmbreakdown   # session 14: carry .ab/base; the 80-program rule's GPU test and A/B, then issue 25's and 23's diagnostics
#   next (after session 14, 2026-12-06): split the few-token kernel's fixed cost (~3.2 us a call; bench.diag.stream_rate); the H200 reruns (gemm16 gemmbf16 llm bert overhead) when one is lent; decode (the mma GPU tests) on HEAD
#   bash bench/device_session.sh OUT_DIR boundab opcostab   # session 15: carry .ab/$AB_BASE; the records' and bound launches' GPU tests, host time, BERT turns and the compiled op, base against head
#   next (after session 15): testsrest decode launchparts on HEAD (the review's mends, 15fccaf, ran on the CPU only), then boundab opcostab against e9c7f77 on one calm host
#   bash bench/device_session.sh OUT_DIR restests wgmmatests launchparts; then mmatests overhead opcost bertturns   # session 16: the GPU suite on the records' path, one call's parts, issue 23's figures
#   bash bench/device_session.sh OUT_DIR mmabound   # session 16: the mma family's bound launches on the GPU (then the whole suite when device time allows)
#   AB_BASE=23ff303 bash bench/device_session.sh OUT_DIR mmabound mmahostab   # session 17: carry .ab/23ff303; the mma bound launches' GPU tests, then their host time against the tree before them
#   bash bench/device_session.sh OUT_DIR wgmmatests fixtests; then overhead bertturns opcost   # session 17: the fuzz's fixes on the GPU, then issue 23's figures on HEAD
#   next (after session 17, issue 23 resolved): the H200 reruns when one is lent (overhead bertturns opcost launchparts gemm16); the whole GPU suite (wgmmatests mmatests restests) on the tree after d5f9fb1
#   next (after session 16): mmabound first (written, not run: the device time was spent), then wgmmatests mmatests restests on HEAD; the H200 reruns when one is lent
# Export SPARSE24_COMMIT=<this commit> in the device command: the GPU machine's copy of the tree keeps
# an older commit in its .git, and the records name that one (+dirty) otherwise (session 10's did).
#   bash bench/device_session.sh OUT_DIR notebook   # carry .whl (nbclient wheels) and .models/all-MiniLM-L6-v2-fp16
#   bash bench/device_session.sh OUT_DIR levers                  # the finished lever A/B runs (bench/investigations)
#   bash bench/device_session.sh OUT_DIR opcost eagerdiag hostpaths   # host-time diagnostics (bench/diag; eagerdiag: bench/investigations)
#   bash bench/device_session.sh OUT_DIR breakdown abturns   # GPU time by part and GEMM shape; dense and sparse24 timed in turns
# Run from the repository root: the benches are modules of bench/ (python3 -m bench.gemm, ...).
# Every stage has its own time limit so one slow stage cannot eat the others' time.
set -u
# One device call may run 600 s: every stage's own limit is cut to what is left of
# DEVICE_SESSION_BUDGET_S (default 570 s, leaving time to pack the results).
started=$(date +%s)
budget=${DEVICE_SESSION_BUDGET_S:-570}
limit() {  # limit SECONDS COMMAND...: timeout with the stage's limit or what is left, whichever is less
  local left=$(( started + budget - $(date +%s) ))
  (( left < $1 )) && set -- "$left" "${@:2}"
  (( $1 > 5 )) || { echo "skipped (no time left): ${*:2}" >&2; return 124; }
  timeout "$@"
}
# Results are written to a scratch folder and come back as one archive, OUT_DIR/results.tgz: the
# device tool returns only a few files per call (a run on 2026-12-02 lost its GEMM tables so).
final=$1; shift
out=$(mktemp -d)
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "pip install failed"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
for stage in "$@"; do
  echo "=== $stage $(date -u +%H:%M:%S)"
  case $stage in
    tests) limit 400 python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider tests \
             >"$out/pytest_gpu.txt" 2>&1; tail -15 "$out/pytest_gpu.txt" ;;  # the whole GPU suite (over 300 s)
    testsrest) limit 300 python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider tests \
             --deselect tests/test_wgmma_gpu.py -k "not every_candidate and not few_chunks" \
             >"$out/pytest_gpu_rest.txt" 2>&1; tail -15 "$out/pytest_gpu_rest.txt" ;;  # all but what wgmmatests and decode run
    wgmmatests) limit 300 python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider tests/test_wgmma_gpu.py \
             tests/test_gemm.py::test_fused_reduce_eager_and_in_cuda_graphs_gpu >"$out/pytest_gpu_wgmma.txt" 2>&1
             tail -15 "$out/pytest_gpu_wgmma.txt" ;;  # the sm90 forms and the fused reduction only
    decode) limit 300 python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider tests/test_gemm.py \
             -k "few_chunks or (every_candidate and mma)" >"$out/pytest_gpu_mma.txt" 2>&1
             tail -8 "$out/pytest_gpu_mma.txt"  # A_TILE 2 in every form first (cut short on 2026-12-05)
             limit 230 python3 -m bench.gemm_variants --family mma --mode graph --top 6 \
             --only BLOCK_F=128,BLOCK_T=16,A_TILE=2,SPLIT_K=2/4/8/16 --out "$out/gemm_variants_decode.jsonl" \
             --shapes 1x4096x4096,16x4096x4096,1x14336x4096,16x14336x4096,16x4096x14336,16x3072x768 \
             2>&1 | grep -v Warning | tail -50 ;;  # MAXNREG 168 (three programs an SM) against none, each checked first
    streaming) limit 200 python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider tests/test_wgmma_gpu.py -k few_token \
             >"$out/pytest_gpu_few_token.txt" 2>&1; tail -8 "$out/pytest_gpu_few_token.txt"  # the sm90 few-token tiles, checked first
             limit 330 python3 -m bench.gemm_variants --family wgmma --split-k --split-ks 2,3,4,6,8,16 --with-heuristic \
             --only BT=8/16,STAGES=10/12 --mode graph --top 5 --out "$out/gemm_variants_streaming.jsonl" \
             --shapes 1x4096x4096,16x4096x4096,1x14336x4096,16x14336x4096,16x4096x14336,16x3072x768 \
             2>&1 | grep -v Warning | tail -50 ;;  # the sm90 kernel's TMA ring (BT 8/16, deepest ring, splits) against the mma heuristic
    streaming2) limit 150 python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider tests/test_wgmma_gpu.py -k few_token \
             >"$out/pytest_gpu_few_token.txt" 2>&1; tail -4 "$out/pytest_gpu_few_token.txt"
             limit 200 python3 -m bench.gemm_variants --family wgmma --split-k --split-ks 2,4,8 --with-heuristic \
             --only BT=8/16,STAGES=10,META_AHEAD=2/4 --mode graph --top 4 --out "$out/gemm_variants_streaming.jsonl" \
             --shapes 1x4096x4096,16x4096x4096,1x14336x4096,16x14336x4096,16x4096x14336,16x3072x768 \
             2>&1 | grep -v Warning | tail -12  # META_AHEAD 4 against 2 (streaming stage: 2 beat 1 by 2-8%)
             limit 200 python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider tests/test_gemm.py \
             -k "few_chunks or (every_candidate and mma)" >"$out/pytest_gpu_mma.txt" 2>&1
             tail -4 "$out/pytest_gpu_mma.txt" ;;  # the mma family's A_TILE 2 in every form
    rule) limit 150 python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider tests --deselect tests/test_wgmma_gpu.py \
             -k "not every_candidate and not few_chunks" >"$out/pytest_gpu_rest.txt" 2>&1; tail -3 "$out/pytest_gpu_rest.txt"
             for base in .ab/rule-*/; do limit 170 python3 -m bench.versions "$base" --rounds 3 --out-dir "$out" \
             --shapes 1x14336x4096,8x14336x4096,16x14336x4096,1x3072x768,16x3072x768,16x2304x768,16x768x768,1x4096x4096,16x4096x4096,16x4096x14336 \
             2>&1 | grep -v Warning | tail -14; done ;;  # carry .ab: the few-token rule against 1ac5c6c without, then with, the H100 defaults
    asmloop) limit 280 python3 -m bench.gemm_variants --family wgmma --asm-loop --mode graph --top 4 \
             --shapes 24576x3072x768,6144x768x768,6144x768x3072,4096x4096x4096,4096x14336x4096,8192x8192x8192 \
             --out "$out/gemm_variants_asm_loop.jsonl" 2>&1 | tail -40  # the ASM_LOOP lever: each config checked, then timed
             limit 200 python3 -m bench.gemm_variants --family wgmma --split-k --mode graph --top 4 \
             --shapes 384x3072x768,384x768x3072,1000x4096x4096,512x4096x14336,6144x768x768,6144x768x3072 \
             --out "$out/gemm_variants_split_k.jsonl" 2>&1 | tail -30 ;;  # the SPLIT_K lever, few-tile shapes
    versions) for base in .ab/*/; do limit 280 python3 -m bench.versions "$base" --rounds 2 ${VERSIONS_SHAPES:+--shapes "$VERSIONS_SHAPES"} --out-dir "$out" 2>&1 \
             | grep -v Warning | tail -20; done ;;  # carry .ab: trees made by git archive (bench/versions.py)
    gemm16) mkdir -p "$out/fp16"; limit 400 python3 -m bench.gemm --out-dir "$out/fp16" 2>&1 | tail -45 ;;
    gemmbf16) mkdir -p "$out/bf16"; limit 150 python3 -m bench.gemm --dtype bfloat16 --modes graph \
             --no-plot --out-dir "$out/bf16" 2>&1 | tail -30 ;;
    bert) mkdir -p "$out/bert"; limit 560 python3 -m bench.bert --out-dir "$out/bert" 2>&1 \
             | grep -v Warning | tail -60 ;;
    bertprofile) mkdir -p "$out/bert"; limit 300 python3 -m bench.bert --profile-only --profile 16,64 \
             --variants dense,sparse24 --out-dir "$out/bert" 2>&1 | grep -v Warning | tail -15 ;;  # its own process: the profiler slows the launches after it
    bertbf16) mkdir -p "$out/bertbf16"; limit 300 python3 -m bench.bert --dtype bfloat16 \
             --variants dense,sparse24 --min-run-time 0.5 --out-dir "$out/bertbf16" 2>&1 | grep -v Warning | tail -30 ;;
    notebook) python3 -m pip install -q --no-index --no-deps .whl/*.whl 2>&1 | tail -2  # debugpy and jedi left out (10 MB of the 64 MiB a call carries): ipykernel and IPython run without them
             SPARSE24_NOTEBOOK_MODEL=$PWD/.models/all-MiniLM-L6-v2-fp16 limit 420 python3 notebooks/execute.py \
             --out "$out/semi_structured_sparse.ipynb" 2>&1 | tail -5 ;;
    levers) limit 300 python3 -m bench.investigations.2026-12-gemm-levers.levers mma-a-tile wgmma-tile gelu --out-dir "$out" 2>&1 \
             | grep -v Warning | tail -40 ;;
    overhead) limit 90 python3 -m bench.overhead --out-dir "$out" 2>&1 | tail -30 ;;
    llm) mkdir -p "$out/llm"; limit 500 python3 -m bench.llm --out-dir "$out/llm" 2>&1 \
             | grep -v Warning | tail -30 ;;
    tileorder) limit 300 python3 -m bench.gemm_variants --shapes 4096x4096x4096,4096x4096x11008,4096x11008x4096,4096x14336x4096,2048x28672x4096,6144x2304x768,24576x3072x768,24576x768x3072,6144x768x3072,1000x768x3072,768x768x768 \
             --with-heuristic --only BT=1 --groups 1,2,4,8 --mode graph --top 4 --out "$out/gemm_variants.jsonl" 2>&1 | grep -v Warning | tail -16 ;;  # session 10's sweep on another GPU, and the mid-token tiles (BT 32-64: the last two shapes)
    blockf256) limit 150 python3 -m pytest -q -rf -n 12 -p no:cacheprovider tests/test_wgmma_gpu.py -k "256_feature or gated_epilogues" \
             >"$out/pytest_gpu_blockf256.txt" 2>&1; tail -4 "$out/pytest_gpu_blockf256.txt"
             limit 330 python3 -m bench.gemm_variants --family wgmma --block-f-256 --with-heuristic --only BLOCK_F=256,BT=128,STAGES=3 \
             --mode graph --top 5 --out "$out/gemm_variants_blockf256.jsonl" \
             --shapes 4096x4096x4096,4096x14336x4096,4096x4096x11008,4096x11008x4096,8192x8192x8192,2048x4096x4096,1024x14336x4096,24576x3072x768,6144x3072x768,6144x2304x768,24576x768x3072,6144x768x3072 \
             2>&1 | grep -v Warning | tail -20 ;;  # session 12: 256-feature tiles (with and without the metadata ring) against the heuristic's config
    stalls) for skip in 1 3; do limit 100 ncu --clock-control none -k regex:_sparse_wgmma_kernel --launch-skip $skip --launch-count 1 \
             --section SourceCounters --section WarpStateStats --page source --print-source sass --csv \
             python3 -m bench.investigations.2026-12-sm90-ncu.profile_wgmma '[[4096,4096,4096,null],[6144,768,768,null]]' \
             >"$out/ncu_source_$skip.csv" 2>&1; python3 -m bench.diag.ncu_stalls "$out/ncu_source_$skip.csv" --top 0; done ;;  # where the sm90 kernel's warps wait (bench/diag/ncu_stalls.py)
    fewtest) limit 150 python3 -m pytest -q -rf -n 12 -p no:cacheprovider tests/test_gemm.py -k few_tokens_default_configs_gpu \
             >"$out/pytest_gpu_few_tokens.txt" 2>&1; tail -3 "$out/pytest_gpu_few_tokens.txt" ;;  # linear's own few-token choices on the GPU (the streaming rule)
    streamrate) limit 150 python3 -m bench.diag.stream_rate --out-dir "$out" 2>&1 | grep -v Warning | tail -8
             limit 100 python3 -m bench.diag.stream_rate --n 768 --ks 768,1536,3072,6144 --out-dir "$out" 2>&1 | grep -v Warning | tail -8 ;;  # issue 25: fixed cost and streaming rate of the few-token kernel, cuBLAS and a copy (bench/diag/stream_rate.py)
    llmbreakdown) limit 300 python3 -m bench.diag.llm_breakdown --out-dir "$out" 2>&1 | grep -v -i warn | tail -16 ;;  # issue 25: a decode step's GPU time by part, dense and sparse24, and the ceiling the GEMMs allow
    wraptriton) limit 120 python3 -m bench.diag.wrap_triton_probe 2>&1 | grep -v Warning | tee "$out/wrap_triton_probe.txt" | tail -8 ;;  # issue 23: the Gluon kernel through triton_op + wrap_triton under torch.compile
    decodeprofile) limit 100 ncu --clock-control none -k regex:_sparse_wgmma_kernel --launch-skip 1 --launch-count 1 \
             --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section LaunchStats --section Occupancy \
             python3 -m bench.investigations.2026-12-sm90-ncu.profile_wgmma '[[1,14336,4096,null]]' >"$out/ncu_sections_1x14336x4096.txt" 2>&1
             grep -E "Duration|DRAM Throughput|Memory Throughput|Grid Size|Registers Per|Achieved Occupancy|Warp Cycles Per Issued|Mem Busy|Max Bandwidth" "$out/ncu_sections_1x14336x4096.txt" | head -12 ;;  # issue 25: the M = 1 kernel linear chooses, by section
    stallsx) for skip in 1 3; do limit 100 ncu --clock-control none -k regex:_sparse_wgmma_kernel --launch-skip $skip --launch-count 1 \
             --section SourceCounters --section WarpStateStats --page source --print-source sass --csv \
             python3 -m bench.investigations.2026-12-sm90-ncu.profile_wgmma "$STALLS_RUNS" \
             >"$out/ncu_source_x$skip.csv" 2>&1; python3 -m bench.diag.ncu_stalls "$out/ncu_source_x$skip.csv" --top 0; done ;;  # stalls of two given [M, N, K, config] runs
    midprofile) limit 90 ncu --clock-control none -k regex:_sparse_wgmma_kernel --launch-skip 1 --launch-count 1 \
             --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
             python3 -m bench.investigations.2026-12-sm90-ncu.profile_wgmma '[[768,768,3072,null]]' >"$out/ncu_sections_768x768x3072.txt" 2>&1
             limit 90 ncu --clock-control none -k regex:"gemm|nvjet|xmma|cutlass" --launch-skip 1 --launch-count 1 \
             --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
             python3 -c "import torch, torch.nn.functional as F; x = torch.randn(768, 3072, device='cuda', dtype=torch.float16); w = torch.randn(768, 3072, device='cuda', dtype=torch.float16); [F.linear(x, w) for _ in range(3)]; torch.cuda.synchronize()" \
             >"$out/ncu_sections_768x768x3072_cublas.txt" 2>&1
             grep -hE "^  [a-z_0-9]+|Duration|Memory Throughput|L2 Cache Throughput|DRAM Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|Grid Size|Cluster Size|Registers Per|Shared Memory Configuration Size|Achieved Occupancy|Mem Busy|Max Bandwidth|L2 Hit Rate" \
             "$out/ncu_sections_768x768x3072.txt" "$out/ncu_sections_768x768x3072_cublas.txt" | head -60 ;;  # issue 22: is the few-tile BERT shape L2-bound? sparse24 and cuBLAS
    asmahead) limit 180 python3 -m pytest -q -rf -n 12 -p no:cacheprovider tests/test_wgmma_gpu.py -k "batches_ahead" \
             >"$out/pytest_gpu_asmahead.txt" 2>&1; tail -4 "$out/pytest_gpu_asmahead.txt"
             limit 330 python3 -m bench.gemm_variants --with-heuristic --mode graph --top 12 --out "$out/gemm_variants_asmahead.jsonl" \
             --configs "$(python3 -c 'import json; print(json.dumps([{"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 4, **({"ASM_LOOP": d, "META_AHEAD": a} if d else {})} for d, a in ((0, 1), (1, 1), (1, 4), (2, 1), (2, 2), (2, 3), (4, 1), (4, 2))]))')" \
             --shapes ${ASMAHEAD_SHAPES:-4096x4096x4096,4096x14336x4096,4096x4096x11008,8192x8192x8192,6144x3072x768,24576x3072x768} \
             2>&1 | grep -v Warning | tail -80 ;;  # issue 22: the asm k-loop with its metadata further ahead, against the Gluon loop
    hostpaths) limit 240 python3 -m bench.diag.host_paths >"$out/host_paths.txt" 2>&1; grep "===" "$out/host_paths.txt" ;;
    eagerdiag) limit 300 python3 -m bench.investigations.2026-12-bert-eager-host-time.eager_steady >"$out/eager_steady.txt" 2>&1; grep -v Warning "$out/eager_steady.txt" | tail -30 ;;
    opcost) limit 150 python3 -m bench.diag.compiled_op_cost >"$out/compiled_op_cost.txt" 2>&1; head -8 "$out/compiled_op_cost.txt" ;;
    breakdown) limit 560 python3 -m bench.diag.gpu_breakdown >"$out/gpu_breakdown.txt" 2>&1; grep -v -E "Warning|^    " "$out/gpu_breakdown.txt" | tail -70 ;;
    mmabound) limit 240 python3 -m pytest -m gpu -q -rf -n 4 -p no:cacheprovider tests/test_gemm.py tests/test_wgmma_gpu.py \
             -k "mma_bound or direct_launches or through_its_bound_launches" >"$out/pytest_gpu_mmabound.txt" 2>&1; tail -6 "$out/pytest_gpu_mmabound.txt" ;;  # issue 23 (session 16): the mma family's bound launches, the direct launches, the sm90 bound launches
    mmahostab) base=.ab/${AB_BASE:?AB_BASE names the base tree under .ab}; tree=$(mktemp -d); cp -r "$base/sparse24" "$tree/"; cp -r bench "$tree/"
             mma='{"family": "mma", "BLOCK_F": 64, "BLOCK_T": 32, "GROUP_T": 8, "PREFETCH": 1, "SPLIT_K": 1, "A_TILE": 1, "num_warps": 4, "num_stages": 1}'
             for pass in 1 2; do for side in "$tree" .; do label=$([ "$side" = . ] && echo head || echo "$AB_BASE"); mkdir -p "$out/mmahost_${label}_$pass"
             (cd "$side" && SPARSE24_COMMIT=$([ "$side" = . ] && echo "$SPARSE24_COMMIT" || echo "$AB_BASE") \
             limit 75 python3 -m bench.overhead --rounds 5 --config "$mma" --out-dir "$out/mmahost_${label}_$pass" 2>&1 | grep -E "^\| 16x"); done; done ;;  # issue 23 (session 17): carry .ab/$AB_BASE; the mma family's host path (an mma config stored as tuned), base against head, two passes
    fixtests) limit 240 python3 -m pytest -q -rf -n 8 -p no:cacheprovider tests/test_input_checks.py tests/test_nn_compile.py \
             tests/test_bound_launch.py tests/test_bound_mma.py tests/test_gemm.py tests/test_epilogue_ulp.py \
             -k "not test_gemm and not test_epilogue_ulp or relu or nan or mma_bound" >"$out/pytest_gpu_fixes.txt" 2>&1; tail -4 "$out/pytest_gpu_fixes.txt" ;;  # session 17: NaN through ReLU in every family, the op's checks when called directly, the compiled model (the sm90 epilogue's ReLU: wgmmatests)
    bertturns) mkdir -p "$out/bertturns"; limit 120 python3 -m bench.diag.ab_interleaved --modes eager,default --rounds 5 --min-run-time 0.2 2>&1 \
             | grep -v Warn | tail -6 | tee "$out/bertturns/ab_interleaved.txt" ;;  # issue 23 (session 16): BERT-base batch 4 and 16, dense and sparse24 in turns, this tree only
    abturns) limit 400 python3 -m bench.diag.ab_interleaved >"$out/ab_interleaved.txt" 2>&1; grep -v -E "Warning|warn" "$out/ab_interleaved.txt" | tail -12 ;;
    pack) limit 60 python3 -m bench.pack --out-dir "$out" 2>&1 | tail -12 ;;
    directtests) limit 120 python3 -m pytest -m gpu -q -n 4 -p no:cacheprovider tests/test_gemm.py \
             tests/test_wgmma_gpu.py -k "direct or not_current or planned" >"$out/pytest_gpu_direct.txt" 2>&1; tail -3 "$out/pytest_gpu_direct.txt" ;;  # the direct launches of every family; the ops on a second GPU (skipped on one: run it on nvidia-h100-x2 too)
    hostlevers) limit 170 python3 -m pytest -q -rf --tb=short -n 12 -p no:cacheprovider tests/test_nn_linear.py tests/test_nn_shared_input.py \
             tests/test_input_checks.py tests/test_nn_compile.py tests/test_families.py tests/test_wgmma_gpu.py::test_linear_through_its_planned_launch \
             tests/test_gemm.py -k "not every_candidate and not few_chunks" >"$out/pytest_gpu_hostpath.txt" 2>&1; tail -3 "$out/pytest_gpu_hostpath.txt"
             for base in .ab/*/; do name=$(basename "$base"); tree=$(mktemp -d); cp -r "$base/sparse24" "$tree/"; cp -r bench "$tree/"
             for side in "$tree" .; do label=$([ "$side" = . ] && echo head || echo "$name"); mkdir -p "$out/host_$label"
             (cd "$side" && limit 80 python3 -m bench.overhead --rounds 5 --out-dir "$out/host_$label" 2>&1 | grep -E "^\| [0-9]"); done
             for side in "$tree" .; do label=$([ "$side" = . ] && echo head || echo "$name"); echo "--- BERT turns, $label"
             (cd "$side" && limit 110 python3 -m bench.diag.ab_interleaved --modes eager,default --rounds 5 --min-run-time 0.2 2>&1 \
             | grep -v Warn | tail -6 | tee "$out/host_$label/ab_interleaved.txt"); done; done
             limit 60 python3 -m bench.diag.launch_parts --shape 1536x768x768 >"$out/launch_parts.txt" 2>&1; tail -24 "$out/launch_parts.txt" ;;  # issue 23 (session 11): carry .ab/<base>: the touched paths' tests on the GPU, then host time and BERT eager/default turns, base against head
    boundab) base=.ab/${AB_BASE:?AB_BASE names the base tree under .ab}; tree=$(mktemp -d); cp -r "$base/sparse24" "$tree/"; cp -r bench "$tree/"
             limit 150 python3 -m pytest -q -rf --tb=short -n 12 -p no:cacheprovider tests/test_nn_linear.py tests/test_nn_shared_input.py \
             tests/test_bound_launch.py tests/test_nn_compile.py tests/test_wgmma_gpu.py -k "not test_wgmma_gpu or bound_launch or planned_launch" \
             >"$out/pytest_gpu_bound.txt" 2>&1; tail -3 "$out/pytest_gpu_bound.txt"
             for side in "$tree" .; do label=$([ "$side" = . ] && echo head || echo "$AB_BASE"); mkdir -p "$out/host_$label"
             (cd "$side" && SPARSE24_COMMIT=$([ "$side" = . ] && echo "$SPARSE24_COMMIT" || echo "$AB_BASE") \
             limit 80 python3 -m bench.overhead --rounds 5 --out-dir "$out/host_$label" 2>&1 | grep -E "^\| [0-9]"); done
             for side in "$tree" .; do label=$([ "$side" = . ] && echo head || echo "$AB_BASE"); echo "--- BERT turns, $label"
             (cd "$side" && limit 110 python3 -m bench.diag.ab_interleaved --modes eager,default --rounds 5 --min-run-time 0.2 2>&1 \
             | grep -v Warn | tail -6 | tee "$out/host_$label/ab_interleaved.txt"); done ;;  # issue 23 (session 15): carry .ab/$AB_BASE; SparseLinear's bound launches tested on the GPU, then host time and BERT turns, base against head
    opcostab) base=.ab/${AB_BASE:?AB_BASE names the base tree under .ab}; tree=$(mktemp -d); cp -r "$base/sparse24" "$tree/"; cp -r bench "$tree/"
             for side in "$tree" .; do label=$([ "$side" = . ] && echo head || echo "$AB_BASE"); echo "--- compiled_op_cost, $label"
             (cd "$side" && limit 120 python3 -m bench.diag.compiled_op_cost 2>&1 | grep -v Warn | tee "$out/compiled_op_cost_$label.txt" | tail -8); done ;;  # issue 23 (session 15): the op inside a compiled graph, base tree's process then head's
    bertab) for base in .ab/*/; do name=$(basename "$base"); tree=$(mktemp -d); cp -r "$base/sparse24" "$tree/"; cp -r bench "$tree/"
             for pass in 1 2; do for side in "$tree" .; do label=$([ "$side" = . ] && echo head || echo "$name"); mkdir -p "$out/bertab_$label"
             echo "--- BERT turns, $label, pass $pass"; (cd "$side" && limit 100 python3 -m bench.diag.ab_interleaved --modes eager,default --rounds 5 --min-run-time 0.2 2>&1 \
             | grep -v Warn | tail -5 | tee "$out/bertab_$label/pass$pass.txt"); done; done; done ;;  # carry .ab/<base>: BERT eager/default turns, base and head alternating, two passes (host drift between processes hits both)
    hostab) for base in .ab/*/; do tree=$(mktemp -d); cp -r "$base/sparse24" "$tree/"; cp -r bench "$tree/"
             name=$(basename "$base"); mkdir -p "$out/host_$name" "$out/host_head"
             (cd "$tree" && limit 90 python3 -m bench.overhead --out-dir "$out/host_$name" 2>&1 | grep -E "^\| [0-9]")
             (cd "$tree" && limit 70 python3 -m bench.diag.ab_interleaved --modes eager --rounds 7 --min-run-time 0.2 2>&1 \
             | grep -v Warn | tail -4); done
             limit 90 python3 -m bench.overhead --out-dir "$out/host_head" 2>&1 | grep -E "^\| [0-9]"
             limit 70 python3 -m bench.diag.ab_interleaved --modes eager --rounds 7 --min-run-time 0.2 2>&1 | grep -v Warn | tail -4 ;;  # carry .ab: host time and BERT eager turns of each tree's package (with this bench) against this commit's
    midtokens) limit 250 python3 -m bench.gemm_variants --family wgmma --split-k --split-ks 2,4 --with-heuristic \
             --only BT=32/64,STAGES=4/8 --mode graph --top 4 --out "$out/gemm_variants_midtokens.jsonl" \
             --shapes 64x4096x4096,64x14336x4096,64x4096x14336,32x4096x4096,64x3072x768 \
             2>&1 | grep -v Warning | tail -40 ;;  # issue 25: the sm90 tiles of 32 and 64 tokens against the mma heuristic at 17-64 tokens
    gated) limit 300 python3 -m pytest -q -n 6 -p no:cacheprovider tests/test_gemm.py \
             tests/test_wgmma_gpu.py tests/test_epilogue_ulp.py tests/test_nn_compile.py -k "gated or epilogues_gpu or silu" \
             >"$out/pytest_gpu_gated.txt" 2>&1; tail -3 "$out/pytest_gpu_gated.txt"
             limit 200 python3 -m bench.gated --out-dir "$out" 2>&1 | grep -v Warning | tail -16 ;;  # the gated (SwiGLU) epilogues: GPU tests of every family, then against dense and the unfused product
    gatedllm) for gated in --no-gated-mlp --gated-mlp; do limit 270 python3 -m bench.llm $gated --modes graph --rounds 3 \
             --out-dir "$out" 2>&1 | grep -v Warning | tail -8; done ;;  # the decoder with and without SparseGatedMLP (one call of its own)
    metaring) limit 240 python3 -m pytest -m gpu -q -n 6 -p no:cacheprovider tests/test_wgmma_gpu.py -k "R1" \
             >"$out/pytest_gpu_metaring.txt" 2>&1; tail -3 "$out/pytest_gpu_metaring.txt"
             limit 300 python3 -m bench.gemm_variants --family wgmma --meta-ring --with-heuristic \
             --only BT=8/16/32,STAGES=8/10,SPLIT_K=1/2/4 --split-k --split-ks 2,4 --mode graph --top 4 \
             --out "$out/gemm_variants_metaring.jsonl" \
             --shapes 1x14336x4096,16x14336x4096,1x4096x4096,16x4096x4096,16x3072x768,64x4096x4096 \
             2>&1 | grep -v Warning | tail -40 ;;  # issue 25: the sm90 kernel with the metadata through the ring, against its own loads and the mma heuristic
    mmatests) limit 300 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_gemm.py tests/test_epilogue_ulp.py \
             tests/test_nn_compile.py -k "few_chunks or every_candidate or gated or epilogues_gpu or silu" \
             >"$out/pytest_gpu_mma_gated.txt" 2>&1; tail -4 "$out/pytest_gpu_mma_gated.txt" ;;  # every mma and dot form, every epilogue, the gated ones
    restests) limit 300 python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider tests --deselect tests/test_wgmma_gpu.py \
             -k "not few_chunks and not every_candidate and not gated and not epilogues_gpu and not silu" \
             >"$out/pytest_gpu_rest.txt" 2>&1; tail -4 "$out/pytest_gpu_rest.txt" ;;  # the GPU suite but test_wgmma_gpu.py (wgmmatests) and mmatests
    metaringab) limit 300 python3 -m bench.gemm_variants --family wgmma --meta-ring --with-heuristic \
             --only BT=8/16/32,STAGES=8/10,SPLIT_K=1/2/4 --split-k --split-ks 2,4 --mode graph --top 4 \
             --out "$out/gemm_variants_metaring.jsonl" \
             --shapes 1x14336x4096,16x14336x4096,1x4096x4096,16x4096x4096,16x3072x768,64x4096x4096 \
             2>&1 | grep -v Warning | tail -40 ;;  # the metaring stage's A/B alone (its tests: wgmmatests)
    ringsweep) limit 330 python3 -m bench.gemm_variants --family wgmma --meta-ring --with-heuristic \
             --only META_RING=1,BT=8/16,STAGES=8/10 --split-k --split-ks 2,4,8 --mode graph --top 3 \
             --out "$out/gemm_variants_ringsweep.jsonl" \
             --shapes 1x768x768,16x768x768,16x768x3072,16x2304x768,64x3072x768,64x768x3072,1x4096x14336,8x4096x4096,32x4096x4096,64x14336x4096,16x28672x4096 \
             2>&1 | grep -v Warning | tail -60 ;;  # META_RING at 1-64 tokens on BERT-base and more LLM shapes, unsplit and split, against linear's rule
    ruletests) limit 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gemm.py tests/test_wgmma_gpu.py \
             tests/test_nn_linear.py -k "few_tokens_default or few_token_tiles or direct or graph or cuda" \
             >"$out/pytest_gpu_rule.txt" 2>&1; tail -4 "$out/pytest_gpu_rule.txt" ;;  # linear's few-token defaults (META_RING) on the GPU
    llmgraph) mkdir -p "$out/llm"; limit 300 python3 -m bench.llm --modes graph --rounds 2 --out-dir "$out/llm" 2>&1 \
             | grep -v Warning | tail -14 ;;
    qkvllm) mkdir -p "$out/llm"; for qkv in --no-fuse-qkv --fuse-qkv; do limit 200 python3 -m bench.llm $qkv --modes graph --rounds 2 \
             --out-dir "$out/llm" 2>&1 | grep -v Warning | tail -9; done ;;  # Llama's q/k/v as one GEMM: bench.llm without and with (CUDA graphs)
    rulewide) limit 200 python3 -m bench.gemm_variants --family wgmma --with-heuristic --only META_RING=1 --mode graph --top 3 \
             --out "$out/gemm_variants_rulewide.jsonl" --shapes 16x14336x4096,32x14336x4096,64x14336x4096,16x28672x4096,64x28672x4096,64x6144x4096 \
             2>&1 | grep -v Warning | tail -30 ;;  # the token-tile rule (largest tile leaving 192 programs) against every META_RING tile
    midring) limit 300 python3 -m bench.gemm_variants --family wgmma --meta-ring --split-k --split-ks 2,4 --with-heuristic \
             --only META_RING=1,BT=16/32/64,STAGES=4/6/8/10 --mode graph --top 4 --out "$out/gemm_variants_midring.jsonl" \
             --shapes 32x4096x4096,64x4096x4096,64x14336x4096,64x4096x14336,48x4096x4096,64x3072x768 \
             2>&1 | grep -v Warning | tail -40 ;;  # issue 25's M = 32-64 (1.29-1.34x, goal 1.4x): bigger token tiles split so the weight is read once, against the BT 16 rule
    midtiles) limit 280 python3 -m bench.gemm_variants --family wgmma --meta-ring --split-k --split-ks 2,4 --every-tile --with-heuristic \
             --only META_RING=1,BT=16/32/64/128,STAGES=4/6/8/10 --mode graph --top 4 --out "$out/gemm_variants_midtiles.jsonl" \
             --shapes 384x768x3072,384x3072x768,384x768x768,384x2304x768,1024x768x3072,1536x768x768 \
             2>&1 | grep -v Warning | tail -40 ;;  # issue 22's few-tile shapes at 384-1536 tokens: small token tiles (more programs), split or not, against the heuristic
    bigring) limit 280 python3 -m bench.gemm_variants --family wgmma --meta-ring --with-heuristic \
             --only BT=64/128/256,STAGES=2/3/4/6 --mode graph --top 5 --out "$out/gemm_variants_bigring.jsonl" \
             --shapes 384x3072x768,1536x768x768,6144x768x768,6144x768x3072,6144x3072x768,4096x4096x4096,4096x14336x4096 \
             2>&1 | grep -v Warning | tail -40 ;;  # issue 22: the metadata ring at 64- and 128-token tiles (3 stages fit beside BT 128, 4 without), against the heuristic
    launchparts) for shape in 16x768x768 1536x768x768 16x4096x4096; do limit 60 python3 -m bench.diag.launch_parts --shape $shape \
             2>&1 | grep -v Warning | tee -a "$out/launch_parts.txt" | tail -18; done ;;  # issue 23: the host time of one sm90 call, part by part
    midtests) limit 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_gemm.py tests/test_wgmma_gpu.py \
             -k "default_configs or BT64-S6-L0-K1-R1 or BT32-S6-K1-A1-R1" >"$out/pytest_gpu_mid.txt" 2>&1; tail -4 "$out/pytest_gpu_mid.txt" ;;  # linear's few- and mid-token defaults on the GPU
    bertsmall) mkdir -p "$out/bert"; limit 240 python3 -m bench.bert --batch-sizes 1,2 --variants dense,sparse24 \
             --modes reduce-overhead --no-plot --out-dir "$out/bert" 2>&1 | grep -v Warning | tail -12 ;;  # BERT-base at 384 and 768 tokens (the mid-token rule's shapes)
    gatedtest) limit 150 python3 -m pytest -q -n 6 -p no:cacheprovider tests/test_wgmma_gpu.py tests/test_nn_compile.py tests/test_nn_gated_mlp.py -k gated \
             >"$out/pytest_gpu_wgmma_gated.txt" 2>&1; tail -3 "$out/pytest_gpu_wgmma_gated.txt" ;;
    gatedab) limit 200 python3 -m bench.gated --out-dir "$out" 2>&1 | grep -v Warning | tail -16 ;;  # the gated stage's bench alone (its tests: mmatests, wgmmatests)
    profiledecode) for a_tile in 1 2; do limit 100 ncu --clock-control none -k regex:_sparse_mma_kernel \
             --launch-skip 1 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
             --section Occupancy --section WarpStateStats \
             python3 -m bench.investigations.2026-12-decode-ncu.profile_decode $a_tile >"$out/ncu_decode_a$a_tile.txt" 2>&1
             grep -E "Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Registers" "$out/ncu_decode_a$a_tile.txt" | head -8; done ;;  # issue 25's M = 1 profile, A_TILE 1 against 2
    profilering) for ring in 0 1; do limit 140 ncu --clock-control none -k regex:_sparse_wgmma_kernel \
             --launch-skip 1 --launch-count 2 --section SpeedOfLight --section MemoryWorkloadAnalysis \
             --section WarpStateStats \
             python3 -m bench.investigations.2026-12-decode-ncu.profile_metaring $ring >"$out/ncu_metaring_$ring.txt" 2>&1
             grep -E "rel err|WRONG|Duration|DRAM Throughput|Memory Throughput" "$out/ncu_metaring_$ring.txt" | head -10; done ;;  # issue 25: the M = 1 and 16 sm90 kernel, metadata ahead against through the ring
    profile) limit 120 ncu --clock-control none -k regex:_sparse_wgmma_kernel --launch-skip 1 \
             --launch-count 1 --section SpeedOfLight --section WarpStateStats \
             python3 -m bench.investigations.2026-12-sm90-ncu.profile_wgmma >"$out/ncu_wgmma.txt" 2>&1; grep -E "Duration|Throughput|Stall|Issue" "$out/ncu_wgmma.txt" | head -30 ;;
  esac
done
echo "=== done $(date -u +%H:%M:%S)"
tar czf "$final/results.tgz" -C "$out" . && echo "results: $final/results.tgz ($(du -h "$final/results.tgz" | cut -f1))"
