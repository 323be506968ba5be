"""The stages of an experiment: the command lines of every entry point (train, member
accuracy, weights, certify, variance, attack, table) derived from an Experiment, in the order
that lets each stage find what the earlier ones wrote. cear_tf.cli.run runs them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

from cear_tf.config.experiment import (
    Experiment,
    Method,
    member_accuracy_files,
    member_accuracy_table,
)

MODULES = {"train": "cear_tf.cli.train", "member_accuracy": "cear_tf.cli.member_accuracy",
           "weights": "cear_tf.cli.weights",
           "certify": "cear_tf.cli.certify", "variance": "cear_tf.cli.variance",
           "attack": "cear_tf.cli.attack", "table": "cear_tf.cli.analyze"}


STAGE_KINDS = tuple(MODULES)


@dataclasses.dataclass(frozen=True)
class Stage:
    kind: str
    module: str
    args: tuple[str, ...]
    what: str


def flag_args(settings) -> list[str]:
    """Flag arguments for settings: True -> --name, False -> --noname, lists comma-joined."""
    args = []
    for name, value in dict(settings).items():
        if value is True:
            args.append(f"--{name}")
        elif value is False:
            args.append(f"--no{name}")
        elif isinstance(value, (list, tuple)):
            args.append(f"--{name}={','.join(str(v) for v in value)}")
        else:
            args.append(f"--{name}={value}")
    return args


def _common(exp: Experiment, data: bool = True, validation: bool = True,
            sigma: bool = True) -> list[str]:
    args = [f"--dataset={exp.dataset}"] if data else []
    if data and validation:
        args += [f"--validation_size={exp.validation_size}", f"--split_seed={exp.split_seed}"]
    if sigma:
        args.append(f"--sigma={exp.sigma:g}")
    args += [f"--seed={exp.seed}", f"--output_dir={exp.output_dir}"] if data else \
        [f"--output_dir={exp.output_dir}"]
    return args


def _weights_path(exp: Experiment, group: str, kind: str) -> str:
    """Beside the members (where cear_tf.cli.weights puts them by default), unless the members
    belong to another experiment: then in this one's folder, so its settings (e.g. clip)
    never meet the other's weights."""
    g = exp.group(group)
    if g.reuse:
        return os.path.join(exp.output_dir, "weights", f"{group}_{kind}.json")
    return os.path.join(g.model_dir, f"weights_{kind}.json")


def _certify_groups(exp: Experiment) -> list[tuple[str, tuple, list[Method], str | None]]:
    """Methods that can share one certify run (same members and extra flags) with the
    outfile template that names each log, or None when each needs its own run."""
    groups: dict[tuple, list[Method]] = {}
    for m in exp.methods:
        groups.setdefault((m.members, m.certify), []).append(m)
    out = []
    for (members, extra), ms in groups.items():
        templates = {_log_template(m) for m in ms}
        if len(ms) == 1:
            out.append((members, extra, ms, None))
        elif len(templates) == 1 and None not in templates:
            out.append((members, extra, ms, templates.pop()))
        else:
            out += [(members, extra, [m], None) for m in ms]
    return out


def _log_template(m: Method) -> str | None:
    """The log path with the aggregation's name in its file name made '{aggregation}'."""
    folder, name = os.path.split(m.log)
    if name.count(m.aggregation) != 1:
        return None
    return os.path.join(folder, name.replace(m.aggregation, "{aggregation}"))


def stages(exp: Experiment, kinds=STAGE_KINDS) -> list[Stage]:
    """The commands of the experiment's stages in pipeline order: member group by member group
    (teachers first), each group's weights, certification, margin variance and attacks right
    after it trains, so a row's log is finished before the next group starts training (on a
    slow machine the rows arrive one by one, not all at the end); the table last."""
    out: list[Stage] = []
    ensemble_flags = flag_args(exp.tables["ensemble"])
    teachers = {g.teacher for g in exp.members}
    order = sorted((g for g in exp.members if not g.reuse),
                   key=lambda g: (g.key not in teachers, g.teacher is not None))
    if "train" in kinds:
        for g in order:
            args = _common(exp) + flag_args(g.settings) + [f"--model_dir={g.model_dir}"]
            if g.teacher:
                args.append(f"--teacher_dir={exp.group(g.teacher).model_dir}")
            out.append(Stage("train", MODULES["train"], tuple(args), f"train {g.key}"))
    accuracy = member_accuracy_table(exp)
    if "member_accuracy" in kinds and accuracy is not None:
        for key, outfile in member_accuracy_files(exp).items():
            args = (_common(exp, validation=False) + flag_args(accuracy)
                    + [f"--models={exp.group(key).model_dir}", f"--outfile={outfile}"])
            out.append(Stage("member_accuracy", MODULES["member_accuracy"], tuple(args),
                             f"member accuracy of {key}"))
    if "weights" in kinds:
        done = set()
        for m in exp.methods:
            kind = {"rw": "rw", "sween": "sween"}.get(m.aggregation)
            if kind is None or (m.members, kind) in done:
                continue
            done.add((m.members, kind))
            args = (_common(exp) + ensemble_flags + flag_args(exp.tables[f"{kind}_weights"])
                    + [f"--models={exp.group(m.members).model_dir}", f"--aggregation={kind}",
                       f"--outfile={_weights_path(exp, m.members, kind)}"])
            out.append(Stage("weights", MODULES["weights"], tuple(args),
                             f"{kind} weights of {m.members}"))
    if "certify" in kinds:
        for members, extra, ms, template in _certify_groups(exp):
            aggregations = [m.aggregation for m in ms]
            args = (_common(exp) + ensemble_flags + flag_args(exp.tables["certify"])
                    + flag_args(extra)
                    + [f"--models={exp.group(members).model_dir}",
                       f"--aggregation={','.join(aggregations)}",
                       f"--outfile={template or ms[0].log}"])
            for kind in ("rw", "sween"):
                if kind in aggregations:
                    args.append(f"--{kind}_weights={_weights_path(exp, members, kind)}")
            out.append(Stage("certify", MODULES["certify"], tuple(args),
                             f"certify {', '.join(m.label for m in ms)}"))
    variance = dict(exp.tables["variance"])
    if "variance" in kinds and variance.get("enabled", True) and variance:
        variance.pop("enabled", None)
        group = exp.group(variance.pop("members"))
        outfile = os.path.join(exp.output_dir, variance.pop("outfile"))
        args = (_common(exp) + ensemble_flags + flag_args(variance)
                + [f"--models={group.model_dir}", f"--outfile={outfile}"])
        out.append(Stage("variance", MODULES["variance"], tuple(args),
                         f"margin variance of {group.key}"))
    if "attack" in kinds:
        for run in exp.attacks:
            method = exp.method(run.target)
            args = (_common(exp, validation=False, sigma=False) + ensemble_flags
                    + flag_args(run.settings)
                    + [f"--models={exp.group(method.members).model_dir}",
                       f"--aggregation={method.aggregation}", f"--outfile={run.log}"])
            for kind in ("rw", "sween"):
                if method.aggregation == kind:
                    args.append(f"--{kind}_weights={_weights_path(exp, method.members, kind)}")
            out.append(Stage("attack", MODULES["attack"], tuple(args),
                             f"attack {method.label}, {run.norm}, {run.mode}"))
    rows = [m for m in exp.methods if m.in_table]
    if "table" in kinds and rows:
        radii = exp.tables["table"].get("radii", [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
        args = [f"--output_dir={exp.output_dir}",
                "--logs=" + _list_flag(f"{m.label}={m.log}" for m in rows),
                "--radii=" + ",".join(str(r) for r in radii),
                f"--outfile={os.path.join(exp.output_dir, 'certified_accuracy.md')}",
                f"--csv_out={os.path.join(exp.output_dir, 'certified_accuracy.csv')}"]
        out.append(Stage("table", MODULES["table"], tuple(args), "table"))
    return _group_by_group(exp, out, [g.key for g in order])


def _list_flag(items) -> str:
    """A list flag's value as absl parses it (CSV): an item holding a comma or a quote, such
    as a label "CEAR(RW), 80 epochs", is quoted; any other stays as it is."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(list(items))
    return out.getvalue()


def _group_by_group(exp: Experiment, built: list[Stage], trained: list[str]) -> list[Stage]:
    """`built` (kind by kind) reordered member group by member group in training order;
    groups this experiment does not train (reused) come first, the table last. Within a
    group the kinds keep their order (train, weights, certify, variance, attack)."""
    rank = {key: i for i, key in enumerate(trained)}
    models = {exp.group(g.key).model_dir: g.key for g in exp.members}

    def group_rank(stage: Stage) -> int:
        if stage.kind == "table":
            return len(trained)
        flag = "--model_dir=" if stage.kind == "train" else "--models="
        model_dir = next(a[len(flag):] for a in stage.args if a.startswith(flag))
        return rank.get(models[model_dir], -1)

    return sorted(built, key=lambda s: (group_rank(s), STAGE_KINDS.index(s.kind)))
