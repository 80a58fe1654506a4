"""Files a process re-reads while it runs (tokens, API keys, TLS certificates; the server's and
the bridge's): on SIGHUP, or when their size, mtime or inode change (looked at, at most once a
second, when used). Torch-free: the client distribution ships it for the bridge."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
CHECK_INTERVAL_S = 1.0


def _signature(paths: Sequence[str]) -> tuple:
    signature = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            signature.append(None)
        else:
            signature.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(signature)


class WatchedFiles(Generic[T]):
    """`load(paths)` builds the value; `current()` returns it, reloading when the files have
    changed. A failed reload keeps the last good value (and logs why): a half-written file
    during a rotation never takes the service down. The first load must succeed."""

    def __init__(self, what: str, paths: Sequence[str], load: Callable[[Sequence[str]], T]):
        self.what = what
        self.paths = tuple(paths)
        self._load = load
        self._signature = _signature(self.paths)
        self._value = load(self.paths)
        self._checked = time.monotonic()

    def current(self) -> T:
        now = time.monotonic()
        if now - self._checked >= CHECK_INTERVAL_S:
            self._checked = now
            if _signature(self.paths) != self._signature:
                self.reload()
        return self._value

    def reload(self) -> bool:
        signature = _signature(self.paths)
        try:
            value = self._load(self.paths)
        except (OSError, ValueError) as error:
            log.error("could not re-read the %s (%s); keeping the previous one", self.what, error)
            return False
        self._value, self._signature = value, signature
        log.info("re-read the %s", self.what)
        return True
