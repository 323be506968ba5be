"""Certified accuracy per radius and ACR from certify logs, several logs side by side.

  python -m cear_tf.cli.analyze --logs=runs/certify_mean.tsv,runs/certify_gm.tsv \
      --radii=0,0.25,0.5,0.75,1.0 [--csv_out=table.csv]

Certified accuracy at r = fraction of logged images with `correct` and `radius >= r`
(abstentions count as wrong); ACR = mean radius over all logged images, counting 0 for
wrong or abstained ones. A log is named by its file name, or by NAME=PATH.
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

from absl import flags

from cear_tf.cli import common_flags, launch
from cear_tf.reporting.certified_accuracy import markdown_table, summarize

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    common_flags.define_output_dir()
    flags.DEFINE_list("logs", None, "Certify logs (PATH or NAME=PATH), comma-separated; an "
                      "entry holding a comma is double-quoted, CSV-style.")
    flags.DEFINE_list("radii", ["0", "0.25", "0.5", "0.75", "1.0", "1.25", "1.5", "1.75", "2.0"],
                      "Radii at which certified accuracy is reported.")
    flags.DEFINE_string("csv_out", None, "Also write the table as CSV here ('{output_dir}' is "
                        "replaced by --output_dir).")
    flags.DEFINE_string("outfile", None, "Also write the markdown table here ('{output_dir}' "
                        "is replaced by --output_dir).")

    flags.register_validator(
        "radii", lambda v: len(v) > 0 and all(_is_nonnegative_number(r) for r in v),
        message="--radii must be a non-empty list of numbers >= 0")


def _is_nonnegative_number(s):
    try:
        return float(s) >= 0
    except ValueError:
        return False


def parse_named(entries: Sequence[str]) -> list[tuple[str, str]]:
    """PATH or NAME=PATH; names and paths may both hold '=', so the split is taken at the
    first '=' whose right side exists (else at the first '=', and load_log reports it)."""
    out = []
    for e in entries:
        splits = [i for i, c in enumerate(e) if c == "="]
        if not splits or os.path.exists(e):
            out.append((os.path.splitext(os.path.basename(e))[0], e))
            continue
        i = next((i for i in splits if os.path.exists(e[i + 1:])), splits[0])
        out.append((e[:i], e[i + 1:]))
    return out

def main(argv):
    launch.require(argv, "logs")
    radii = [float(r) for r in FLAGS.radii]
    table = summarize(parse_named([common_flags.expand_path(e) for e in FLAGS.logs]), radii)
    text = markdown_table(table, radii)
    print(text)
    written = []
    if FLAGS.outfile:
        path = common_flags.expand_path(FLAGS.outfile)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")
        written.append(path)
    if FLAGS.csv_out:
        path = common_flags.expand_path(FLAGS.csv_out)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["log", "images", *[f"{r:g}" for r in radii], "acr"])
            for name, n, *rest in table:
                w.writerow([name, n, *(f"{v:.4f}" for v in rest)])
        written.append(path)
    if written:  # the last line says where the table went
        print(f"table: {' and '.join(written)}")


if __name__ == "__main__":
    launch.run(main, define_flags)
