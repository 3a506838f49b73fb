"""Plumbing shared by the Triton kernels: can Triton launch here, launch sizes (the export and
autocast rules live in :mod:`ddif.kernels.dispatch`).

Nothing here imports Triton at module import. The kernel modules (``ddif.kernels._haar_triton``,
``ddif.kernels._fwm_triton``) are imported on first use; Triton decides *when a kernel is defined*
whether it is compiled for a GPU or run by its CPU interpreter (``TRITON_INTERPRET=1``), so each
kernel module records the mode it was built in (``INTERPRETED``) and launch decisions follow it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

#: dtypes the Triton kernels take (they accumulate in fp32 whatever the input).
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_TRUE = {"1", "true", "yes", "on"}


def interpret_requested() -> bool:
    """True when ``TRITON_INTERPRET`` asks for Triton's CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


@functools.lru_cache(maxsize=1)
def _gpu_driver() -> tuple[bool, str]:
    """(True, description) when Triton can compile and launch for a visible GPU."""
    if not torch.cuda.is_available():
        return False, (
            "no CUDA GPU visible (Triton compiles for GPUs only; TRITON_INTERPRET=1 runs the "
            "kernels in Triton's CPU interpreter, for tests)"
        )
    try:
        import triton
        from triton.runtime import driver

        driver.active.get_current_target()
    except Exception as exc:  # noqa: BLE001 - any failure here means "not launchable", with its reason
        return False, f"Triton has no usable GPU driver: {type(exc).__name__}: {exc}"
    return True, f"Triton {triton.__version__} on {torch.cuda.get_device_name()}"


def triton_status() -> tuple[str, str]:
    """('live' | 'interpreter' | 'missing', detail)."""
    if importlib.util.find_spec("triton") is None:
        return "missing", "triton is not installed (pip install 'ddif[triton]')"
    built = [
        m for m in (sys.modules.get("ddif.kernels._haar_triton"), sys.modules.get("ddif.kernels._fwm_triton")) if m
    ]
    interpreted = built[0].INTERPRETED if built else interpret_requested()
    if interpreted:
        return "interpreter", (
            "TRITON_INTERPRET=1: the Triton kernels run in Triton's CPU interpreter (correct but slow; meant for tests)"
        )
    ok, detail = _gpu_driver()
    return ("live", detail) if ok else ("missing", detail)


def status_entry(name: str) -> dict[str, str | bool]:
    """``{name: True}`` when live on a GPU, else ``{name: reason}`` (for ``kernels.available()``)."""
    mode, detail = triton_status()
    if mode == "live":
        return {name: True}
    return {name: f"{mode}: {detail}"}


_ON_LOAD: dict[str, list[Callable[[], None]]] = {}
_HOOKS_RUN: set[str] = set()
_HOOKS_LOCK = threading.Lock()


def on_kernels_loaded(module: str, hook: Callable[[], None]) -> None:
    """Run ``hook`` once, right after the kernel module ``module`` is first loaded through
    :func:`load_kernels`. The op modules register their ``torch.library`` ops this way: defining a
    ``triton_op`` imports Triton, and Triton fixes at import whether its own language functions are
    interpreted (``TRITON_INTERPRET``), so nothing may import it before the first kernel use."""
    _ON_LOAD.setdefault(module, []).append(hook)


def load_kernels(module: str) -> ModuleType | None:
    """Import a Triton kernel module (and run its :func:`on_kernels_loaded` hooks once), or None
    when Triton is not installed."""
    if importlib.util.find_spec("triton") is None:
        return None
    loaded = importlib.import_module(module)
    if module not in _HOOKS_RUN:
        with _HOOKS_LOCK:
            if module not in _HOOKS_RUN:
                for hook in _ON_LOAD.get(module, ()):
                    hook()
                _HOOKS_RUN.add(module)
    return loaded


def constant_while_tracing(fn):
    """``torch.compiler.assume_constant_result`` (torch.compile calls ``fn`` once while tracing and
    uses its result as a constant) without importing ``torch._dynamo`` at our import time (1.8 s,
    and it imports Triton): that decorator only sets this marker. The torch.compile test in
    tests/test_kernels_fwm.py fails (graph break under fullgraph=True) if the mechanism changes."""
    fn._dynamo_marked_constant = True
    return fn


@constant_while_tracing
def can_launch(device: torch.device, module: str) -> bool:
    """Whether the kernels of ``module`` can run on tensors on ``device``.

    Compiled kernels run on CUDA tensors with a live driver; interpreted kernels (built while
    ``TRITON_INTERPRET=1``) run on CPU tensors (and on CUDA ones, by copying: slow).
    Decides without importing Triton whenever the answer is plainly no.
    """
    if device.type not in ("cpu", "cuda"):
        return False
    if module not in sys.modules:
        if device.type == "cpu" and not interpret_requested():
            return False
        if device.type == "cuda" and not interpret_requested() and not _gpu_driver()[0]:
            return False
    loaded = load_kernels(module)  # (runs the op registrations once, also for a module imported directly)
    if loaded is None:
        return False
    if loaded.INTERPRETED:
        return True
    return device.type == "cuda" and _gpu_driver()[0]


def launch_error(device: torch.device) -> RuntimeError:
    mode, detail = triton_status()
    return RuntimeError(
        f"the fused Triton kernels cannot run on device '{device}' here ({mode}: {detail}); "
        "use the reference op, or a CUDA tensor, or set TRITON_INTERPRET=1 before the first "
        "kernel use to run on CPU in the interpreter"
    )


def kernels_interpreted(module: str) -> bool:
    """Whether the kernel module ``module`` was built for Triton's CPU interpreter."""
    loaded = load_kernels(module)
    return bool(loaded is not None and loaded.INTERPRETED)


def triton_kernel_op(name: str, module: str) -> Callable[[Callable[..., Any]], Any]:
    """Register ``fn`` (whose kernels launch through ``torch.library.wrap_triton``) as the
    ``torch.library.triton_op`` ``name``: eager calls launch the kernels directly, and under
    ``torch.compile`` AOT autograd decomposes the op into its kernel launches, so inductor sees
    (and schedules) the Triton kernels instead of an opaque call.

    Two departures from plain ``triton_op``, both because Triton's CPU interpreter
    (``TRITON_INTERPRET=1``, ``module.INTERPRETED``) launches kernels eagerly even where a graph is
    traced (``wrap_triton`` hands back the raw kernel there) and so cannot run on fake tensors:
    the op's fake (meta) implementation is the explicit shape function the caller registers with
    ``op.register_fake`` (not ``fn`` run on fake tensors), and while the kernels are interpreted
    the op stays one opaque node under functionalization instead of being decomposed.
    """

    def register(fn: Callable[..., Any]) -> Any:
        from torch._subclasses.functional_tensor import FunctionalTensorMode

        op: Any = torch.library.triton_op(name, fn, mutates_args=())

        def functionalize(mode, overload, types, args, kwargs):  # noqa: ANN001, ANN202 - torch's protocol
            if kernels_interpreted(module):
                return mode.__torch_dispatch__(overload, types, args, kwargs)
            with mode:
                return fn(*args, **kwargs)

        op.register_torch_dispatch(FunctionalTensorMode, functionalize)
        return op

    return register


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=8)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def target_programs(device: torch.device, interpreted: bool) -> int:
    """How many programs a launch should aim for: a few waves on a GPU, as few as possible in the
    interpreter (whose cost is per program)."""
    if interpreted or device.type != "cuda":
        return 1
    return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def autotune(configs: list, key: list[str], **kwargs: object):  # noqa: ANN201 - returns Triton's decorator
    """``triton.autotune`` with the results persisted in Triton's cache (``cache_results``, where
    this Triton has it): the first image at a new size is not late again in the next process."""
    import inspect

    import triton

    if "cache_results" in inspect.signature(triton.autotune).parameters:
        kwargs.setdefault("cache_results", True)
    return triton.autotune(configs=configs, key=key, **kwargs)
