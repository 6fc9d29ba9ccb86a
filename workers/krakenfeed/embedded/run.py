"""Run a quixstreams Application until a condition holds.

quixstreams installs signal handlers, so ``Application.run`` must own the main
thread; a watcher thread polls the condition and stops the app when it holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def run_until(app: Any, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Run ``app`` until ``condition()`` holds; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    reached = threading.Event()

    def watch() -> None:
        while time.monotonic() < deadline:
            if condition():
                reached.set()
                break
            time.sleep(0.05)
        app.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    app.run()
    watcher.join()
    if not reached.is_set():
        raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
