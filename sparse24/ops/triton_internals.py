"""The one place where sparse24 reaches into Triton below its public API.

``shared_memory_offsets(ttgir)``: the byte offset from ``global_smem`` at which Triton's allocator
places each shared-memory allocation of a compiled kernel, keyed by the allocation's name in the
kernel source (``%operand_ring_x = ttg.local_alloc ...``). The sm90 family's inline asm addresses
its operand rings from ``global_smem`` (Gluon cannot pass shared-memory descriptors to asm), so its
launcher must know, not assume, where they are. The final TTGIR of a compiled kernel carries no
offsets (they are assigned while lowering to LLVM), so this runs the same passes that
``make_llir`` runs before allocation, up to and including the allocation pass, on a parsed copy of
that TTGIR, and reads the ``allocation.offset`` attributes. Checked against Triton 3.6 (GPU
machine) and 3.9 (CI); a CPU test compiles the sm90 kernel and runs it.
"""

from __future__ import annotations

import re
import tempfile

_ALLOC = re.compile(r"%([A-Za-z_][\w.]*) = ttg\.local_alloc \{[^}]*allocation\.offset = (\d+) : i32")


def _run_allocation(ttgir: str, capability: int) -> str:
    from triton._C.libtriton import ir, nvidia, passes
    from triton.backends.nvidia.compiler import get_ptx_version_from_options

    context = ir.context()
    ir.load_dialects(context)
    nvidia.load_dialects(context)
    with tempfile.NamedTemporaryFile("w", suffix=".ttgir") as f:
        f.write(ttgir)
        f.flush()
        module = ir.parse_mlir_module(f.name, context)
    manager = ir.pass_manager(context)
    passes.ttgpuir.add_combine_tensor_select_and_if(manager)
    try:  # Triton 3.9 added a flag (concurrency sanitizer); 3.6 takes none
        passes.ttgpuir.add_allocate_warp_groups(manager)
    except TypeError:
        passes.ttgpuir.add_allocate_warp_groups(manager, False)
    passes.convert.add_scf_to_cf(manager)
    passes.gluon.add_inliner(manager)

    class _Options:  # what get_ptx_version_from_options reads
        ptx_version = None

    ptx_version = get_ptx_version_from_options(_Options(), capability)
    nvidia.passes.ttgpuir.add_allocate_shared_memory_nv(manager, capability, ptx_version)
    manager.run(module, "sparse24-allocation-probe")
    return str(module)


def shared_memory_offsets(ttgir: str, capability: int = 90) -> dict[str, int]:
    """{allocation name: byte offset} of every named ``ttg.local_alloc`` of a compiled kernel."""
    return {name: int(offset) for name, offset in _ALLOC.findall(_run_allocation(ttgir, capability))}
