"""One writer per output: an advisory lock file beside each log, weights file or member.

  with OutputLock("runs/certify/cear_gm.tsv"):
      ...append rows...

The lock is `fcntl.flock` on `<path>.lock`, holding the owner's PID and command line. The
kernel releases it when its process exits or is killed (kill -9 included), so a stale lock
file never blocks a rerun; a second process asking for a held lock is refused at once, with
the owner named, before it reads or writes anything. A release deletes the file (a killed
process leaves it, for the next holder to delete); a lock taken on a file that was deleted
meanwhile is dropped and taken again on the file now at the path, so two processes never
both hold "the" lock.
"""

from __future__ import annotations

import fcntl
import os
import sys


class LockError(RuntimeError):
    """Another process is writing the same output."""


class OutputLock:
    def __init__(self, path: str):
        self.path = path
        self.lock_path = path.rstrip("/") + ".lock"
        self._file = None

    def acquire(self) -> "OutputLock":
        os.makedirs(os.path.dirname(os.path.abspath(self.lock_path)), exist_ok=True)
        while True:
            f = open(self.lock_path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                owner = f.read().strip() or "unknown process"
                f.close()
                raise LockError(f"{self.path} is being written by another process ({owner}); "
                                f"wait for it to finish or stop it, then rerun (its rows are "
                                f"kept)") from None
            if self._is_at_path(f):
                break
            f.close()  # its holder released and deleted it between our open and our flock
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n")
        f.flush()
        self._file = f
        return self

    def _is_at_path(self, f) -> bool:
        try:
            return os.fstat(f.fileno()).st_ino == os.stat(self.lock_path).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._file is not None:
            # Deleted while still held, so that whoever opens the path next creates a new
            # file rather than waiting on this one.
            if self._is_at_path(self._file):
                os.remove(self.lock_path)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
