"""The compiled CPU sampler: build ``csrc/sampler.c`` on first use, cache it, load it with ctypes.

The kernel is plain C with OpenMP and no PyTorch headers, so it compiles in about a second with
the system's C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) and needs nothing at install
time. The library is cached under ``$DYSAMPLE_SWAP_CACHE`` (default
``$XDG_CACHE_HOME/dysample_swap`` or ``~/.cache/dysample_swap``), keyed by the source, the
compiler, the flags and the processor's features, and written atomically, so parallel
processes (DDP ranks, pytest workers) share one build.

A cached library is code this process runs, so it is loaded only when it is provably the one
built here: the cache directory is created with mode 0700, and where the configured directory
sits in a directory that another user owns or that group/others can write (``/tmp``), the user's
id is appended to its name (``/tmp/x`` becomes ``/tmp/x-uid1000``), so nobody else can claim the
name first. A cache directory or library that another user owns or that group/others can write
is never used: a warning says why, and the library is built into a private temporary directory
of this process instead. Each build records its SHA-256 next to it (``<library>.sha256``, written
atomically after the build); before ``dlopen`` the file must match it, and a missing digest or a
mismatch (a truncated, replaced or foreign file) is rebuilt, after a warning, never loaded.

Where it cannot be built (no compiler, a failed build) or is switched off
(``DYSAMPLE_SWAP_NATIVE=0``), :func:`library` returns ``None`` once a warning has said why; the
samplers in :mod:`dysample_swap.upsamplers.dysample.sampling` then run their pure-PyTorch paths, which compute the same
values, slower.

Example:
    >>> from dysample_swap.upsamplers.dysample import native
    >>> lib = native.library()
    >>> lib is None or lib.dysample_abi_version() == native.ABI_VERSION
    True
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger("dysample_swap")

ABI_VERSION = 1
"""What ``dysample_abi_version()`` of a library built from this source returns."""

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
SOURCES = ("sampler.c", "sampler_impl.h")
ENV_SWITCH = "DYSAMPLE_SWAP_NATIVE"
ENV_CACHE = "DYSAMPLE_SWAP_CACHE"

# Tried in order; the first that builds wins. -ffp-contract=off: the kernel fuses exactly where
# PyTorch's kernels do (explicit fma), so the compiler must not fuse anything else.
_FLAG_SETS: tuple[tuple[str, ...], ...] = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-fopenmp"),
    ("-O3",),  # no OpenMP (e.g. Apple clang): one thread
)
_COMMON_FLAGS = ("-shared", "-fPIC", "-ffp-contract=off", "-std=c99")

_lock = threading.Lock()
_state: dict[str, object] = {}


def _compiler() -> str | None:
    """The C compiler to use: ``$CC`` when set, else the first of cc, gcc, clang on the PATH."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"]) or os.environ["CC"]
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def cache_dir() -> Path:
    """Where built libraries live: the configured directory, with ``-uid<id>`` appended to its name where
    its parent is shared with other users (see the module docstring).

    Example:
        >>> cache_dir().name.startswith("dysample_swap") or os.environ.get(ENV_CACHE) is not None
        True
    """
    if os.environ.get(ENV_CACHE):
        configured = Path(os.environ[ENV_CACHE]).absolute()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        configured = Path(base).absolute() / "dysample_swap"
    parent = next(p for p in configured.parents if p.exists())  # the nearest one that exists decides
    if _untrusted(parent):
        return configured.with_name(f"{configured.name}-uid{os.getuid()}")
    return configured


def _untrusted(path: Path) -> str:
    """Why ``path`` must not be trusted: another user owns it, or group/others can write it (``""``: neither).

    POSIX owners and modes only; elsewhere nothing is refused.

    Example:
        >>> _untrusted(Path("/")) != "" if os.name == "posix" and os.getuid() != 0 else True
        True
    """
    if os.name != "posix":
        return ""
    info = path.stat()
    if info.st_uid != os.getuid():
        return f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group or others can write {path} (mode {stat.filemode(info.st_mode)})"
    return ""


def _cache_directory() -> Path:
    """:func:`cache_dir`, created with mode 0700, where it is safe to load from; else (after a warning saying
    why) a private temporary directory of this process, removed at exit."""
    directory = cache_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = _untrusted(directory)
    except OSError as error:
        problem = f"{directory} cannot be created ({error})"
    if not problem:
        return directory
    private = tempfile.mkdtemp(prefix="dysample_swap-")  # mode 0700, a name nobody can predict
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    logger.warning(
        "DySample: not using the compiled sampler's cache: %s; building it into %s for this process "
        "instead (point %s at a directory only you can write to keep the build)",
        problem,
        private,
        ENV_CACHE,
    )
    return Path(private)


def _digest_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refusal(target: Path) -> str:
    """Why the cached library ``target`` must not be loaded (``""``: it is the file this user built)."""
    digest = _digest_path(target)
    for path in (target, digest):
        if not path.exists():
            return f"{path} is missing"
        problem = _untrusted(path)
        if problem:
            return problem
    if digest.read_text(encoding="ascii", errors="replace").strip() != _sha256(target):
        return f"{target} does not match the SHA-256 recorded at its build (a truncated or replaced file)"
    return ""


def _cpu_features() -> str:
    """The processor's feature flags (``-march=native`` builds are only valid where they match)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build_key(compiler: str) -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((SOURCE_DIR / name).read_bytes())
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    for part in (compiler, version, repr(_FLAG_SETS), repr(_COMMON_FLAGS), _cpu_features(), sys.platform):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def _build(compiler: str, target: Path) -> tuple[str, ...]:
    """Compile into ``target`` (in an existing directory) atomically, then record its SHA-256; returns the flags
    that worked. Raises RuntimeError with the log."""
    errors = []
    for flags in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem + ".", suffix=".tmp")
        os.close(fd)
        command = [compiler, *flags, *_COMMON_FLAGS, str(SOURCE_DIR / "sampler.c"), "-o", tmp, "-lm"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as error:
            result = None
            errors.append(f"{' '.join(command)}: {error}")
        if result is not None and result.returncode == 0:
            digest = _sha256(Path(tmp))
            os.replace(tmp, target)
            _write_atomically(_digest_path(target), digest + "\n")
            return flags
        if result is not None:
            errors.append(f"{' '.join(command)}:\n{result.stderr.strip()[-2000:]}")
        Path(tmp).unlink(missing_ok=True)
    raise RuntimeError("\n".join(errors))


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(text)
    os.replace(tmp, path)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    pointer, size, flag = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix in ("f32", "f64"):
        forward = getattr(lib, f"dysample_forward_{suffix}")
        forward.argtypes = [pointer] * 9 + [size] * 8 + [flag] * 2
        forward.restype = flag
        backward = getattr(lib, f"dysample_backward_{suffix}")
        backward.argtypes = [pointer] * 12 + [size] * 8 + [flag] * 2
        backward.restype = flag
    lib.dysample_abi_version.restype = flag
    return lib


def _load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None, f"{ENV_SWITCH}={os.environ[ENV_SWITCH]} switches it off"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (set CC, or install cc/gcc/clang)"
    target = _cache_directory() / f"dysample_sampler-{_build_key(compiler)}.so"
    refusal = _refusal(target)
    if refusal and (target.exists() or _digest_path(target).exists()):
        logger.warning("DySample: not loading the cached compiled sampler: %s; rebuilding it", refusal)
    if refusal:
        try:
            flags = _build(compiler, target)
        except (RuntimeError, OSError) as error:
            return None, f"building {SOURCE_DIR / 'sampler.c'} with {compiler} failed:\n{error}"
        logger.info("DySample: built the compiled CPU sampler (%s) into %s", " ".join(flags), target)
        refusal = _refusal(target)  # checked again right before dlopen
        if refusal:
            return None, f"the library just built is not the one loaded: {refusal}"
    try:
        lib = _declare(ctypes.CDLL(str(target)))
    except (OSError, AttributeError) as error:
        return None, f"loading {target} failed: {error} (delete it to rebuild)"
    if lib.dysample_abi_version() != ABI_VERSION:
        return None, f"{target} is from another version (delete it to rebuild)"
    return lib, ""


def library() -> ctypes.CDLL | None:
    """The compiled sampler (built on the first call), or ``None`` after one warning saying why not.

    Example:
        >>> library() is library()
        True
    """
    with _lock:
        if "lib" not in _state:
            lib, reason = _load()
            _state["lib"], _state["reason"] = lib, reason
            if lib is None:
                logger.warning(
                    "DySample: the compiled CPU sampler is unavailable, so DySample runs its pure-PyTorch "
                    "sampler (same values, 2-3x slower on the CPU): %s",
                    reason,
                )
        return _state["lib"]  # type: ignore[return-value]


def loaded() -> ctypes.CDLL | None:
    """The library if :func:`library` has loaded it, without building or locking (safe inside ``torch.compile``).

    Example:
        >>> library() is None or loaded() is library()
        True
    """
    return _state.get("lib")  # type: ignore[return-value]


def unavailable_reason() -> str:
    """Why :func:`library` returned ``None`` (empty when the sampler loaded).

    Example:
        >>> isinstance(unavailable_reason(), str)
        True
    """
    library()
    return str(_state["reason"])


def compiled_sampler() -> str:
    """Say which sampler DySample runs on the CPU: the compiled one (and its file), or why not.

    Example:
        >>> from dysample_swap import compiled_sampler
        >>> compiled_sampler().startswith(("compiled:", "pure PyTorch:"))
        True
    """
    lib = library()
    if lib is None:
        return f"pure PyTorch: {unavailable_reason()}"
    return f"compiled: {lib._name}"


def reset() -> None:
    """Forget the loaded library, so the next :func:`library` call looks again (tests, after changing env vars).

    Example:
        >>> reset()
    """
    with _lock:
        _state.clear()
