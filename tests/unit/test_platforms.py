"""Platform reports and the classes homogeneous redundancy groups workers by."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from coopgrid.platforms import UNREPORTED, Platform, describe, platform_class
from coopgrid.protocol import WorkerRegistration

AVX512 = ["SSE42", "AVX", "FMA3", "AVX2", "AVX512F"]


def plat(**kw) -> Platform:
    base = {"arch": "x86_64", "cpu_flags": AVX512, "ort_version": "1.32.0", "execution_provider": "CPUExecutionProvider"}
    return Platform(**{**base, **kw})


def test_the_vector_tier_the_float_kernels_dispatch_on_separates_classes() -> None:
    classes = {
        platform_class(plat()),
        platform_class(plat(cpu_flags=["SSE42", "AVX", "FMA3", "AVX2"])),
        platform_class(plat(cpu_flags=["SSE42", "AVX"])),
        platform_class(plat(cpu_flags=["SSE42"])),
    }
    assert classes == {"x86_64-avx512/ort1.32/cpu", "x86_64-avx2-fma/ort1.32/cpu", "x86_64-avx/ort1.32/cpu",
                       "x86_64-sse/ort1.32/cpu"}


def test_flags_that_choose_no_float_kernel_threads_and_ort_patch_releases_do_not() -> None:
    base = platform_class(plat())
    assert platform_class(plat(cpu_flags=AVX512 + ["AVX512VNNI", "F16C"])) == base
    assert platform_class(plat(threads=8)) == base
    assert platform_class(plat(ort_version="1.32.7")) == base
    assert platform_class(plat(arch="AMD64")) == base  # Windows spells it so


def test_another_ort_release_provider_or_architecture_is_another_class() -> None:
    base = platform_class(plat())
    assert platform_class(plat(ort_version="1.31.0")) != base
    assert platform_class(plat(execution_provider="OpenVINOExecutionProvider")) != base
    assert platform_class(plat(arch="aarch64", cpu_flags=["NEON", "ASIMD"])) == "aarch64-neon/ort1.32/cpu"
    assert platform_class(plat(arch="arm64", cpu_flags=["ASIMD", "SVE"])) == "aarch64-sve/ort1.32/cpu"


def test_a_worker_that_says_nothing_is_a_class_of_its_own() -> None:
    assert platform_class(None) == UNREPORTED
    assert platform_class(plat()) != UNREPORTED


def test_this_machine_describes_itself_as_workers_run_models() -> None:
    import onnxruntime

    p = describe()
    assert p.ort_version == onnxruntime.__version__
    assert p.execution_provider == "CPUExecutionProvider" and p.threads == 1
    assert p.arch
    # the kernel's report of the CPU (Linux), seen another way than numpy's CPUID reading
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith(("flags", "Features"))).split())
        for kernel_name, ours in (("avx2", "AVX2"), ("fma", "FMA3"), ("avx512f", "AVX512F"), ("sse4_2", "SSE42"), ("asimd", "ASIMD")):
            assert (ours in p.cpu_flags) == (kernel_name in flags), ours
    assert platform_class(p) == platform_class(p.model_dump())


@pytest.mark.parametrize(
    "bad",
    [
        {"arch": "x" * 33},
        {"cpu_flags": ["AVX2"] * 65},
        {"cpu_flags": ["AVX 2"]},
        {"cpu_flags": ["A" * 33]},
        {"ort_version": "1.32; drop table"},
        {"execution_provider": "e" * 65},
        {"threads": 0},
        {"threads": 100_000},
        {"gpu": "yes"},
    ],
)
def test_a_platform_report_out_of_bounds_is_refused_saying_which_field(bad: dict) -> None:
    with pytest.raises(ValidationError) as exc:
        WorkerRegistration.model_validate({"name": "w", "platform": bad})
    assert next(iter(bad)) in str(exc.value)


def test_registration_carries_the_platform_and_stays_valid_without_it() -> None:
    reg = WorkerRegistration.model_validate({"name": "w", "owner": "o", "platform": describe().model_dump()})
    assert reg.platform == describe()
    assert WorkerRegistration.model_validate({"name": "w"}).platform is None
