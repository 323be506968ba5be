"""An experiment as data: one TOML file from which every stage of the pipeline is derived.

An experiment file names the data set, sigma and output folder, the member groups to train,
the methods to certify (each a member group under one aggregation, with its table label and
log), and the settings of each kind of stage. A file may extend others (`extends`, paths
relative to it): tables merge key by key, the extending file wins, so the paper scale and a
CPU scale differ by the few keys the smaller one overrides. `enabled = false` drops an
inherited member group, method or attack target.

    extends = ["mnist_sigma025.toml"]
    sigma = 1.0
    output_dir = "results/mnist_sigma100"

Tables (keys are the flag names of the entry point that reads them):
  [train]          every training run (cear_tf.cli.train)
  [members.<key>]  one training run: its flags over [train]; `teacher = "<key>"` names the
                   teacher group; `model_dir` defaults to <output_dir>/<key> ('{output_dir}'
                   in it is replaced); `reuse = true`: trained by another experiment (no
                   training stage here; the stages that read it need it to exist)
  [ensemble]       every stage that deploys an ensemble (weights, certify, variance, attack)
  [rw_weights], [sween_weights]   the weight fits (cear_tf.cli.weights), run for each member
                   group a method aggregates with rw or sween
  [certify]        every certification (cear_tf.cli.certify)
  [methods.<key>]  label, members, aggregation; optional log (default certify/<key>.tsv),
                   in_table (default true), certify (extra flags for this method)
  [variance]       optional: members and cear_tf.cli.variance flags
  [member_accuracy]  optional: cear_tf.cli.member_accuracy flags; each member group a method
                   certifies gets its members' clean and noisy test accuracy at sigma,
                   written to <output_dir>/member_accuracy/<group>.json
  [attack], [attacks]  optional: flags of every attack; targets (method keys), norms
                   ({name = eps}), modes ({name = {flags}})
  [table]          radii of the table (cear_tf.cli.analyze)

`load` resolves a file into an `Experiment`; `stages` derives the commands; `record` is what
the runner writes to <output_dir>/experiment.json, which the report reads.
"""

from __future__ import annotations

import dataclasses
import json
import os

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from typing import Any

RECORD_NAME = "experiment.json"

# Settings of the whole experiment and the stage kinds that read each.
_DATA_KEYS = ("dataset", "validation_size", "split_seed")
_RUN_KEYS = ("sigma", "seed", "output_dir")
_TABLES = ("train", "members", "ensemble", "rw_weights", "sween_weights", "certify", "methods",
           "variance", "member_accuracy", "attack", "attacks", "table")
_TOP_KEYS = ("title", "extends", "dataset", "sigma", "output_dir", "validation_size",
             "split_seed", "seed")


class ExperimentError(ValueError):
    """An experiment file that cannot be used: the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class MemberGroup:
    key: str
    model_dir: str
    settings: tuple[tuple[str, Any], ...]  # cear_tf.cli.train flags, [train] merged in
    teacher: str | None = None             # key of the teacher group
    reuse: bool = False                    # trained by another experiment: no train stage


@dataclasses.dataclass(frozen=True)
class Method:
    key: str
    label: str
    members: str          # key of a member group
    aggregation: str
    log: str              # path of the certify log
    in_table: bool = True
    certify: tuple[tuple[str, Any], ...] = ()  # extra cear_tf.cli.certify flags


@dataclasses.dataclass(frozen=True)
class AttackRun:
    target: str           # method key
    norm: str
    mode: str
    settings: tuple[tuple[str, Any], ...]
    log: str


@dataclasses.dataclass(frozen=True)
class Experiment:
    path: str
    title: str
    dataset: str
    sigma: float
    output_dir: str
    validation_size: int
    split_seed: int
    seed: int
    members: tuple[MemberGroup, ...]
    methods: tuple[Method, ...]
    tables: dict[str, dict[str, Any]]  # the stage-kind tables as merged
    attacks: tuple[AttackRun, ...] = ()

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]

    def group(self, key: str) -> MemberGroup:
        for g in self.members:
            if g.key == key:
                return g
        raise KeyError(key)

    def method(self, key: str) -> Method:
        for m in self.methods:
            if m.key == key:
                return m
        raise KeyError(key)


# -- loading -------------------------------------------------------------------------------

def _read(path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = os.path.normpath(path)
    if path in seen:
        raise ExperimentError(f"{path}: 'extends' makes a cycle ({' -> '.join(seen + (path,))})")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        where = f" (extended by {seen[-1]})" if seen else ""
        raise ExperimentError(f"{path}: experiment file not found{where}") from None
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        where = f", extended by {seen[-1]}" if seen else ""
        raise ExperimentError(f"{path}: cannot read the experiment file ({e.strerror}"
                              f"{where})") from None
    unknown = sorted(set(raw) - set(_TOP_KEYS) - set(_TABLES))
    if unknown:
        raise ExperimentError(f"{path}: unknown key(s) {', '.join(unknown)} (known: "
                              f"{', '.join(_TOP_KEYS + _TABLES)})")
    parents = raw.pop("extends", [])
    if isinstance(parents, str):
        parents = [parents]
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = _merge(merged, _read(os.path.join(os.path.dirname(path), parent), seen + (path,)))
    # A title describes its own file only: one that extends another says what it changes.
    merged.pop("title", None)
    return _merge(merged, raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _need(raw: dict, key: str, kind, path: str, where: str = ""):
    if key not in raw:
        raise ExperimentError(f"{path}: {where}'{key}' is missing")
    value = raw[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ExperimentError(f"{path}: {where}'{key}' must be {kind.__name__}, got {value!r}")
    return value


def _enabled(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: {kk: vv for kk, vv in v.items() if kk != "enabled"}
            for k, v in table.items() if isinstance(v, dict) and v.get("enabled", True)}


def parse_override(text: str) -> tuple[list[str], Any]:
    """'certify.N=1000' -> (['certify', 'N'], 1000): a dotted key and a TOML value (a bare
    word that is not TOML is a string)."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise ExperimentError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. "
                              f"certify.N=1000")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return [p.strip() for p in parts], parsed


def load(path: str, output_dir: str | None = None, overrides=()) -> Experiment:
    """Reads an experiment file (and the files it extends); `output_dir` replaces its
    output folder (e.g. a committed copy of a run under results/); `overrides` are
    'dotted.key=value' strings applied last (parse_override)."""
    raw = _read(path)
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        if keys[0] not in _TOP_KEYS + _TABLES:
            raise ExperimentError(f"--set {text!r}: unknown key {keys[0]!r}")
        raw = _merge(raw, nested)
    out = output_dir or _need(raw, "output_dir", str, path)
    title = raw.get("title", os.path.basename(path))
    tables = {t: raw.get(t, {}) for t in _TABLES}
    for t, v in tables.items():
        if not isinstance(v, dict):
            raise ExperimentError(f"{path}: [{t}] must be a table, got {v!r}")

    groups_raw = _enabled(tables["members"])
    groups = []
    for key, g in groups_raw.items():
        g = dict(g)
        teacher = g.pop("teacher", None)
        reuse = bool(g.pop("reuse", False))
        if reuse:
            teacher = None  # trained elsewhere
        if teacher is not None and teacher not in groups_raw:
            raise ExperimentError(f"{path}: [members.{key}] teacher = {teacher!r} names no "
                                  f"member group (groups: {', '.join(groups_raw)})")
        model_dir = os.path.normpath(
            g.pop("model_dir", os.path.join(out, key)).replace("{output_dir}", out))
        settings = _merge(tables["train"], g)
        groups.append(MemberGroup(key, model_dir, tuple(settings.items()), teacher, reuse))

    methods = []
    for key, m in _enabled(tables["methods"]).items():
        where = f"[methods.{key}] "
        members = _need(m, "members", str, path, where)
        if members not in groups_raw:
            raise ExperimentError(f"{path}: {where}members = {members!r} names no member group "
                                  f"(groups: {', '.join(groups_raw)})")
        unknown = set(m) - {"label", "members", "aggregation", "log", "in_table", "certify"}
        if unknown:
            raise ExperimentError(f"{path}: {where}unknown key(s) {', '.join(sorted(unknown))}")
        methods.append(Method(
            key=key, label=m.get("label", key), members=members,
            aggregation=_need(m, "aggregation", str, path, where),
            log=os.path.join(out, m.get("log", os.path.join("certify", key + ".tsv"))),
            in_table=bool(m.get("in_table", True)),
            certify=tuple((k, tuple(v) if isinstance(v, list) else v)
                          for k, v in m.get("certify", {}).items())))
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ExperimentError(f"{path}: two methods share a label ({labels})")

    variance = _enabled({"variance": tables["variance"]}).get("variance")
    if variance:
        where = "[variance] "
        if _need(variance, "members", str, path, where) not in groups_raw:
            raise ExperimentError(f"{path}: {where}members = {variance['members']!r} names no "
                                  f"member group (groups: {', '.join(groups_raw)})")
        _need(variance, "outfile", str, path, where)
    reserved = {"models", "outfile"} & set(tables["member_accuracy"])
    if reserved:
        raise ExperimentError(f"{path}: [member_accuracy] sets {', '.join(sorted(reserved))}, "
                              f"which the runner sets (each certified member group, "
                              f"<output_dir>/member_accuracy/<group>.json)")
    exp = Experiment(
        path=path, title=title, dataset=_need(raw, "dataset", str, path),
        sigma=_need(raw, "sigma", float, path), output_dir=out,
        validation_size=int(raw.get("validation_size", 5000)),
        split_seed=int(raw.get("split_seed", 0)), seed=int(raw.get("seed", 0)),
        members=tuple(groups), methods=tuple(methods), tables=tables)
    return dataclasses.replace(exp, attacks=tuple(_attack_runs(exp, path)))


def _attack_runs(exp: Experiment, path: str) -> list[AttackRun]:
    spec = exp.tables["attacks"]
    if not spec:
        return []
    runs = []
    modes = _enabled(spec.get("modes", {}))
    norms = spec.get("norms", {})
    if spec.get("targets") and not (modes and norms):
        raise ExperimentError(f"{path}: [attacks] has targets but no norms ({{name = eps}}) "
                              f"or no modes ([attacks.modes.<name>])")
    for target in spec.get("targets", []):
        try:
            method = exp.method(target)
        except KeyError:
            raise ExperimentError(f"{path}: [attacks] target {target!r} names no method "
                                  f"(methods: {', '.join(m.key for m in exp.methods)})") from None
        for norm, eps in norms.items():
            for mode, settings in modes.items():
                settings = dict(settings)
                suffix = settings.pop("log_suffix", "")
                if method.aggregation == "single" and settings.get("source") == "members":
                    settings["source"] = "member:0"  # one member: transfer from it
                norm_flag = {"l2": "2", "linf": "inf"}.get(norm, norm)
                runs.append(AttackRun(
                    target, norm, mode,
                    tuple(_merge(exp.tables["attack"], dict(settings, norm=norm_flag,
                                                            eps=eps)).items()),
                    os.path.join(exp.output_dir, "attack", f"{target}_{norm}{suffix}.tsv")))
    return runs


# -- deriving the stages -------------------------------------------------------------------


def member_accuracy_table(exp: Experiment) -> dict[str, Any] | None:
    """The [member_accuracy] flags, or None where the table is absent or disabled."""
    return _enabled({"member_accuracy": exp.tables["member_accuracy"]}).get(
        "member_accuracy") or None


def member_accuracy_files(exp: Experiment) -> dict[str, str]:
    """{member group: its member-accuracy JSON} for the groups the methods certify, in the
    order the methods name them (none without a [member_accuracy] table)."""
    if member_accuracy_table(exp) is None:
        return {}
    keys = dict.fromkeys(m.members for m in exp.methods)
    return {k: os.path.join(exp.output_dir, "member_accuracy", f"{k}.json") for k in keys}


# -- the record the report reads -----------------------------------------------------------

def record(exp: Experiment) -> dict[str, Any]:
    """What a run folder keeps about its experiment (paths relative to the folder)."""
    rel = lambda p: os.path.relpath(p, exp.output_dir)  # noqa: E731
    variance = exp.tables["variance"]
    return {
        "experiment": exp.name, "title": exp.title, "dataset": exp.dataset,
        "sigma": exp.sigma,
        "methods": [{"key": m.key, "label": m.label, "members": m.members,
                     "aggregation": m.aggregation, "log": rel(m.log), "in_table": m.in_table}
                    for m in exp.methods],
        "attacks": [{"target": exp.method(a.target).label, "norm": a.norm, "mode": a.mode,
                     "log": rel(a.log)} for a in exp.attacks],
        "variance": (rel(os.path.join(exp.output_dir, variance["outfile"]))
                     if variance.get("outfile") and variance.get("enabled", True) else None),
        "member_accuracy": {k: rel(p) for k, p in member_accuracy_files(exp).items()},
    }


def write_record(exp: Experiment) -> str:
    """Writes (or extends) <output_dir>/experiment.json. Experiments that share a folder
    (an attack experiment adds its runs to the ensembles' folder) add their methods and
    attacks to the record; one of another data set or sigma is refused, so a folder's logs
    never mix settings."""
    os.makedirs(exp.output_dir, exist_ok=True)
    path = os.path.join(exp.output_dir, RECORD_NAME)
    new = record(exp)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if (old.get("dataset"), old.get("sigma")) != (new["dataset"], new["sigma"]):
            raise ExperimentError(
                f"{exp.path}: output_dir {exp.output_dir} holds experiment "
                f"{old.get('experiment')!r} ({old.get('dataset')}, sigma {old.get('sigma')}); "
                f"this one is {new['dataset']}, sigma {new['sigma']:g}: give it its own output_dir")
        for key in ("methods", "attacks"):
            logs = {item["log"] for item in new[key]}
            new[key] = [item for item in old.get(key, []) if item["log"] not in logs] + new[key]
        new["variance"] = new["variance"] or old.get("variance")
        new["member_accuracy"] = {**old.get("member_accuracy", {}), **new["member_accuracy"]}
        if old.get("experiment") != new["experiment"]:
            new["experiment"], new["title"] = old["experiment"], old["title"]
    text = json.dumps(new, indent=1) + "\n"
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def read_record(run_dir: str) -> dict[str, Any]:
    """The experiment record of a run folder, its paths made relative to the working dir."""
    path = os.path.join(run_dir, RECORD_NAME)
    if not os.path.exists(path):
        raise ExperimentError(f"{run_dir}: no {RECORD_NAME} (written by python -m cear_tf.cli.run; "
                              f"for a copied run: python -m cear_tf.cli.run --experiment=<file> "
                              f"--output_dir={run_dir} --stages=record)")
    with open(path) as f:
        rec = json.load(f)
    for m in rec["methods"]:
        m["log"] = os.path.join(run_dir, m["log"])
    for a in rec.get("attacks", []):
        a["log"] = os.path.join(run_dir, a["log"])
    if rec.get("variance"):
        rec["variance"] = os.path.join(run_dir, rec["variance"])
    rec["member_accuracy"] = {k: os.path.join(run_dir, p)
                              for k, p in rec.get("member_accuracy", {}).items()}
    return rec
