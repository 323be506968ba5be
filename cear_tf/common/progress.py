"""Progress of long loops, with rate and ETA: a Keras Progbar on a terminal, log lines else.

Certification at the paper's scale takes seconds to minutes per image, so progress counts
work inside an item too: `update(done)` takes a fractional count (2.5 = two items and half of
the third), and the rate and ETA follow the work, not just the finished items.
"""

from __future__ import annotations

import sys
import time

from absl import logging


class Progress:
    """Progress over `total` items named `unit`, started now.

    On a terminal (stdout is a TTY) a Keras Progbar redraws one line; elsewhere (a log
    file) a line `<what>: <done>/<total> <unit>s, <rate>/s, ETA <s>` is logged at most every
    `interval` seconds and once at the end.
    """

    def __init__(self, total: int, what: str, unit: str = "image", interval: float = 60.0,
                 terminal: bool | None = None):
        self.total = max(int(total), 1)
        self.what = what
        self.unit = unit
        self.interval = float(interval)
        self.terminal = sys.stdout.isatty() if terminal is None else bool(terminal)
        self._start = time.time()
        self._last_line = self._start
        self._bar = None
        if self.terminal:
            import keras
            self._bar = keras.utils.Progbar(self.total, unit_name=unit)

    def rate_and_eta(self, done: float) -> tuple[float, float]:
        elapsed = max(time.time() - self._start, 1e-9)
        rate = done / elapsed
        return rate, (self.total - done) / rate if rate > 0 else float("inf")

    def update(self, done: float) -> None:
        done = min(float(done), self.total)
        if self._bar is not None:
            self._bar.update(done, finalize=done >= self.total)
            return
        now = time.time()
        if done >= self.total or now - self._last_line >= self.interval:
            self._last_line = now
            rate, eta = self.rate_and_eta(done)
            logging.info("%s: %.1f/%d %ss, %.3g/s, ETA %.0fs", self.what, done, self.total,
                         self.unit, rate, eta)
