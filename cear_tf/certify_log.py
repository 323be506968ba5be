"""Cohen-format certify logs: one TSV row per image, flushed as written, resumable.

Header `idx label predict radius correct time` (SPEC section 4), then extra columns
`count num p_lower`. A `<log>.json` sidecar records the settings the rows were made with;
resuming under other settings is refused rather than mixing rows of two experiments.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
EXTRA_COLUMNS = ("count", "num", "p_lower")
HEADER = "\t".join(COLUMNS + EXTRA_COLUMNS)

# Settings that choose which images a log covers, not what a row holds: a log may be resumed
# or merged across them (rows depend only on the binding settings and the image index).
NON_BINDING = ("skip", "start", "max", "shard", "num_images", "strategy")


def binding(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in NON_BINDING}


class LogError(ValueError):
    """A log file cannot be resumed or parsed."""


def read_rows(path: str) -> list[dict[str, str]]:
    """Complete rows of a certify log (any file whose header starts with Cohen's columns)."""
    with open(path) as f:
        lines = f.read().split("\n")
    if not lines or lines[0].split("\t")[: len(COLUMNS)] != list(COLUMNS):
        raise LogError(f"{path}: header is not a certify log header "
                       f"({chr(9).join(COLUMNS)} ...), got {lines[0][:80]!r}")
    names = lines[0].split("\t")
    rows = []
    # The last element is "" after a final newline, or a partial row cut by an interruption.
    for number, line in enumerate(lines[1:-1], start=2):
        fields = line.split("\t")
        if len(fields) != len(names):
            raise LogError(f"{path}:{number}: {len(fields)} fields, header has {len(names)}")
        rows.append(dict(zip(names, fields)))
    return rows


class CertifyLog:
    """Appends rows to a certify log, resuming after the last complete row."""

    def __init__(self, path: str, settings: dict[str, Any], resume: bool = True):
        self.path = path
        self.settings_path = path + ".json"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.done: set[int] = set()
        if os.path.exists(path) and resume:
            self._check_settings(settings)
            self._truncate_partial_row()
            self.done = {int(r["idx"]) for r in read_rows(path)}
            self._write_settings(settings)  # the latest image selection
            self._file = open(path, "a")
        else:
            if os.path.exists(path) and not resume:
                os.replace(path, path + ".old")  # never destroy rows silently
            self._write_settings(settings)
            self._file = open(path, "w")
            self._file.write(HEADER + "\n")
            self._file.flush()

    def _check_settings(self, settings):
        if not os.path.exists(self.settings_path):
            raise LogError(f"{self.path} exists without its settings file {self.settings_path}; "
                           f"move it away or pass --noresume")
        with open(self.settings_path) as f:
            old = binding(json.load(f))
        new = binding(settings)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if "noise" in diff:
            raise LogError(f"{self.path}: its rows were drawn under noise scheme "
                           f"{old.get('noise') or '(none recorded: the older, batch-dependent one)'}, this version "
                           f"draws {new.get('noise')!r}; they cannot be continued: use another "
                           f"--outfile or pass --noresume (the old log is kept as .old)")
        if diff:
            details = ", ".join(f"--{k}: log {old.get(k)!r} vs now {new.get(k)!r}"
                                for k in diff)
            raise LogError(f"{self.path} was made with other settings ({details}); use another "
                           f"--outfile or pass --noresume (the old log is kept as .old)")

    def _write_settings(self, settings):
        tmp = self.settings_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(settings, f, indent=2, sort_keys=True)
        os.replace(tmp, self.settings_path)

    def _truncate_partial_row(self):
        with open(self.path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                f.truncate(end)

    def write(self, idx: int, label: int, predict: int, radius: float, correct: bool,
              seconds: float, count: int, num: int, p_lower: float):
        row = [str(idx), str(label), str(predict), f"{radius:.6g}", str(int(correct)),
               str(datetime.timedelta(seconds=round(seconds, 4))), str(count), str(num), f"{p_lower:.6g}"]
        self._file.write("\t".join(row) + "\n")
        self._file.flush()
        self.done.add(idx)

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
