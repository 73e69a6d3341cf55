"""Where the host time of one eager sm90 call goes (issue 23): each part of the launch path timed
alone, in turns, against F.linear and the pieces every launch must pay (an output allocation).

bench/overhead.py measured, on an H100 at 75dde06: F.linear 13.5 us a call, the sm90 launch alone
(run_config) 16.2 us, linear() 23.6 us. This splits run_config and linear() into their parts, from
the inside out, so that each microsecond has an owner:

  torch.empty                the output allocation (F.linear pays it too)
  current device             torch.cuda.current_device() against the C call launch_guard asks
  reshapes (3-D)             the two reshapes _linear_impl made for a 3-D x before it took rows
  fill x1 / fill x3          cuTensorMapEncodeTiled through Triton's fill function: one, then the
                             three descriptors (weight, x, output) a call fills
  memo lookup x3             what keeping filled descriptors by (address, shape, strides) would
                             cost instead
  C launch, filled           the C launcher with descriptors filled once (the launch alone)
  DescriptorLauncher         the launch as a direct call runs it: descriptors kept by address,
                             shape and strides (keep_descriptors), and ", filling": filled each
                             call, as before (session 8's lever's A/B)
  _launch_kernel             + the key of the direct-launch memo and its lookup
  PlannedLaunch              what the plan holds instead (wgmma.PlannedLaunch): the direct
                             launch kept by the plan, a four-item key
  run_config                 + torch.empty and the family table
  linear impl                + the plan lookup and the stride checks (sparse24.ops.gemm._linear_impl);
                             ", 3-D x": x [1, M, K], its rows read unreshaped
  held                       the record's test of a weight checked before (session 15): the flat
                             tuple of what its tensors hold (sparse24.ops.gemm.held)
  torch.empty_like (template) y's allocation in a bound launch
  BoundLaunch                the launch bound to the weight and x's shape (wgmma.BoundLaunch):
                             y's allocation, x's and y's kept arguments, the C launch
  the op                     torch.ops.sparse24.linear: the dispatcher's hop, then the same record
  linear()                   + the input checks and the plain-eager test; ", unplanned": with
                             the plan holding wgmma.launch instead of its PlannedLaunch; ", not
                             keeping arguments": PlannedLaunch.keep_arguments off (the two
                             levers' A/B, all three through the same wrapper)

    python -m bench.diag.launch_parts [--shape 16x768x768] [--calls 400] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from bench import common


def parts(m: int, n: int, k: int) -> dict:
    """{part: a no-argument function doing it once}, for the sm90 kernel at m x n x k, fp16."""
    from sparse24 import ops
    from sparse24.ops import gemm, triton_internals, wgmma

    device = torch.device("cuda")
    w = ops.prune_24(torch.randn(n, k, dtype=torch.float16, device=device))
    values, meta = ops.compress(w)
    x = torch.randn(m, k, dtype=torch.float16, device=device)
    x3 = x.view(1, m, k)  # the 3-D x of a Hugging Face layer
    cfg = gemm.choose_config(m, n, k, torch.float16, device)
    if cfg["family"] != "wgmma":
        raise SystemExit(f"{m}x{n}x{k} runs the {cfg['family']} family here: pick an sm90 shape")
    y = gemm.run_config(x, values, meta, None, 0, cfg)
    gemm.run_config(x, values, meta, None, 0, cfg)  # the second call learns the direct launch
    entries = [entry for key, (owner, entry) in wgmma._direct.known.items()
               if owner is cfg and key[1] == m and entry]
    if not entries:
        raise SystemExit("no direct launch was learned (a launch hook, or a Triton whose launcher "
                         "DescriptorLauncher does not drive)")
    launcher, grid0, constexprs = entries[0]
    stream = triton_internals.current_stream(triton_internals.current_device())
    tensors = (values, x, y)
    args = (meta.data_ptr(), y.data_ptr(), n, k)
    fill, metas = launcher._fill, launcher._metas

    def fill_one(t, spec):
        swizzle, elem_size, dtype, box = spec
        return fill(t.data_ptr(), swizzle, elem_size, dtype, box, t.shape, t.stride(), 0)

    filled = []
    for t, spec in zip(tensors, metas):
        filled += (fill_one(t, spec), *t.shape, *t.stride())

    def c_launch_filled():
        if launcher._annotations is None:
            launcher._launcher(grid0, 1, 1, stream, launcher._function, launcher._cooperative,
                               launcher._pdl, None, None, launcher._packed, None, None, None,
                               *filled, *args, *constexprs)
        else:
            launcher._launcher(grid0, 1, 1, stream, launcher._function, launcher._cooperative,
                               launcher._pdl, launcher._packed, None, None, None, None, None,
                               launcher._annotations, launcher._signature,
                               [*filled, *args, *constexprs])

    def fill_three():
        for t, spec in zip(tensors, metas):
            fill_one(t, spec)

    key = (m, n, k, torch.float16, x.device)  # cuda:0: the plan keys on the index
    ops.linear(x, values, meta)  # plans the problem
    planned, plan_cfg, _ = gemm._plans[key]
    if not isinstance(planned, wgmma.PlannedLaunch):
        raise SystemExit(f"the plan holds {planned!r}, not a wgmma.PlannedLaunch")

    def planning(use: bool, keep_arguments: bool = True):
        """fn with the plan holding its PlannedLaunch (True) or wgmma.launch (False), and
        PlannedLaunch.keep_arguments set."""
        def wrap(fn):
            def run():
                gemm._plans[key] = (planned if use else wgmma.launch, plan_cfg, use)
                wgmma.PlannedLaunch.keep_arguments = keep_arguments
                try:
                    fn()
                finally:
                    gemm._plans[key] = (planned, plan_cfg, True)
                    wgmma.PlannedLaunch.keep_arguments = True
            return run
        return wrap

    # linear()'s record of this weight and the launch bound to it (two calls make them)
    ops.linear(x, values, meta), ops.linear(x, values, meta)
    record = gemm._checked.get((id(values), id(meta), id(None), None))
    bound = record[4].get(x.shape) if record else None
    if not isinstance(bound, wgmma.BoundLaunch):
        raise SystemExit(f"no bound launch for {m}x{n}x{k}: {bound!r}")
    template = bound.template
    memo = {(t.data_ptr(), *t.shape, *t.stride()): fill_one(t, spec)
            for t, spec in zip(tensors, metas)}

    def memo_three():  # the alternative to filling: descriptors kept by address, shape, strides
        for t in tensors:
            memo.get((t.data_ptr(), *t.shape, *t.stride()))

    return {
        "F.linear (cuBLAS)": lambda: F.linear(x, w),
        "torch.empty": lambda: torch.empty((m, n), dtype=torch.float16, device=device),
        "torch.cuda.current_device": torch.cuda.current_device,
        "torch._C._cuda_getDevice": torch._C._cuda_getDevice,  # what launch_guard asks
        "x.reshape + y.reshape (3-D)": lambda: (x3.reshape(-1, k), y.reshape(1, m, n)),
        "linear impl, 3-D x": lambda: gemm._linear_impl(x3, values, meta, None, None),
        "fill x1 (weight)": lambda: fill_one(values, metas[0]),
        "fill x3": fill_three,
        "memo lookup x3": memo_three,
        "C launch, filled": c_launch_filled,
        "DescriptorLauncher, filling": keeping(False)(
            lambda: launcher(grid0, stream, tensors, args, constexprs)),
        "DescriptorLauncher": keeping(True)(
            lambda: launcher(grid0, stream, tensors, args, constexprs)),
        "_launch_kernel": lambda: wgmma._launch_kernel(x, values, meta, None, y, 0, cfg, 1, y),
        "PlannedLaunch": lambda: planned(x, values, meta, None, y, 0, plan_cfg),
        "run_config": lambda: gemm.run_config(x, values, meta, None, 0, cfg),
        "linear impl": lambda: gemm._linear_impl(x, values, meta, None, None),
        "held": lambda: gemm.held(values, meta, None),
        "torch.empty_like (template)": lambda: torch.empty_like(template),
        "BoundLaunch": lambda: bound(x, values, None),
        "the op": lambda: torch.ops.sparse24.linear(x, values, meta, None, None),
        "linear(), unplanned": planning(False)(lambda: ops.linear(x, values, meta)),
        "linear(), not keeping arguments": planning(True, False)(
            lambda: ops.linear(x, values, meta)),
        "linear()": planning(True)(lambda: ops.linear(x, values, meta)),
    }


def keeping(keep: bool):
    """fn with DescriptorLauncher.keep_descriptors set to ``keep`` (False: every descriptor
    filled at each call, as before): the lever's A/B, both sides through the same wrapper."""
    from sparse24.ops.triton_internals import DescriptorLauncher

    def wrap(fn):
        def run():
            DescriptorLauncher.keep_descriptors = keep
            try:
                fn()
            finally:
                DescriptorLauncher.keep_descriptors = True
        return run
    return wrap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="16x768x768")
    parser.add_argument("--calls", type=int, default=400, help="per round, under the launch queue's 1024")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    common.require_cuda("python -m bench.diag.launch_parts")
    print(common.env_line(common.env_record()), flush=True)
    m, n, k = (int(v) for v in args.shape.split("x"))
    torch.set_grad_enabled(False)
    fns = parts(m, n, k)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):  # every part in turn in each round: drift hits them alike
        for name, fn in fns.items():
            times[name].append(common.back_to_back_us(fn, args.calls, host_only=True))
    print(f"host time per call at {m}x{n}x{k} fp16, median of {args.rounds} rounds of "
          f"{args.calls} calls (us; range)")
    for name, ts in times.items():
        print(f"  {name:<32} {statistics.median(ts):7.2f}  ({min(ts):.2f}-{max(ts):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
