"""The llama.cpp build is chosen from the CPU's own flags, and never turns AMX on."""

from agent.install import llama_cmake_args

AVX2_ONLY = {"avx", "avx2", "fma", "f16c", "bmi2"}
SAPPHIRE_RAPIDS = AVX2_ONLY | {
    "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni",
    "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
}  # fmt: skip


def options(flags):
    return dict(arg[2:].split("=") for arg in llama_cmake_args(flags).split())


def test_a_cpu_without_avx512_gets_an_avx2_build():
    built = options(AVX2_ONLY)
    assert built["GGML_NATIVE"] == "OFF"  # -march=native would also enable what the CPU has
    assert built["GGML_AVX2"] == built["GGML_FMA"] == "ON"
    assert built["GGML_AVX512"] == built["GGML_AVX512_VNNI"] == "OFF"


def test_a_cpu_with_avx512_and_amx_gets_avx512_but_never_amx():
    built = options(SAPPHIRE_RAPIDS)
    assert built["GGML_AVX512"] == built["GGML_AVX512_VNNI"] == built["GGML_AVX512_BF16"] == "ON"
    assert built["GGML_AMX_INT8"] == built["GGML_AMX_TILE"] == built["GGML_AMX_BF16"] == "OFF"


def test_avx512_needs_every_part_ggml_compiles_it_with():
    assert options(AVX2_ONLY | {"avx512f"})["GGML_AVX512"] == "OFF"


def test_other_cpus_build_natively_and_each_flag_set_has_its_own_wheel():
    assert options(None)["GGML_NATIVE"] == "ON"
    assert options(None)["GGML_AMX_INT8"] == "OFF"
    assert llama_cmake_args(AVX2_ONLY) != llama_cmake_args(SAPPHIRE_RAPIDS)


# --- The lock files ---------------------------------------------------------------------------

import re  # noqa: E402
import tomllib  # noqa: E402

from agent.install import LLAMA_DEPENDENCIES, ROOT, lock_file  # noqa: E402

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$", re.M)


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=~!;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins(dev: bool) -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for name, version, _marker in PIN.findall(lock_file(dev).read_text()):
        pins.setdefault(name.lower().replace("_", "-"), set()).add(version)
    return pins


def test_every_declared_dependency_is_locked_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [*project["dependencies"], *LLAMA_DEPENDENCIES]
    dev = [*runtime, *project["optional-dependencies"]["dev"]]
    for is_dev, declared in ((False, runtime), (True, dev)):
        locked = _pins(is_dev)
        missing = {_name(r) for r in declared} - set(locked)
        assert not missing, f"{lock_file(is_dev).name} lacks {missing}: run `python3 run.py lock`"
    text = lock_file(False).read_text()
    assert text.count("==") <= text.count("--hash=sha256:")  # pip then checks every file


def test_the_runtime_lock_pins_the_versions_the_tests_ran_with():
    runtime, dev = _pins(False), _pins(True)
    assert "pytest" not in runtime and "pytest" in dev
    differing = {name: (v, dev.get(name)) for name, v in runtime.items() if v != dev.get(name)}
    assert not differing
