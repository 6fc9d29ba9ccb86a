"""Child processes that end with their parent, even when the parent is SIGKILLed.

Linux's PR_SET_PDEATHSIG, set in the forked child before exec. It fires when the
thread that started the child exits, so start children from a thread that lives as
long as they should (the main thread).

The signal is SIGKILL. A parent that is alive stops its children in order itself;
one that died unstopped leaves nobody to order a shutdown, and its embedded broker
dies with it, so a child asked to stop politely could wait for ever to flush to a
broker that is gone. A killed detector resumes from its last commit; a killed
ingest loses what it had not yet handed to the broker, as any crash does.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _resolve_prctl() -> Callable[..., int] | None:
    # Resolved here, in the parent: a forked child must not load a library while
    # another thread may have held the loader's lock at fork time.
    if sys.platform != "linux":
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _resolve_prctl()


def _terminate_with_parent() -> None:  # runs in the forked child, before exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def ends_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child killed when its parent dies, or
    None where the platform cannot."""
    return _terminate_with_parent if _PRCTL is not None else None
