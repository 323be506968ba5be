"""The released-recipe ablation's tables (scripts/mnist_ablation.sh): each variant's rows,
their paired change from the variant they modify, and the same over member seeds.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from cear_tf.config import experiment
from cear_tf.reporting import certified_accuracy, paper_tables
from cear_tf.reporting.collection import read_log
from cear_tf.reporting.formatting import points, signed_acr, signed_points

ABLATION_VARIANTS = (
    ("base", "cear_tf's recipe"), ("train_clip", "+ clip in training"),
    ("certify_clip", "+ clip in certification"),
    ("clip", "+ clip in training and certification"), ("fixed_copy", "+ fixed noisy copy"),
    ("network", "+ released CNN"), ("student_loss", "+ released student loss"),
    ("optimizer", "+ Adam (released students)"), ("vga_rule", "+ released VGA rule"),
    ("all", "all released choices"),
    ("released_epochs", "all released choices, RandSmooth 75 epochs"),
    ("all_released_rw", "all released choices, RW weights as released (A2)"),
    ("all_keyed_draws", "all released choices, students 20 epochs with the keyed training "
                        "draws"),
    # Trained after the training draws were keyed (2026-12-07), unlike `all`'s students:
    # measured from `all_keyed_draws` (the same draws at 20 epochs) where it is certified,
    # else from `all` (then the change is the epochs and other draws of the same seeds).
    ("all_80_epochs", "all released choices, students 80 epochs (and keyed training draws)"),
    ("all_80_epochs_released_rw", "all released choices, students 80 epochs (and keyed "
                                  "training draws), RW weights as released (A2)"))


# A variant that changes another variant rather than the base: the rows it does not certify
# are the first of its references' that has them, and its changes are measured from the
# first that certified the same row.
ABLATION_REFERENCE = {"released_epochs": ("all",), "all_released_rw": ("all",),
                      "all_80_epochs": ("all_keyed_draws", "all"),
                      "all_80_epochs_released_rw": ("all_80_epochs",),
                      "all_keyed_draws": ("all",)}


def _reference_of(variant: str, row: str, own: dict) -> str:
    """The variant whose log of `row` a variant's row is measured from, or inherits: its first
    reference that certified the row, else the base."""
    for reference in ABLATION_REFERENCE.get(variant, ()):
        if (reference, row) in own:
            return reference
    return "base"


def _per_image(log, radii):
    """Per image: certified-correct at each radius (n x len(radii), 0/1) and the radius
    counted by ACR (0 where abstained or wrong), ordered by test index."""
    order = np.argsort(log["idx"])
    correct, radius = log["correct"][order], log["radius"][order]
    hit = np.array([[c and r >= t for t in radii] for c, r in zip(correct, radius)], float)
    return log["idx"][order], hit.reshape(len(order), len(radii)), np.where(correct, radius, 0.0)


def _paired_differences(log, base_log, radii):
    """Per image certified by both: the variant's minus the base's certified-correct
    indicator at each radius (n x len(radii)) and radius counted by ACR (n); None below 2
    common images."""
    idx, hit, acr = _per_image(log, radii)
    bidx, bhit, bacr = _per_image(base_log, radii)
    common = np.intersect1d(idx, bidx)
    if len(common) < 2:
        return None
    a, b = np.isin(idx, common), np.isin(bidx, common)
    return hit[a] - bhit[b], acr[a] - bacr[b]


def _paired_change(log, base_log, radii) -> str:
    """The change from the base on the images both certified: points at each radius and ACR,
    '*' where it exceeds two paired standard errors (per-image differences, so the shared
    images' difficulty cancels)."""
    diffs = _paired_differences(log, base_log, radii)
    if diffs is None:
        return ""
    hit, acr = diffs
    def cell(d, fmt, scale):
        mean, se = d.mean(), d.std(ddof=1) / np.sqrt(len(d))
        star = "*" if se > 0 and abs(mean) > 2 * se else ""
        return f"{fmt(scale * mean)}{star}"
    cells = " ".join(cell(hit[:, j], signed_points, 100) for j in range(len(radii)))
    return f"{cells} (ACR {cell(acr, signed_acr, 1)}; {len(acr)} images)"


def _ablation_rows(root: str):
    """(variant, variant label, row label, log, log is the reference's) for every certified
    row of the ablation under `root`, in the variants' order; a variant's row it does not
    change is its reference variant's log (the base's unless ABLATION_REFERENCE says)."""
    own: dict[tuple[str, str], dict] = {}  # (variant, row) -> the variant's own log
    base_rows: list[str] = []  # the base's row labels, in its order
    out = []
    for variant, variant_label in ABLATION_VARIANTS:
        folder = os.path.join(root, variant)
        if not os.path.exists(os.path.join(folder, experiment.RECORD_NAME)):
            continue  # not run yet
        logs = {m["label"]: m["log"] for m in experiment.read_record(folder)["methods"]
                if os.path.exists(m["log"])}
        if not logs:
            continue
        if variant == "base":
            base_rows = list(logs)
        own.update({(variant, row): read_log(path) for row, path in logs.items()})
        for row in base_rows + [r for r in logs if r not in base_rows]:
            if row in logs:
                out.append((variant, variant_label, row, own[(variant, row)], False))
            elif variant != "base":
                reference = _reference_of(variant, row, own)
                if (reference, row) in own:
                    out.append((variant, variant_label, row, own[(reference, row)], True))
    return out


def ablation_section(root: str, radii=(0.0, 0.5, 1.0, 1.5, 2.0)) -> str:
    """The released-recipe ablation (scripts/mnist_ablation.sh): certified accuracy and ACR
    of each row per variant, and the change from the base variant on the images both
    certified, in points at each radius. A row a variant does not change is the base
    variant's (marked 'base')."""
    lines = ["| variant | row | images | " + " | ".join(f"r={r:g}" for r in radii)
             + " | ACR | change from base (points at each r) |",
             "|---|---|---|" + "---|" * len(radii) + "---|---|"]
    rows = _ablation_rows(root)
    own = {(variant, row): log for variant, _, row, log, inherited in rows if not inherited}
    labels = dict(ABLATION_VARIANTS)
    for variant, variant_label, row, log, inherited_row in rows:
        ca = 100 * certified_accuracy.certified_accuracy(log["correct"], log["radius"], radii)
        acr = certified_accuracy.average_certified_radius(log["correct"], log["radius"])
        change = ""
        reference = _reference_of(variant, row, own)
        if variant != "base" and not inherited_row and (reference, row) in own:
            change = _paired_change(log, own[(reference, row)], radii)
            if reference != "base":
                change += f" from '{labels[reference]}'"
        inherited = reference if inherited_row else ""
        lines.append(f"| {variant_label} | {row}{f' ({inherited})' if inherited else ''} | "
                     f"{len(log['correct'])} | " + " | ".join(points(v) for v in ca)
                     + f" | {acr:.3f} | {change} |")
    if len(lines) == 2:
        return ""
    paper = paper_tables.CERTIFIED_ACCURACY["mnist"][1.0]
    paper_radii = list(paper_tables.RADII["mnist"])
    for row in [r for v, r in own if v == "base"]:
        if row in paper and all(r in paper_radii for r in radii):
            cells = [paper[row][paper_radii.index(r)] for r in radii]
            lines.append(f"| paper (Table 4, 67 images) | {row} |  | "
                         + " | ".join(str(c) for c in cells) + " |  |  |")
    return "\n".join([f"### Released-recipe ablation, MNIST, sigma = 1.0 ({root})", "",
                      "Each variant switches on one choice of the authors' released code "
                      "(docs/deviations.md), the last all of them; 20 epochs per member (where the "
                      "variant does not say otherwise), "
                      "N = 10,000. The change from the base is measured on the images both "
                      "certified; '*' marks a change beyond two paired standard errors.", "",
                      *lines, ""])


def ablation_seeds_section(roots: Sequence[str], radii=(1.0, 2.0)) -> str:
    """The ablation repeated with other member seeds (ABLATION_SEED): each variant's change
    from its own seed's base, per seed and averaged. The paired standard error of one seed
    counts only the certification's image-to-image noise; the spread over seeds is the
    training noise (members' initial weights, batches, noise, VGA sigma_i) it leaves out."""
    per_root = [{(v, row): (label, log, from_base) for v, label, row, log, from_base
                 in _ablation_rows(root)} for root in roots]
    keys = [k for k in per_root[0] if k[0] != "base" and not per_root[0][k][2]]
    lines = ["| variant | row | seeds | " + " | ".join(
                 f"r={r:g}: mean (per seed)" for r in radii) + " | ACR: mean (per seed) |",
             "|---|---|---|" + "---|" * len(radii) + "---|"]
    for key in keys:
        changes = []  # per seed: points at each radius, then ACR
        for rows in per_root:
            if key not in rows or rows[key][2] or (("base", key[1]) not in rows):
                continue
            diffs = _paired_differences(rows[key][1], rows[("base", key[1])][1], radii)
            if diffs is not None:
                changes.append([100 * d for d in diffs[0].mean(axis=0)] + [diffs[1].mean()])
        if len(changes) < 2:
            continue
        changes = np.asarray(changes)
        cells = []
        for j in range(changes.shape[1]):
            fmt = signed_acr if j == len(radii) else signed_points
            each = ", ".join(fmt(c) for c in changes[:, j])
            cells.append(f"{fmt(changes[:, j].mean())} ({each})")
        lines.append(f"| {per_root[0][key][0]} | {key[1]} | {len(changes)} | "
                     + " | ".join(cells) + " |")
    if len(lines) == 2:
        return ""
    return "\n".join(["### Released-recipe ablation over member seeds", "",
                      "The change from the base variant of the same seed (points at each "
                      "radius, ACR), paired on the images both certified, for every seed "
                      "folder (" + ", ".join(roots) + "): a change whose sign holds in every "
                      "seed is beyond the members' training noise.", "", *lines, ""])
