"""Joins the logs of a sharded certification into one log, checking gaps and duplicates.

  python -m cear_tf.certify ... --shard=0/4 --outfile=runs/c_shard0.tsv   # on 4 machines
  python -m cear_tf.merge --logs=runs/c_shard0.tsv,...,runs/c_shard3.tsv \
      --outfile=runs/c.tsv

Shards must share every setting that determines a row (models, sigma, N, seed, ...); the
image selection (skip, max) must agree too, and together the shards must cover it: a
missing image is an error unless --allow_gaps. A row present in two shards must be
identical (time aside), since the noise of an image depends only on (seed, idx).
"""

from __future__ import annotations

import json
import os

from absl import flags

from cear_tf import certify_log, cli
from cear_tf.locking import OutputLock

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (cli.run), never on import."""
    flags.DEFINE_list("logs", None, "The shard logs to merge.")
    flags.DEFINE_string("outfile", None, "Where the merged log goes (its settings beside it).")
    flags.DEFINE_bool("allow_gaps", False, "Write the merged log even if images are missing.")


class MergeError(ValueError):
    pass


def _settings(path):
    try:
        with open(path + ".json") as f:
            return json.load(f)
    except OSError as e:
        raise MergeError(f"{path}: no settings file {path}.json ({e})") from e


def merge_logs(paths, outfile, allow_gaps=False) -> int:
    """Writes the merged log; returns its number of rows."""
    if not paths:
        raise MergeError("no logs to merge")
    settings = [_settings(p) for p in paths]
    reference = certify_log.binding(settings[0])
    for path, s in zip(paths[1:], settings[1:]):
        diff = sorted(k for k in set(reference) | set(certify_log.binding(s))
                      if reference.get(k) != s.get(k))
        if diff:
            raise MergeError(f"{path} differs from {paths[0]} in {', '.join(diff)}")
    for key in ("skip", "start", "max", "num_images"):
        values = {s.get(key) for s in settings}
        if len(values) > 1:
            raise MergeError(f"shards disagree on {key}: {sorted(map(str, values))}")
    rows = {}
    for path in paths:
        for row in certify_log.read_rows(path):
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
        columns = certify_log.HEADER.split("\t")
        tmp = outfile + ".tmp"
        with open(tmp, "w") as f:
            f.write(certify_log.HEADER + "\n")
            for idx in sorted(rows):
                f.write("\t".join(rows[idx][c] for c in columns) + "\n")
        with open(outfile + ".json", "w") as f:
            json.dump(merged_settings, f, indent=2, sort_keys=True)
        os.replace(tmp, outfile)
    return len(rows)

def main(argv):
    cli.require(argv, "logs", "outfile")
    n = merge_logs(FLAGS.logs, FLAGS.outfile, FLAGS.allow_gaps)
    print(f"{FLAGS.outfile}: {n} rows from {len(FLAGS.logs)} shards")


if __name__ == "__main__":
    cli.run(main, define_flags)
