"""Certified accuracy per radius and ACR from certify logs, several logs side by side.

  python -m cear_tf.cli.analyze --logs=runs/certify_mean.tsv,runs/certify_gm.tsv \
      --radii=0,0.25,0.5,0.75,1.0 [--csv_out=table.csv]

Certified accuracy at r = fraction of logged images with `correct` and `radius >= r`
(abstentions count as wrong); ACR = mean radius over all logged images, counting 0 for
wrong or abstained ones. A log is named by its file name, or by NAME=PATH.

With --paired_against=NAME every other log is also compared with the log NAME image by
image, on the images both hold: at each radius, how many each certifies, how many only one
of them certifies, and the exact two-sided McNemar p-value of those discordant images
(cear_tf.reporting.paired). The p-values are per cell, not corrected for the number of
cells compared.

  python -m cear_tf.cli.analyze --logs=CEAR=runs/cear_rw.tsv,RS=runs/randsmooth.tsv \
      --radii=0,0.5,1.0 --paired_against=RS
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

from absl import flags

from cear_tf.cli import common_flags, launch
from cear_tf.reporting import paired
from cear_tf.reporting.certified_accuracy import markdown_table, summarize
from cear_tf.reporting.collection import read_log

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
    flags.DEFINE_string("paired_against", None, "The name of one of --logs: every other log "
                        "is compared with it image by image (certified-at-r counts on the "
                        "images both hold, exact McNemar p-values, uncorrected); the table "
                        "follows the certified-accuracy table, in --outfile too.")

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


def paired_table(named_paths: Sequence[tuple[str, str]], reference: str,
                 radii: Sequence[float]) -> str:
    """Markdown: one row per log other than `reference`, one cell per radius,
    'a vs b of n (+a_only/-b_only, p = ...)' with a the row's count and b the reference's."""
    logs = {name: read_log(path) for name, path in named_paths}
    header = ["log", *[f"r={r:g}" for r in radii]]
    lines = [f"Paired against {reference} (images certified at r: this log vs {reference}, "
             f"of the images both hold; +only this log / -only {reference}; exact McNemar, "
             f"uncorrected):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, _ in named_paths:
        if name == reference:
            continue
        cells = [paired.describe(p) for p in paired.compare(logs[name], logs[reference], radii)]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def main(argv):
    launch.require(argv, "logs")
    radii = [float(r) for r in FLAGS.radii]
    named = parse_named([common_flags.expand_path(e) for e in FLAGS.logs])
    reference = FLAGS.paired_against
    if reference is not None:
        names = [name for name, _ in named]
        if reference not in names:
            raise ValueError(f"--paired_against: {reference!r} is not the name of one of "
                             f"--logs ({', '.join(names)})")
        if len(names) < 2:
            raise ValueError("--paired_against: --logs needs a second log to compare with it")
    table = summarize(named, radii)
    text = markdown_table(table, radii)
    if reference is not None:
        text += "\n\n" + paired_table(named, reference, radii)
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
