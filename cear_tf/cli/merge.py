"""Joins the logs of a sharded certification into one log, checking gaps and duplicates.

  python -m cear_tf.cli.certify ... --shard=0/4 --outfile=runs/c_shard0.tsv   # on 4 machines
  python -m cear_tf.cli.merge --logs=runs/c_shard0.tsv,...,runs/c_shard3.tsv \
      --outfile=runs/c.tsv

Shards must share every setting that determines a row (models, sigma, N, seed, ...); the
image selection (skip, max) must agree too, and together the shards must cover it: a
missing image is an error unless --allow_gaps. A row present in two shards must be
identical (time aside), since the noise of an image depends only on (seed, idx).
"""

from __future__ import annotations

from absl import flags

from cear_tf.cli import launch
from cear_tf.reporting import log_files

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    flags.DEFINE_list("logs", None, "The shard logs to merge.")
    flags.DEFINE_string("outfile", None, "Where the merged log goes (its settings beside it).")
    flags.DEFINE_bool("allow_gaps", False, "Write the merged log even if images are missing.")


def main(argv):
    launch.require(argv, "logs", "outfile")
    n = log_files.merge_logs(FLAGS.logs, FLAGS.outfile, FLAGS.allow_gaps)
    print(f"{FLAGS.outfile}: {n} rows from {len(FLAGS.logs)} shards")


if __name__ == "__main__":
    launch.run(main, define_flags)
