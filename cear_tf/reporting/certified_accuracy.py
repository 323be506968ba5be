"""Certified accuracy and average certified radius (ACR) of certify logs.

Certified accuracy at r = fraction of logged images with `correct` and `radius >= r`
(abstentions count as wrong); ACR = mean radius over all logged images, counting 0 for
wrong or abstained ones.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from cear_tf.reporting.log_files import read_rows


def load_log(path: str, votes: str = "sound") -> tuple[np.ndarray, np.ndarray]:
    """(correct bool [n], radius [n]) of a log: its certificates, or with votes="pooled" its
    pooled member-vote columns (the released counting, NOT a certificate: log_files)."""
    return columns(log_rows(path), path, votes)


def log_rows(path: str) -> list[dict]:
    """The complete rows of the certify log at `path` (read_rows), refusing a missing log."""
    if not os.path.exists(path):
        raise ValueError(f"certify log {path} does not exist")
    return read_rows(path)


def columns(rows: list[dict], path: str, votes: str = "sound") -> tuple[np.ndarray, np.ndarray]:
    """load_log's (correct, radius) from rows already read from the log at `path`."""
    if not rows:
        raise ValueError(f"certify log {path} has no complete rows")
    prefix = {"sound": "", "pooled": "pooled_"}[votes]
    if prefix + "radius" not in rows[0]:
        raise ValueError(f"certify log {path} has no pooled member-vote columns (certify it "
                         f"with --votes=pooled)")
    correct = np.array([r[prefix + "correct"] in ("1", "True") for r in rows])
    radius = np.array([float(r[prefix + "radius"]) for r in rows])
    return correct, radius


def certified_accuracy(correct: np.ndarray, radius: np.ndarray, radii: Sequence[float]) -> np.ndarray:
    return np.array([np.mean(correct & (radius >= r)) for r in radii])


def average_certified_radius(correct: np.ndarray, radius: np.ndarray) -> float:
    return float(np.mean(np.where(correct, radius, 0.0)))


def summarize(named_paths: Sequence[tuple[str, str]], radii: Sequence[float]):
    """Rows [name, images, CA(r) in %, ACR] for each log."""
    table = []
    for name, path in named_paths:
        correct, radius = load_log(path)
        ca = certified_accuracy(correct, radius, radii)
        table.append([name, len(correct), *(100 * ca), average_certified_radius(correct, radius)])
    return table


def markdown_table(table, radii) -> str:
    header = ["log", "images", *[f"r={r:g}" for r in radii], "ACR"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, n, *rest in table:
        cas, acr = rest[:-1], rest[-1]
        lines.append("| " + " | ".join([name, str(n), *(f"{c:.1f}" for c in cas),
                                        f"{acr:.3f}"]) + " |")
    return "\n".join(lines)
