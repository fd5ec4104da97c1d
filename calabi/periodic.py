"""A task repeated in a background thread (``calabi serve``'s orphan sweep)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Periodic"]

log = logging.getLogger("calabi.periodic")


class Periodic:
    """Runs ``task`` every ``interval_s`` (first after one interval) until the ``with`` block ends.

    A failing run is logged and the next one goes ahead: a maintenance task never stops the server.
    """

    def __init__(self, name: str, interval_s: float, task: Callable[[], object]) -> None:
        self._name = name
        self._interval_s = interval_s
        self._task = task
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._task()
            except Exception:
                log.exception("%s failed; trying again in %.0f s", self._name, self._interval_s)

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
