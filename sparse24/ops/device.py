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
