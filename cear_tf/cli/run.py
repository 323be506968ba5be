"""Runs an experiment: every stage derived from one experiment file (cear_tf.config.experiment).

  python -m cear_tf.cli.run --experiment=flags/mnist_sigma100.toml [--data_dir=...] \
      [--stages=train,weights,certify,variance,attack,table] [--dry_run]
      [--write_flagfiles=DIR] [-- extra stage flags]

Before anything runs, every stage's flags are parsed by its entry point (a typo or a bad value
in the experiment file stops the run in seconds, with the stage named). Stages then run in
order, each as its own process (`python -m cear_tf.cli.<entry point> ...`, the command printed
first); the run stops at the first that fails. Every stage skips finished
work (exported members, existing weights, complete log rows), so a rerun continues where the
last one stopped; a stage whose whole output is already on disk is not even started (the
flag check asks it, without TensorFlow), so a finished run costs no TensorFlow start-up.
Flags after `--` go to every stage (e.g. `-- --start=2160 --max=3500` to
certify a range of images first); a stage that does not read one ignores it. The experiment
record (<output_dir>/experiment.json: methods, labels, logs) is written first; the report
reads it. `--stages=record` writes only the record (e.g. for a copied run folder with
`--output_dir`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from absl import app, flags, logging

from cear_tf.cli import launch
from cear_tf.config import experiment, stages

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    flags.DEFINE_string("experiment", None, "Experiment file (flags/*.toml).")
    flags.DEFINE_list("stages", list(stages.STAGE_KINDS),
                      f"Stage kinds to run, in pipeline order: "
                      f"{', '.join(stages.STAGE_KINDS)}; 'record' writes only "
                      f"<output_dir>/experiment.json.")
    flags.DEFINE_string("data_dir", None, "Local copy of the data set, passed to every stage "
                        "that reads data (see cear_tf.data.datasets); unset: tensorflow-datasets.")
    flags.DEFINE_string("output_dir", None, "Replaces the experiment's output_dir.")
    flags.DEFINE_multi_string("set", [], "KEY=VALUE: overrides one setting of the experiment "
                              "file, the key dotted as in the file, the value in TOML "
                              "(e.g. --set=certify.N=1000 --set=train.epochs=2); repeatable.")
    flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")
    flags.DEFINE_string("write_flagfiles", None, "Write each stage's flags to an absl flagfile "
                        "in this folder (<NN>_<stage>.flags, one flag a line) and print the "
                        "commands that run them alone (python -m cear_tf.cli.<stage> "
                        "--flagfile=...); run nothing.")
    flags.register_validator(
        "stages", lambda v: all(s in stages.STAGE_KINDS + ("record",) for s in v),
        message=f"--stages must name stage kinds from "
                f"{', '.join(stages.STAGE_KINDS + ('record',))}")
    flags.register_validator("data_dir", lambda v: v is None or os.path.exists(v),
                             message="--data_dir must be an existing directory or archive")


def _extra_args(argv: list[str]) -> list[str]:
    extra = argv[1:]
    bad = [a for a in extra if not a.startswith("--")]
    if bad:
        raise ValueError(f"unexpected argument(s) {' '.join(bad)}: stage flags go after "
                         f"'--' as --name=value")
    if extra:
        names = _flag_names(extra)
        # a negated boolean (--nofuse_members) is undefined under its own name
        names = sorted({n[2:] for n in names if n.startswith("no") and n[2:]} | set(names))
        extra = extra + [f"--undefok={','.join(names)}"]
    return extra


def commands(exp: experiment.Experiment, kinds, data_dir: str | None,
             extra: list[str]) -> list[tuple[stages.Stage, list[str]]]:
    out = []
    for stage in stages.stages(exp, kinds):
        args = list(stage.args)
        if data_dir and stage.kind != "table":
            args.append(f"--data_dir={data_dir}")
        if stage.kind == "train":
            args.append("--verbose=2")
        out.append((stage, [sys.executable, "-m", stage.module, *args, *extra]))
    return out


def write_flagfiles(plan, folder: str) -> list[tuple[str, "stages.Stage"]]:
    """One absl flagfile per stage, `<folder>/<NN>_<slug of the stage>.flags`, holding the
    flags its command line would pass, one a line: `python -m <module> --flagfile=<file>`
    runs the stage alone, as the original TensorFlow stack runs its programs."""
    os.makedirs(folder, exist_ok=True)
    written = []
    for n, (stage, cmd) in enumerate(plan, start=1):
        slug = "".join(c if c.isalnum() else "_" for c in stage.what.lower()).strip("_")
        path = os.path.join(folder, f"{n:02d}_{slug[:60]}.flags")
        flag_args = cmd[3:]  # after python -m <module>
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(f"# {stage.what}: python -m {stage.module} --flagfile={path}\n")
            f.write("".join(f"{arg}\n" for arg in flag_args))
        os.replace(path + ".tmp", path)
        written.append((path, stage))
    return written


def _flag_names(extra: list[str]) -> list[str]:
    return sorted({a[2:].split("=", 1)[0] for a in extra if not a.startswith("--undefok=")})


def _check_every_stage(plan, extra: list[str]) -> set[int]:
    """Parses every stage's flags with its entry point (launch.CHECK_FLAGS_ONLY: no work, no
    TensorFlow) and raises ValueError naming the first stage whose flags are refused, or a
    flag after '--' that no stage kind defines (undefok would otherwise drop a typo
    silently). Returns the positions in `plan` of the stages whose work is already on disk
    (launch.DONE_MARK), which the run then skips without starting them."""
    env = dict(os.environ, **{launch.CHECK_FLAGS_ONLY: "1"})
    defined: set[str] = set()
    finished = set()
    for position, (stage, cmd) in enumerate(plan):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            lines = [line for line in out.stderr.splitlines() if line.strip()]
            why = next((line for line in lines if "error" in line.lower()), lines[-1] if lines
                       else f"status {out.returncode}")
            raise ValueError(f"{FLAGS.experiment}: stage '{stage.what}' ({stage.module}) "
                             f"refuses its flags: {why.strip()}")
        names = out.stdout.split()
        if launch.DONE_MARK in names:
            finished.add(position)
        defined.update(names)
    # A flag may be meant for a stage kind this experiment (or --stages) leaves out: a driver
    # passes one set of flags to many experiments. Only a name no stage kind defines is a typo.
    checked = {stage.module for stage, _ in plan}
    for module in sorted(set(stages.MODULES.values()) - checked):
        out = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True,
                             text=True)
        defined.update(out.stdout.split())
    unknown = [n for n in _flag_names(extra)
               if n not in defined and not (n.startswith("no") and n[2:] in defined)]
    if unknown and plan:
        raise ValueError(f"{FLAGS.experiment}: no stage kind defines "
                         f"{', '.join('--' + n for n in unknown)} (flags after '--' go to "
                         f"every stage; see python -m cear_tf.cli.<stage> --helpfull)")
    return finished


def main(argv):
    if not FLAGS.experiment:
        raise app.UsageError("--experiment is required (a flags/*.toml file)")
    exp = experiment.load(FLAGS.experiment, output_dir=FLAGS.output_dir, overrides=FLAGS.set)
    extra = _extra_args(argv)
    kinds = [k for k in stages.STAGE_KINDS if k in FLAGS.stages]
    plan = commands(exp, kinds, FLAGS.data_dir, extra)
    if FLAGS.dry_run:
        for stage, cmd in plan:
            print(f"# {stage.what}\n{shlex.join(['python', *cmd[1:]])}")
        return 0
    if FLAGS.write_flagfiles:
        for path, stage in write_flagfiles(plan, FLAGS.write_flagfiles):
            print(f"# {stage.what}\npython -m {stage.module} --flagfile={path}")
        return 0
    # A typo in the experiment stops it here, not hours later.
    finished = _check_every_stage(plan, extra)
    record = experiment.write_record(exp)
    logging.info("experiment %s: %d stages; record %s", exp.name, len(plan), record)
    start = time.time()
    for position, (stage, cmd) in enumerate(plan):
        if position in finished:
            sys.stderr.write(f"== {time.strftime('%H:%M:%S')} {stage.what}: finished "
                             f"(its output is on disk; skipped)\n")
            continue
        sys.stderr.write(f"== {time.strftime('%H:%M:%S')} {stage.what}: "
                         f"{shlex.join(['python', *cmd[1:]])}\n")
        sys.stderr.flush()
        code = subprocess.call(cmd)
        if code != 0:
            sys.stderr.write(f"cear_tf.cli.run: error: stage '{stage.what}' ({stage.module}) "
                             f"ended with status {code}; rerun to resume\n")
            return code
    if plan:
        sys.stderr.write(f"== {exp.name}: {len(plan)} stages in {time.time() - start:.0f} s; "
                         f"results in {exp.output_dir}\n")
    return 0


if __name__ == "__main__":
    launch.run(main, define_flags)
