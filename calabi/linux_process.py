"""Linux process-lifetime controls (``prctl``), standard library only; no-ops elsewhere."""

from __future__ import annotations

import ctypes
import signal
import sys

__all__ = ["die_with_parent", "set_child_subreaper"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(option, value)


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """``preexec_fn`` for child processes: on Linux they get ``signum`` when the parent dies, even by SIGKILL.

    "The parent" is the thread that started the child: start children from a thread that lives as
    long as they should.
    """
    _prctl(_PR_SET_PDEATHSIG, signum)


def set_child_subreaper() -> None:
    """Make this process adopt the orphans of its descendants (instead of pid 1)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
