"""What a tuned GEMM config is keyed by: GPU, Triton version, dtype, N, K and a bucket of M.

Nothing here touches the GPU or imports Triton at import time: ``current_gpu_name`` and
``triton_version`` do their work only when called.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass
from typing import Any

# Configs are plain JSON objects: tile sizes, warps, stages, split-K are ints, the kernel family is
# a str. Floats are refused because a float key such as 64.0 would not round-trip as the int a
# Triton constexpr expects.
ConfigValue = int | str
Config = dict[str, ConfigValue]


def m_bucket(m: int) -> int:
    """The bucket of the token count M: the smallest power of two >= m (1, 2, 4, ..., 2**k).

    Why powers of two: M is the only GEMM dimension that changes from call to call (batch x
    sequence), while the block sizes a config chooses are powers of two (BLOCK_M 16..256) and the
    grid size is ceil(M / BLOCK_M) x ceil(N / BLOCK_N). The best config therefore changes when M
    crosses a power of two, not in between, and a doubling of M is also the step at which the
    problem moves between memory-bound and compute-bound regimes. Buckets of two keep tuning cheap:
    M up to 262144 is 19 buckets per (N, K, dtype), and a new batch size never triggers a retune.

    Rounding *up* means the config stored for bucket b was tuned at M = b, the largest M of the
    bucket (b/2, b], so it never launches fewer programs than the bucket needs.
    """
    if isinstance(m, bool) or not isinstance(m, int):
        raise TypeError(f"m must be an int, got {type(m).__name__}")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    return 1 << (m - 1).bit_length()


def _is_power_of_two(x: int) -> bool:
    return x >= 1 and (x & (x - 1)) == 0


def dtype_name(dtype: Any) -> str:
    """'float16' for ``torch.float16`` or the string 'float16' (no torch import needed)."""
    name = dtype if isinstance(dtype, str) else str(dtype)
    name = name.removeprefix("torch.")
    if not name:
        raise ValueError(f"not a dtype: {dtype!r}")
    return name


def slug(text: str) -> str:
    """A file-name-safe form of a GPU name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    s = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    if not s:
        raise ValueError(f"cannot make a file name from {text!r}")
    return s


@dataclass(frozen=True)
class TuningKey:
    """Identifies one tuned config. Hashable, so it can key an in-memory dict.

    ``gpu`` is the name CUDA reports (``torch.cuda.get_device_name``), ``triton`` the Triton
    version string, ``dtype`` the activation dtype name ('float16'), ``n``/``k`` the weight shape
    [N, K] (nn.Linear layout: out_features, in_features) and ``m_bucket`` the bucket of M.
    """

    gpu: str
    triton: str
    dtype: str
    n: int
    k: int
    m_bucket: int

    def __post_init__(self) -> None:
        for name in ("gpu", "triton", "dtype"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"TuningKey.{name} must be a non-empty str, got {value!r}")
        for name in ("n", "k", "m_bucket"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TuningKey.{name} must be a positive int, got {value!r}")
        if not _is_power_of_two(self.m_bucket):
            raise ValueError(f"TuningKey.m_bucket must be a power of two, got {self.m_bucket}")

    @classmethod
    def for_problem(cls, n: int, k: int, m: int, dtype: Any, device: Any = None) -> TuningKey:
        """The key of an [M, K] x [N, K]^T product on ``device`` (queries the GPU name)."""
        return cls(
            gpu=current_gpu_name(device),
            triton=triton_version(),
            dtype=dtype_name(dtype),
            n=n,
            k=k,
            m_bucket=m_bucket(m),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict with one field per attribute."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TuningKey:
        """Inverse of ``to_json``; raises ValueError on missing, extra or ill-typed fields."""
        if not isinstance(data, dict):
            raise ValueError(f"a tuning key must be a JSON object, got {type(data).__name__}")
        fields = set(cls.__dataclass_fields__)
        if set(data) != fields:
            raise ValueError(
                f"tuning key fields {sorted(data)} do not match the expected {sorted(fields)}"
            )
        return cls(**data)

    def shape_id(self) -> tuple[str, int, int, int]:
        """(dtype, n, k, m_bucket): what tells entries apart inside one (gpu, triton) file."""
        return (self.dtype, self.n, self.k, self.m_bucket)


def validate_config(config: Any) -> Config:
    """Return ``config`` as a plain dict after checking it is str -> int | str (JSON-able)."""
    if not isinstance(config, dict):
        raise ValueError(f"a config must be a dict, got {type(config).__name__}")
    for name, value in config.items():
        if not isinstance(name, str):
            raise ValueError(f"config keys must be str, got {name!r}")
        # bool is an int subclass; refuse it so that True does not silently become BLOCK_M=1.
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"config value {name}={value!r} must be an int or a str")
    return dict(config)


def format_config(config: Config) -> str:
    """A compact one-line form for tables and messages: 'BLOCK_M=64 BLOCK_N=128 ...'."""
    return " ".join(f"{name}={value}" for name, value in config.items())


def current_gpu_name(device: Any = None) -> str:
    """The CUDA device name of ``device`` (default: the current CUDA device).

    Touches CUDA only when called; raises RuntimeError when there is no CUDA device.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            "no CUDA device: tuning keys need a GPU name (torch.cuda.is_available() is False)"
        )
    if device is None:
        index = torch.cuda.current_device()
    else:
        dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
        if dev.type != "cuda":
            raise ValueError(f"tuning keys need a CUDA device, got {dev}")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
    return _gpu_name(index)


@functools.lru_cache(maxsize=None)
def _gpu_name(index: int) -> str:
    # Cached because the GEMM looks up its key on every call and the name cannot change.
    import torch

    return torch.cuda.get_device_name(index)


def triton_version() -> str:
    """The installed Triton version (configs tuned under one version may not suit another)."""
    import triton

    return triton.__version__
