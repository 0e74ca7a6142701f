"""EDDL's computing services: CPU, CUDA GPUs, FPGA (inference), with a clear error for a build that lacks one;
and :func:`quiet`, which silences what the C++ library prints on stdout."""
from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import pyeddl  # noqa: F401  (imported before pyecvl, always)
from pyeddl import eddl

from lumbarseg.engines.registry import Device
from lumbarseg.errors import LumbarsegError

MEMORY_LEVELS = ("full_mem", "mid_mem", "low_mem")
_LIBC = ctypes.CDLL(None)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence what the C++ library prints on stdout (build summaries, 'set new lr' on every step)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        _LIBC.fflush(None)  # C++ cout shares C stdio's buffer: empty it while it still goes to /dev/null
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def computing_service(device: Device, threads: Optional[int] = None, mem: str = "full_mem", lsb: int = 1) -> Any:
    """``CS_CPU`` / ``CS_GPU`` for a device, with a clear error where this EDDL was not built for it.

    A CPU-only EDDL raises ``[Hardware not supported] ... not compiled for 'gpu'`` from CS_GPU (and
    likewise for 'fpga') as a Python RuntimeError without harming the process, so it is caught here.
    """
    if mem not in MEMORY_LEVELS:
        raise LumbarsegError("eddl memory level", f"unknown {mem!r} (choose from {', '.join(MEMORY_LEVELS)})")
    if device.kind == "cpu":
        with quiet():
            return eddl.CS_CPU(th=int(threads) if threads else -1, mem=mem)
    if device.kind == "cuda":
        mask = [1 if i in device.ids else 0 for i in range(max(device.ids) + 1)]
        return _hardware(lambda: eddl.CS_GPU(g=mask, lsb=lsb, mem=mem), device)
    raise LumbarsegError("--device", f"{device}: EDDL trains on cpu or cuda; fpga is for inference (predict)")


def _hardware(make: Any, device: Device) -> Any:
    try:
        with quiet():
            return make()
    except RuntimeError as exc:
        text = str(exc)
        if "not supported" in text or "not compiled" in text or "FPGA" in text.upper():
            raise LumbarsegError("--device", f"{device}: the installed EDDL was not built for this target "
                                             f"({text.strip()}); install an EDDL build with {device.kind} "
                                             "support or use --device cpu") from None
        raise LumbarsegError("--device", f"{device}: EDDL could not use it ({text.strip()})") from None


def fpga_net(net: Any, device: Device) -> Any:
    """The inference copy of a built CPU net on the FPGA (EDDL 1.1b: HLSinf through ``toFPGA``)."""
    _hardware(lambda: eddl.CS_FPGA([1]), device)  # fails cleanly on a build without FPGA support
    return _hardware(lambda: eddl.toFPGA(net), device)
