"""Markdown report: our measured certified accuracy beside the paper's Tables 4-6.

  python -m cear_tf.cli.report --runs=runs/mnist_sigma025_cpu,runs/mnist_sigma050_cpu \
      --report_dir=results/report

Each run folder is an experiment's output folder. Its experiment.json (written by
`python -m cear_tf.cli.run`) names the methods, their labels and logs, and the attack runs; no
file name is interpreted. Dataset, sigma, N and the image count come from each log's settings
file, epochs and architecture from the members' cear.json. Writes report.md and one
certified-accuracy-vs-radius PNG per run (like the paper's Figure 2).
"""

from __future__ import annotations

import os

from absl import flags

from cear_tf.cli import launch
from cear_tf.reporting import paper_tables, pooled_votes
from cear_tf.reporting.collection import collect
from cear_tf.reporting.document import build_report

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    flags.DEFINE_list("runs", None, "Experiment output folders holding certify/*.tsv logs.")
    flags.DEFINE_string("report_dir", "results/report", "Where report.md and the plots go.")
    flags.DEFINE_bool("plots", True, "Draw certified-accuracy-vs-radius plots (needs matplotlib).")
    flags.DEFINE_string("title", "cear_tf: measured certified accuracy beside the paper",
                        "The report's heading (say there what scale the runs are at).")
    flags.DEFINE_list("ablation_dir", None, "Also report the released-recipe ablation "
                      "(scripts/mnist_ablation.sh) found in this folder; several folders "
                      "(the same ablation with other ABLATION_SEED) add a table over seeds.")
    flags.DEFINE_list("pooled_runs", None, "Also compare the sound certificates with the released "
                      "code's pooled member votes (logs certified with --votes=pooled) in these "
                      "experiment folders, in <report_dir>/pooled_votes.md (not a certificate; "
                      "docs/deviations.md C1).")
    flags.DEFINE_string("collect_dir", None, "First copy each run's small files (certify and attack "
                        "logs with their settings, members' cear.json) to <collect_dir>/<run name>, "
                        "and report from there: the copy is what a repository keeps so the report "
                        "rebuilds without the models.")


def main(argv):
    launch.require(argv, "runs")
    runs = FLAGS.runs
    if FLAGS.collect_dir:
        runs = [collect(r, FLAGS.collect_dir) for r in runs]
    if FLAGS.pooled_runs:  # checked before the report is written
        text = pooled_votes.section(FLAGS.pooled_runs, paper_tables.RADII["mnist"])
    print(build_report(runs, FLAGS.report_dir, FLAGS.plots, FLAGS.ablation_dir, FLAGS.title))
    if FLAGS.pooled_runs:
        path = os.path.join(FLAGS.report_dir, "pooled_votes.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"pooled member votes: {path}")


if __name__ == "__main__":
    launch.run(main, define_flags)
