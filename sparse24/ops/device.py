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


def launch_guard(device: torch.device):
    """A context under which Triton launches on ``device``: Triton compiles for and launches on
    the *current* CUDA device, so a tensor on another GPU (a model split across GPUs, as
    ``device_map="auto"`` places it, while the current device stays 0) would be handed to a
    kernel on the wrong one. None where ``device`` is already current (the common case costs a
    comparison) or not a CUDA device."""
    if device.type != "cuda" or device.index is None or device.index == torch.cuda.current_device():
        return None
    return torch.cuda.device(device)
