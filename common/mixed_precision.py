"""Precision policy: chosen by the hardware ("auto") or named, and switched around model building.

"auto" picks, in order:
- on GPUs (every visible one must qualify): `mixed_bfloat16` with compute capability >= 8.0 (Ampere
  and later: bfloat16 tensor cores, no loss scaling), `mixed_float16` with >= 7.0 (Volta, Turing);
- on CPUs with AVX512-BF16 or AMX-BF16 (the `avx512_bf16` / `amx_bf16` flags of /proc/cpuinfo):
  `mixed_bfloat16`, 1.4-1.6x faster than float32 for training on such CPUs (see RUNTIME.md);
- otherwise `float32`.
Layers take the global policy when they are constructed, so set it before building a model. Model
builders keep their output layer (and any loss-facing activation) in float32 with `dtype="float32"`;
Keras wraps the optimizer in a `LossScaleOptimizer` for `mixed_float16` by itself when compiling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras

POLICIES = ("mixed_bfloat16", "mixed_float16", "float32")
PRECISIONS = ("auto", *POLICIES)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class PrecisionChoice:
    """The policy a run uses: what was asked for ("auto" or a policy), the policy, and why."""

    requested: str
    policy: str
    reason: str

    def as_record(self) -> dict[str, str]:
        return {"requested": self.requested, "policy": self.policy, "reason": self.reason}


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The CPU feature flags of the first "flags" line of `cpuinfo` (default /proc/cpuinfo; empty
    where there is none, e.g. off Linux)."""
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def gpu_capabilities() -> list[tuple[int, int]]:
    """CUDA compute capability (major, minor) of each visible GPU; (0, 0) where TF does not say."""
    import tensorflow as tf  # device discovery only

    details = [
        tf.config.experimental.get_device_details(gpu) for gpu in tf.config.list_physical_devices("GPU")
    ]
    return [tuple(detail.get("compute_capability") or (0, 0)) for detail in details]


def auto_policy(flags: Iterable[str], gpus: Sequence[tuple[int, int]]) -> tuple[str, str]:
    """(policy, reason) for CPU feature `flags` and GPU compute capabilities `gpus` (see module doc)."""
    if gpus:
        lowest = min(gpus)
        shown = f"{len(gpus)} GPU(s), lowest compute capability {lowest[0]}.{lowest[1]}"
        if lowest >= (8, 0):
            return "mixed_bfloat16", f"{shown} (bfloat16 tensor cores)"
        if lowest >= (7, 0):
            return "mixed_float16", f"{shown} (float16 tensor cores)"
        return "float32", f"{shown} (no tensor cores)"
    found = sorted(set(flags) & set(BF16_CPU_FLAGS))
    if found:
        return "mixed_bfloat16", f"CPU without GPU, flags {', '.join(found)}"
    return "float32", "CPU without GPU, no avx512_bf16 or amx_bf16 flag"


def choose_precision(
    requested: str | None,
    flags: Iterable[str] | None = None,
    gpus: Sequence[tuple[int, int]] | None = None,
) -> PrecisionChoice:
    """Resolves "auto" (default: this machine's CPU flags and GPUs), a policy name, or None (float32)."""
    name = requested or "float32"
    if name not in PRECISIONS:
        raise ValueError(f"precision {requested!r} is not one of {PRECISIONS}")
    if name != "auto":
        return PrecisionChoice(name, name, "named in the config or on the command line")
    policy, reason = auto_policy(
        cpu_flags() if flags is None else flags, gpu_capabilities() if gpus is None else gpus
    )
    return PrecisionChoice("auto", policy, reason)


def set_mixed_precision(policy: str | None) -> str:
    """Sets the global Keras dtype policy; None means "float32". Returns the previous policy's name."""
    name = policy or "float32"
    if name not in POLICIES:
        raise ValueError(f"mixed precision policy {policy!r} is not one of {POLICIES} or None")
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(name)
    return previous


@contextlib.contextmanager
def precision_policy(policy: str | None) -> Iterator[None]:
    """Context manager: builds inside it use `policy`; the previous global policy is restored after."""
    previous = set_mixed_precision(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
