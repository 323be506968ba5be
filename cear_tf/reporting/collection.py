"""What a report reads from an experiment's output folder: the methods' logs with their
settings and members' metadata (from experiment.json, no file name interpreted), and a
copy of the small files a repository keeps so a report rebuilds without the models.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from absl import logging

from cear_tf.common.lazy import lazy_module
from cear_tf.config import experiment
from cear_tf.reporting import certified_accuracy

members = lazy_module("cear_tf.ensemble.members")  # loaded when used: --help without TensorFlow


def discover(run_dir: str) -> list[dict[str, Any]]:
    """One record per certified method of the run's experiment record: label, log,
    settings, member metadata (methods whose log does not exist yet are left out)."""
    rec = experiment.read_record(run_dir)
    records, accuracies = [], {}
    for m in rec["methods"]:
        path = m["log"]
        if not os.path.exists(path):
            continue
        settings_path = path + ".json"
        if not os.path.exists(settings_path):
            raise ValueError(f"{path}: no settings file {settings_path}")
        with open(settings_path) as f:
            settings = json.load(f)
        everyone = [_member_metadata(p, run_dir) for p in settings.get("models", [])]
        records.append(dict(method=m["label"], aggregation=m["aggregation"], path=path,
                            settings=settings, member=everyone[0] if everyone else {},
                            members=everyone, run=run_dir,
                            variance=rec.get("variance"),
                            member_accuracy=_member_accuracy(
                                rec["member_accuracy"].get(m["members"]), settings,
                                accuracies)))
    if not records:
        raise ValueError(f"--runs: no log of {run_dir}/{experiment.RECORD_NAME}'s methods "
                         f"exists yet")
    return records


def _member_accuracy(path: str | None, settings: dict, read: dict) -> dict | None:
    """The members' accuracies (cear_tf.cli.member_accuracy) of a certified method, or None
    where none were measured or they were measured on other members than the log's. `read`
    holds the files read so far: the methods of one member group share one."""
    if not path or not os.path.exists(path):
        return None
    if path not in read:
        with open(path) as f:
            read[path] = json.load(f)
    measured = read[path]
    certified = (settings.get("fingerprint") or {}).get("members")
    if certified is not None and measured.get("member_digests") != certified:
        logging.warning("%s: measured on other members than the certify log's; not reported",
                        path)
        return None
    return measured


def _member_metadata(model_dir: str, run_dir: str) -> dict:
    """cear.json of a member, at its recorded path or at the same place under run_dir."""
    if os.path.isdir(model_dir):
        return members.read_metadata(model_dir)
    parts = os.path.normpath(model_dir).split(os.sep)
    name = os.path.basename(os.path.normpath(run_dir))
    if name in parts:
        moved = os.path.join(run_dir, *parts[parts.index(name) + 1:])
        if os.path.isdir(moved):
            return members.read_metadata(moved)
    return {}


def collect(run_dir: str, collect_dir: str) -> str:
    """Copies a run's logs, attack results and members' cear.json; returns the copy's path."""
    import shutil
    target = os.path.join(collect_dir, os.path.basename(os.path.normpath(run_dir)))
    for root, _, files in os.walk(run_dir):
        rel = os.path.relpath(root, run_dir)
        if ".ckpt" in rel or ".logs" in rel or "variables" in rel.split(os.sep):
            continue
        for f in files:
            keep = (f in ("cear.json", "margin_variance.json", experiment.RECORD_NAME)
                    or f.startswith("weights_") and f.endswith(".json")
                    or rel.split(os.sep)[0] in ("certify", "attack")
                    and f.endswith((".tsv", ".tsv.json"))
                    or rel == "member_accuracy" and f.endswith(".json"))
            if keep:
                os.makedirs(os.path.join(target, rel), exist_ok=True)
                shutil.copy2(os.path.join(root, f), os.path.join(target, rel, f))
    return target


def read_log(path: str) -> dict[str, np.ndarray]:
    rows = certified_accuracy.log_rows(path)
    correct, radius = certified_accuracy.columns(rows, path)
    idx = np.array([int(r["idx"]) for r in rows])
    return dict(idx=idx, correct=correct, radius=radius)


def subset(log: dict[str, np.ndarray], keep) -> dict[str, np.ndarray]:
    mask = np.isin(log["idx"], list(keep))
    return {k: v[mask] for k, v in log.items()}
