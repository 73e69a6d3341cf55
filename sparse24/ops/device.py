"""What the ops ask of a CUDA device, asked once per device: its name, compute capability and SM
count (the tuning key, and the grid and split-K sizing of every kernel family)."""

from __future__ import annotations

import functools

import torch


@functools.cache
def device_info(index: int) -> tuple[str, str, int]:
    """(name, compute capability "9.0", SM count) of a CUDA device."""
    props = torch.cuda.get_device_properties(index)
    return props.name, f"{props.major}.{props.minor}", props.multi_processor_count


# The current CUDA device, asked on every launch. torch.cuda.current_device() first runs
# torch.cuda's lazy-init check in Python; a CUDA tensor in hand means CUDA is initialized, so
# the C call underneath it answers alone (both timed by bench/diag/launch_parts.py).
_current_cuda_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device


def launch_guard(device: torch.device):
    """A context under which Triton launches on ``device``: Triton compiles for and launches on
    the *current* CUDA device, so a tensor on another GPU (a model split across GPUs, as
    ``device_map="auto"`` places it, while the current device stays 0) would be handed to a
    kernel on the wrong one. None where ``device`` is already current (the common case costs a
    comparison) or not a CUDA device."""
    if device.type != "cuda" or device.index is None or device.index == _current_cuda_device():
        return None
    return torch.cuda.device(device)
