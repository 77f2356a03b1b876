"""Which ONNX Runtime execution providers can start in this process, decided before a session asks.

ONNX Runtime learns that its CUDA provider cannot start only by trying:
it loads ``libonnxruntime_providers_cuda.so`` and, when a library that
needs is missing (``libcublasLt.so.13``, cuDNN, the NVIDIA driver's
``libcuda.so.1``), prints a red ``[E:onnxruntime...] FAIL`` block from its
C++ logger, whatever the session's log level, then runs on the CPU. Here
the same shared library is loaded first with :mod:`ctypes` (the dynamic
loader resolves exactly the libraries ONNX Runtime would), and the driver
is asked for a device. A provider that cannot start is left out of the
list handed to ONNX Runtime, which then has nothing to complain about,
and the reason is said once per process, in one line; with ``-v`` the
loader's own message (ONNX Runtime's detail) is logged too, and ONNX
Runtime's logger is let through at the matching level.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CPU", "CUDA", "provider_problem", "usable_providers", "session_log_severity"]

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

#: The shared library ONNX Runtime loads for each provider that lives in one (in ``onnxruntime/capi``).
_PROVIDER_LIBRARIES = {
    CUDA: "libonnxruntime_providers_cuda.so",
    "TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so",
}
#: Libraries ONNX Runtime opens only once the provider starts (not linked, so not found by loading it).
_LOADED_LATER = {CUDA: ("libcudnn.so.9",)}
#: Providers that need an NVIDIA GPU (asked of the driver after their library loads).
_NEEDS_NVIDIA_GPU = set(_PROVIDER_LIBRARIES)

_said: set[str] = set()
_said_lock = threading.Lock()


def _library_problem(path: Path) -> str | None:
    """Why the dynamic loader cannot load ``path`` (and what it needs), or None when it can."""
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        return str(exc)
    return None


def _gpu_problem() -> str | None:
    """Why the NVIDIA driver reports no usable device, or None when it has one."""
    driver = ctypes.CDLL("libcuda.so.1")
    status = driver.cuInit(0)
    if status != 0:
        return f"the NVIDIA driver cannot start (cuInit error {status}: no GPU, or the GPU is not visible here)"
    count = ctypes.c_int(0)
    status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value < 1:
        return "the NVIDIA driver sees no GPU"
    return None


@functools.cache
def provider_problem(provider: str) -> str | None:
    """Why ``provider`` cannot start in this process, or None when it can (decided once per process).

    Parameters
    ----------
    provider : str
        An ONNX Runtime provider name, e.g. ``"CUDAExecutionProvider"``.

    Returns
    -------
    str or None
        One phrase an astronomer can act on (the missing library, or no
        GPU); the loader's full message is logged at INFO (``-v``).
    """
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        return f"this ONNX Runtime ({_package()}) has no {provider}"
    library = _PROVIDER_LIBRARIES.get(provider)
    if library is None:
        return None
    if provider in _NEEDS_NVIDIA_GPU:
        detail = _library_problem(Path("libcuda.so.1"))
        if detail is not None:
            log.info("%s needs the NVIDIA driver's libcuda.so.1: %s", provider, detail)
            return "no NVIDIA GPU driver (libcuda.so.1 is not installed)"
    path = Path(ort.__file__).parent / "capi" / library
    detail = _library_problem(path)
    if detail is not None:
        log.info("ONNX Runtime cannot load %s: %s", path, detail)
        missing = detail.split(":", 1)[0].strip() if "cannot open shared object file" in detail else detail
        return f"{missing} is missing ({_requirements()})"
    for later in _LOADED_LATER.get(provider, ()):
        detail = _library_problem(Path(later))
        if detail is not None:
            log.info("%s will need %s: %s", provider, later, detail)
            return f"{later} is missing ({_requirements()})"
    if provider in _NEEDS_NVIDIA_GPU:
        return _gpu_problem()
    return None


def _package() -> str:
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:  # pragma: no cover - every wheel has it
        return "onnxruntime"
    return f"{info.package_name} {info.__version__}"


def _requirements() -> str:
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version
    except ImportError:  # pragma: no cover
        cuda_version = None
    return f"{_package()} needs CUDA {cuda_version} and cuDNN 9" if cuda_version else _package()


def usable_providers(wanted: Sequence[str], *, stage: str, explicit: bool = False) -> list[str]:
    """``wanted`` less the providers that cannot start here, said once per process in one line.

    Parameters
    ----------
    wanted : sequence of str
        Providers in order of preference.
    stage : str
        The stage asking, named in the message.
    explicit : bool
        Whether the user chose ``wanted`` (a stage parameter); then a GPU
        provider left out is worth a warning even on a machine without a
        GPU driver.

    Raises
    ------
    StageConfigError
        When none of ``wanted`` can start.
    """
    from survey_classifier.errors import StageConfigError

    chosen, dropped = [], []
    for provider in wanted:
        problem = None if provider == CPU else provider_problem(provider)
        if problem is None:
            chosen.append(provider)
        else:
            dropped.append((provider, problem))
    if not chosen:
        reasons = "; ".join(f"{p}: {why}" for p, why in dropped)
        msg = f"stage {stage!r}: none of the ONNX Runtime providers {list(wanted)} can start here ({reasons})"
        raise StageConfigError(msg)
    for provider, problem in dropped:
        _say_once(stage, provider, problem, chosen[0], explicit=explicit)
    return chosen


def _say_once(stage: str, provider: str, problem: str, running: str, *, explicit: bool) -> None:
    with _said_lock:
        if provider in _said:
            return
        _said.add(provider)
    short = provider.removesuffix("ExecutionProvider")
    where = "the CPU" if running == CPU else running.removesuffix("ExecutionProvider")
    not_built = problem.startswith("this ONNX Runtime")
    level = logging.INFO if not_built and not explicit else logging.WARNING
    log.log(level, "%s stage: running on %s (%s cannot start here: %s)", stage, where, short, problem)


def session_log_severity() -> int:
    """ONNX Runtime's log severity for sessions: errors only, unless ``-v`` (warnings) or ``-vv`` (info)."""
    if log.isEnabledFor(logging.DEBUG):
        return 1
    if log.isEnabledFor(logging.INFO):
        return 2
    return 3
