"""What a worker computes on, and the platform class that groups workers whose floats agree bit for bit.

A worker reports a :class:`Platform` when it registers (inside the signed
request: the signed headers cover the body's sha256). The coordinator derives
its :func:`platform_class`; for task types that declare
``homogeneous = True`` every replica of a task, gold and audit replicas
included, goes to workers of one class (BOINC's homogeneous redundancy).

The class is what changed the bytes in bench/platform_variation.py
(docs/task-types.md has the figures): the instruction set tier the float
kernels dispatch on (MLAS and numpy choose by CPUID; SSE-only and FMA CPUs sum
differently), ONNX Runtime's major.minor version and the execution provider.
Thread count and graph optimisation level changed nothing measurable for this
repo's models, and workers fix both, so they are reported but not part of it.
"""

from __future__ import annotations

import platform as _host
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: a worker that reported no platform (an older worker, or one that would not say)
UNREPORTED = "unreported"

#: numpy's names for the vector extensions float kernels dispatch on; the rest of a CPU's flags say nothing here
VECTOR_FEATURES = (
    "SSE42", "AVX", "F16C", "FMA3", "AVX2", "AVX512F", "AVX512_SKX", "AVX512VNNI", "AVX512BF16", "AVX512FP16",
    "AVX512_SPR", "AMX_TILE", "NEON", "ASIMD", "ASIMDHP", "ASIMDDP", "ASIMDFHM", "SVE", "SVE2", "VSX", "VSX2",
    "VSX3", "VSX4", "VX", "VXE", "VXE2", "RVV",
)

_Flag = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_]+$")]
_Name = r"^[A-Za-z0-9_.+-]*$"


class Platform(BaseModel):
    """A worker's platform, as it reports it (``POST /v1/workers``: ``platform``)."""

    model_config = ConfigDict(extra="forbid")

    arch: str = Field("", max_length=32, pattern=_Name, description="Machine architecture, e.g. x86_64, aarch64.")
    cpu_flags: list[_Flag] = Field(
        default_factory=list, max_length=64, description="Vector extensions the CPU has (numpy's names: AVX2, FMA3, AVX512F...)."
    )
    ort_version: str = Field("", max_length=32, pattern=_Name, description="ONNX Runtime version; empty without it.")
    execution_provider: str = Field("", max_length=64, pattern=_Name, description="e.g. CPUExecutionProvider.")
    threads: int = Field(1, ge=1, le=1024, description="Intra-op threads per model session.")


def describe(threads: int = 1) -> Platform:
    """This machine's platform, as the worker's models run on it (CPU provider, ``threads`` per session)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features  # type: ignore[no-redef]
    try:
        ort = version("onnxruntime")
        provider = "CPUExecutionProvider"
    except PackageNotFoundError:  # a light worker runs no ONNX models
        ort, provider = "", ""
    return Platform(
        arch=_host.machine().lower()[:32],
        cpu_flags=[f for f in VECTOR_FEATURES if features.get(f)],
        ort_version=ort[:32],
        execution_provider=provider,
        threads=threads,
    )


def platform_class(p: Platform | dict | None) -> str:
    """The homogeneous-redundancy class: ``{arch}-{vector tier}/ort{major.minor}/{provider}``.

    >>> platform_class(Platform(arch="x86_64", cpu_flags=["AVX2", "FMA3", "AVX512F"], ort_version="1.32.0",
    ...                         execution_provider="CPUExecutionProvider"))
    'x86_64-avx512/ort1.32/cpu'
    """
    if p is None:
        return UNREPORTED
    if isinstance(p, dict):
        p = Platform.model_validate(p)
    arch = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(p.arch.lower(), p.arch.lower()) or "unknown"
    flags = {f.upper() for f in p.cpu_flags}
    if arch == "x86_64":
        # MLAS's float kernels: AVX-512F, AVX2 with FMA, AVX, SSE; FMA rounds once where SSE rounds twice
        tier = ("avx512" if "AVX512F" in flags else "avx2-fma" if {"AVX2", "FMA3"} <= flags
                else "avx" if "AVX" in flags else "sse")
    elif arch == "aarch64":
        tier = "sve" if "SVE" in flags else "neon"
    else:
        tier = "-".join(sorted(f.lower() for f in flags & set(VECTOR_FEATURES))) or "scalar"
    ort = ".".join(p.ort_version.split(".")[:2]) if p.ort_version else "none"
    provider = p.execution_provider.removesuffix("ExecutionProvider").lower() or "none"
    return f"{arch}-{tier}/ort{ort}/{provider}"[:128]
