"""What a helper process of the engine (the records shipper, the SIP trace keeper) does first.

Each is started by the engine with its PID and must not outlive it: a ``kill -9``
of the engine is then one crash of the family, not helpers left running beside
the engine's next start, holding its files.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with(engine_pid: int) -> None:
    """Ask the kernel to kill this process when the engine dies (Linux only), then make
    sure it did not die already."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != engine_pid:
        os._exit(0)


def first_line(error: BaseException) -> str:
    """An error in one line, for a report on a pipe."""
    return (str(error).splitlines() or [type(error).__name__])[0]


def function_name(function: Callable[..., Any]) -> str | None:
    """``module:qualified.name`` by which a helper process finds ``function`` again; None
    for one it cannot (a lambda, a closure, a bound method)."""
    name = f"{getattr(function, '__module__', '')}:{getattr(function, '__qualname__', '')}"
    try:
        return name if named_function(name) is function else None
    except (ImportError, ValueError):
        return None


def named_function(name: str) -> Callable[..., Any]:
    """``module:qualified.name`` imported (ValueError when it names no callable)."""
    module, _, qualified = name.partition(":")
    if not module or not qualified or "<" in qualified:
        raise ValueError(f"{name!r} names no function")
    found: object = importlib.import_module(module)
    for part in qualified.split("."):
        found = getattr(found, part, None)
    if not callable(found):
        raise ValueError(f"{name!r} names no function")
    return found
