"""Cohen-format certify logs: one TSV row per image, flushed as written, resumable.

Header `idx label predict radius correct time` (docs/method.md, section 5), then extra columns
`count num p_lower`. A log made with `--votes=pooled` adds the released code's pooled member-vote
count of the same draws in `pooled_*` columns (predict, radius, correct, count, num, p_lower):
NOT a certificate (POOLED_WARNING); the sound certificate stays in the main columns. A `<log>.json` sidecar records the settings the rows were made with,
including a fingerprint of the members' weights and the aggregator's weights; resuming under
other settings is refused, naming what changed, rather than mixing rows of two experiments.
One process writes a log at a time (`cear_tf.common.locking`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from typing import Any

from absl import logging

from cear_tf.common.locking import OutputLock

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
EXTRA_COLUMNS = ("count", "num", "p_lower")
HEADER = "\t".join(COLUMNS + EXTRA_COLUMNS)
POOLED_COLUMNS = ("pooled_predict", "pooled_radius", "pooled_correct", "pooled_count",
                  "pooled_num", "pooled_p_lower")
POOLED_WARNING = (
    "pooled_* columns are NOT a valid certificate: they count the M members' own votes on "
    "each of the N noise draws as N*M independent trials (the released Certify/core.py), but "
    "the members' votes on one draw are dependent (same noisy input), so their "
    "Clopper-Pearson bound and radius are not guaranteed; the radius column is the sound "
    "one-vote-per-draw certificate")


def records_pooled(settings: dict[str, Any]) -> bool:
    """Whether a log with these settings carries the pooled member-vote columns."""
    return settings.get("votes") == "pooled"


def header_for(settings: dict[str, Any]) -> str:
    return "\t".join(COLUMNS + EXTRA_COLUMNS
                     + (POOLED_COLUMNS if records_pooled(settings) else ()))

# Settings that choose which images a log covers, not what a row holds: a log may be resumed
# or merged across them (rows depend only on the binding settings and the image index).
NON_BINDING = ("skip", "start", "max", "shard", "num_images", "strategy")


def binding(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in NON_BINDING}


class LogError(ValueError):
    """A log file cannot be resumed or parsed."""


def _int(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LogError(f"{where}: {what} {text!r} is not an integer") from None


def read_rows(path: str) -> list[dict[str, str]]:
    """Complete rows of a certify log (any file whose header starts with Cohen's columns).

    A last line without its newline is a row cut by an interruption and is left out. Every
    complete row is checked: integer idx, label and predict, `correct` 0 or 1, a finite
    radius >= 0, no image twice; a bad row raises LogError naming the file and line.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise LogError(f"{path}:{line}: not UTF-8 text (byte {e.start}); not a certify log, "
                       f"or a damaged one") from None
    lines = text.split("\n")
    if not lines or lines[0].split("\t")[: len(COLUMNS)] != list(COLUMNS):
        raise LogError(f"{path}: header is not a certify log header "
                       f"({chr(9).join(COLUMNS)} ...), got {lines[0][:80]!r}")
    names = lines[0].split("\t")
    rows, seen = [], {}
    # The last element is "" after a final newline, or a partial row cut by an interruption.
    for number, line in enumerate(lines[1:-1], start=2):
        where = f"{path}:{number}"
        fields = line.split("\t")
        if len(fields) != len(names):
            raise LogError(f"{where}: {len(fields)} fields, header has {len(names)}")
        row = dict(zip(names, fields))
        idx = _int(row["idx"], "idx", where)
        _int(row["label"], "label", where)
        _int(row["predict"], "predict", where)
        if row["correct"] not in ("0", "1", "True", "False"):
            raise LogError(f"{where}: correct {row['correct']!r} is not 0 or 1")
        try:
            radius = float(row["radius"])
        except ValueError:
            raise LogError(f"{where}: radius {row['radius']!r} is not a number") from None
        if not math.isfinite(radius) or radius < 0:
            raise LogError(f"{where}: radius {row['radius']} is not a finite number >= 0")
        if "pooled_radius" in row:
            try:
                pooled_radius = float(row["pooled_radius"])
            except ValueError:
                pooled_radius = float("nan")
            if not math.isfinite(pooled_radius) or pooled_radius < 0:
                raise LogError(f"{where}: pooled_radius {row['pooled_radius']!r} is not a "
                               f"finite number >= 0")
            if row.get("pooled_correct") not in ("0", "1"):
                raise LogError(f"{where}: pooled_correct {row.get('pooled_correct')!r} is not "
                               f"0 or 1")
        if idx < 0:
            raise LogError(f"{where}: idx {idx} is negative")
        if idx in seen:
            raise LogError(f"{where}: image {idx} again (first at line {seen[idx]}): rows of "
                           f"two runs are mixed in this log")
        seen[idx] = number
        rows.append(row)
    return rows


def next_archive_path(path: str) -> str:
    """`<path>.old<n>` for the smallest n not taken (its settings go to `.old<n>.json`)."""
    n = 1
    while os.path.exists(f"{path}.old{n}") or os.path.exists(f"{path}.old{n}.json"):
        n += 1
    return f"{path}.old{n}"


def _describe_fingerprint_change(old: dict, new: dict) -> list[str]:
    changes = []
    old_m, new_m = old.get("members", []), new.get("members", [])
    if len(old_m) != len(new_m):
        changes.append(f"the ensemble had {len(old_m)} members, now {len(new_m)}")
    else:
        for i, (a, b) in enumerate(zip(old_m, new_m)):
            if a != b:
                changes.append(f"member {i}'s weights differ (content digest {a[:12]} in the "
                               f"log, {b[:12]} now)")
    if old.get("aggregator_weights") != new.get("aggregator_weights"):
        changes.append(f"aggregator weights: {old.get('aggregator_weights')} in the log, "
                       f"{new.get('aggregator_weights')} now")
    return changes


class CertifyLog:
    """Appends rows to a certify log, resuming after the last complete row."""

    def __init__(self, path: str, settings: dict[str, Any], resume: bool = True):
        if os.path.isdir(path):
            raise LogError(f"--outfile: {path} is a directory; give a file path for the log")
        self.path = path
        self.settings_path = path + ".json"
        self.done: set[int] = set()
        self.header = header_for(settings)
        self.pooled = records_pooled(settings)
        self._lock = OutputLock(path).acquire()
        try:
            self._open(settings, resume)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, settings, resume):
        if os.path.exists(self.path) and resume:
            settings = self._check_settings(settings)
            rows = read_rows(self.path)  # checked before anything is changed
            with open(self.path, encoding="utf-8") as f:
                found = f.readline().rstrip("\n")
            if found != self.header:
                raise LogError(f"{self.path}: its header has columns {found.split(chr(9))}, "
                               f"these settings write {self.header.split(chr(9))}; use "
                               f"another --outfile or pass --noresume (the old log is kept)")
            self._truncate_partial_row()
            self.done = {int(r["idx"]) for r in rows}
            self._write_settings(settings)  # the latest image selection
            self._file = open(self.path, "a")
        else:
            if os.path.exists(self.path):  # --noresume: never destroy rows silently
                archive = next_archive_path(self.path)
                os.replace(self.path, archive)
                if os.path.exists(self.settings_path):
                    os.replace(self.settings_path, archive + ".json")
                logging.info("--noresume: the previous log is kept as %s", archive)
            self._write_settings(settings)
            self._file = open(self.path, "w")
            self._file.write(self.header + "\n")
            self._file.flush()

    def _read_settings(self) -> dict[str, Any]:
        if not os.path.exists(self.settings_path):
            raise LogError(f"{self.path} exists without its settings file {self.settings_path}; "
                           f"move it away or pass --noresume")
        try:
            with open(self.settings_path, encoding="utf-8") as f:
                old = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LogError(f"{self.settings_path}: not valid JSON ({e}); restore it, or pass "
                           f"--noresume to start a new log (the old one is kept)") from None
        if not isinstance(old, dict):
            raise LogError(f"{self.settings_path}: expected a JSON object of settings")
        return old

    def _check_settings(self, settings) -> dict[str, Any]:
        """The settings to record: refuses a resume under other binding settings; a log made
        before fingerprints (or image orders) were recorded adopts the current one (said in
        one line)."""
        old = binding(self._read_settings())
        new = binding(settings)
        if "fingerprint" not in old and "fingerprint" in new:
            logging.warning("%s: no fingerprint recorded (a log started before fingerprints); "
                            "adopting that of the members it names now", self.path)
            old["fingerprint"] = new["fingerprint"]
        if "image_order" not in old and "image_order" in new:
            logging.warning("%s: no image order recorded (a log started before orders were); "
                            "adopting that of the data read now, %s", self.path,
                            new["image_order"])
            old["image_order"] = new["image_order"]
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if "noise" in diff:
            raise LogError(f"{self.path}: its rows were drawn under noise scheme "
                           f"{old.get('noise') or '(none recorded: the older, batch-dependent one)'}"
                           f", this version draws {new.get('noise')!r}; they cannot be continued: "
                           f"use another --outfile or pass --noresume (the old log is kept)")
        if "image_order" in diff:
            raise LogError(f"{self.path}: its rows index test images in the "
                           f"{old.get('image_order')!r} order, the data read now (--data_dir) are "
                           f"in the {new.get('image_order')!r} order, where image i is another "
                           f"image; certify the copy the log was made from, or use another "
                           f"--outfile")
        if "fingerprint" in diff:
            changes = _describe_fingerprint_change(old["fingerprint"], new["fingerprint"])
            raise LogError(f"{self.path} was made with another classifier ({'; '.join(changes)}); "
                           f"use another --outfile or pass --noresume (the old log is kept)")
        if diff:
            details = ", ".join(f"--{k}: log {old.get(k)!r} vs now {new.get(k)!r}"
                                for k in diff)
            raise LogError(f"{self.path} was made with other settings ({details}); use another "
                           f"--outfile or pass --noresume (the old log is kept)")
        return settings

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
              seconds: float, count: int, num: int, p_lower: float, pooled=None):
        """Appends one image's row; `pooled` (a smoothing.Certificate of the pooled member
        votes, not a certificate) is required exactly when the log has pooled columns."""
        if self.pooled != (pooled is not None):
            raise ValueError(f"{self.path}: pooled votes {'missing' if self.pooled else 'given'} "
                             f"for a log {'with' if self.pooled else 'without'} pooled columns")
        row = [str(idx), str(label), str(predict), f"{radius:.6g}", str(int(correct)),
               str(datetime.timedelta(seconds=round(seconds, 4))), str(count), str(num),
               f"{p_lower:.6g}"]
        if pooled is not None:
            row += [str(pooled.prediction), f"{pooled.radius:.6g}",
                    str(int(pooled.prediction == label)), str(pooled.count), str(pooled.num),
                    f"{pooled.p_lower:.6g}"]
        self._file.write("\t".join(row) + "\n")
        self._file.flush()
        self.done.add(idx)

    def close(self):
        if getattr(self, "_file", None) is not None and not self._file.closed:
            self._file.close()
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- merging the logs of a sharded certification (cear_tf.cli.merge) --------------------------

class MergeError(ValueError):
    pass

def _shard_settings(path):
    try:
        with open(path + ".json") as f:
            return json.load(f)
    except OSError as e:
        raise MergeError(f"{path}: no settings file {path}.json ({e})") from e

def merge_logs(paths, outfile, allow_gaps=False) -> int:
    """Writes the merged log; returns its number of rows."""
    if not paths:
        raise MergeError("no logs to merge")
    settings = [_shard_settings(p) for p in paths]
    reference = binding(settings[0])
    for path, s in zip(paths[1:], settings[1:]):
        diff = sorted(k for k in set(reference) | set(binding(s))
                      if reference.get(k) != s.get(k))
        if diff:
            raise MergeError(f"{path} differs from {paths[0]} in {', '.join(diff)}")
    for key in ("skip", "start", "max", "num_images"):
        values = {s.get(key) for s in settings}
        if len(values) > 1:
            raise MergeError(f"shards disagree on {key}: {sorted(map(str, values))}")
    rows = {}
    for path in paths:
        for row in read_rows(path):
            idx = int(row["idx"])
            if idx in rows:
                same = {k: v for k, v in rows[idx].items() if k != "time"} == \
                       {k: v for k, v in row.items() if k != "time"}
                if not same:
                    raise MergeError(f"image {idx} has different rows in two shards ({path})")
                continue
            rows[idx] = row
    first = settings[0]
    if first.get("num_images") is not None:
        stop = first["num_images"] if first.get("max", -1) < 0 else min(first["num_images"],
                                                                        first["max"])
        missing = sorted(set(range(first.get("start", 0), stop, first.get("skip", 1)))
                         - set(rows))
        if missing and not allow_gaps:
            raise MergeError(f"{len(missing)} selected images are in no shard, e.g. "
                             f"{missing[:10]}; certify them or pass --allow_gaps")
    merged_settings = dict(first, shard="merged")
    if os.path.isdir(outfile):
        raise MergeError(f"{outfile} is a directory; give a file path for the merged log")
    os.makedirs(os.path.dirname(os.path.abspath(outfile)), exist_ok=True)
    with OutputLock(outfile):
        if os.path.exists(outfile):
            raise MergeError(f"{outfile} exists; remove it or merge into another file")
        header = header_for(first)
        columns = header.split("\t")
        tmp = outfile + ".tmp"
        with open(tmp, "w") as f:
            f.write(header + "\n")
            for idx in sorted(rows):
                f.write("\t".join(rows[idx][c] for c in columns) + "\n")
        with open(outfile + ".json", "w") as f:
            json.dump(merged_settings, f, indent=2, sort_keys=True)
        os.replace(tmp, outfile)
    return len(rows)
