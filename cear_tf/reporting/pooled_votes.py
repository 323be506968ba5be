"""What the released code's pooled member votes do to a row (docs/deviations.md C1).

The released `Certify/core.py` counts the M members' own votes on each of the N noise draws
as N * M Bernoulli trials and bounds p_A at one-sided level alpha / 2. That is NOT a
certificate: the members see the same noisy input within a draw, so their votes are
dependent. Logs made with `cear_tf.cli.certify --votes=pooled` hold the pooled decision of the
same member passes beside the sound certificate; this module compares the two, and tests the
paper's cells against the largest radius each counting can return.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from scipy.stats import norm

from cear_tf.config import experiment
from cear_tf.reporting import certified_accuracy, paper_tables
from cear_tf.reporting.log_files import read_rows

PAPER_N = 100_000  # the paper's protocol: N = 100,000, alpha = 0.001
PAPER_ALPHA = 0.001
PAPER_MEMBERS = 5


def sound_cap(sigma: float, n: int, alpha: float) -> float:
    """The largest sound radius: N votes of N give p_lower = alpha^(1/N)."""
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


def pooled_cap(sigma: float, n: int, num_members: int, alpha: float) -> float:
    """The largest pooled radius: N*M votes of N*M at the released level alpha / 2."""
    return float(sigma * norm.ppf((alpha / 2) ** (1.0 / (n * num_members))))


def _members_of(method: str) -> int:
    """How many networks the released certify script pools for a row of the paper's tables:
    the ensembles' five, one for RandSmooth (SWEEN's released certification is not known;
    counted as an ensemble of five)."""
    return 1 if method == "RandSmooth" else PAPER_MEMBERS


def paper_cells_beyond_the_sound_cap(n: int = PAPER_N, alpha: float = PAPER_ALPHA):
    """The paper's non-zero cells (Tables 4-6) at a radius no sound CERTIFY with N draws
    can reach: (dataset, sigma, method, radius, percent, sound cap, pooled cap)."""
    out = []
    for dataset, by_sigma in paper_tables.CERTIFIED_ACCURACY.items():
        radii = paper_tables.RADII[dataset]
        for sigma, rows in by_sigma.items():
            cap = sound_cap(sigma, n, alpha)
            for method, cells in rows.items():
                for r, value in zip(radii, cells):
                    if value > 0 and r > cap:
                        out.append((dataset, sigma, method, r, value, cap,
                                    pooled_cap(sigma, n, _members_of(method), alpha)))
    return out


def paper_cells_section(n: int = PAPER_N, alpha: float = PAPER_ALPHA) -> str:
    cells = paper_cells_beyond_the_sound_cap(n, alpha)
    lines = ["| table | sigma | row | radius | paper (%) | sound cap | pooled cap | reachable with pooled votes |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, sigma, method, r, value, cap, pcap in cells:
        table = paper_tables.TABLE_NUMBER[dataset]
        lines.append(f"| {table} ({dataset}) | {sigma:g} | {method} | {r:g} | {value:g} | "
                     f"{cap:.3f} | {pcap:.3f} | {'yes' if r <= pcap else 'no'} |")
    if len(lines) == 2:
        return ""
    return "\n".join([
        "### The paper's cells beyond the sound radius cap", "",
        f"With one vote per draw, N = {n:,} and alpha = {alpha:g}, no radius can exceed "
        f"sigma * PhiInv(alpha^(1/N)) (the sound cap). Pooling the five members' votes as "
        f"5N trials at the released level alpha/2 raises the cap to "
        f"sigma * PhiInv((alpha/2)^(1/(5N))) (one network for RandSmooth: N trials at "
        f"alpha/2). A non-zero cell above the sound cap cannot come from a valid certificate "
        f"at the stated protocol; 'yes' in the last column means pooled votes can produce it, "
        f"'no' that neither counting can.", "", *lines, ""])


def _pairs(path: str):
    """Per image of a pooled log: idx, sound (correct, radius), pooled (correct, radius)."""
    rows = read_rows(path)
    if not rows or "pooled_radius" not in rows[0]:
        return None
    idx = np.array([int(r["idx"]) for r in rows])
    sound = certified_accuracy.columns(rows, path)
    pooled = certified_accuracy.columns(rows, path, votes="pooled")
    return idx, sound, pooled


def run_rows(run_dir: str, radii: Sequence[float]) -> list[dict]:
    """For each method of an experiment whose log carries pooled columns: certified accuracy
    under both countings at `radii`, images gained and lost at each radius, and the mean
    change of the ACR-counted radius with its paired standard error."""
    out = []
    for method in experiment.read_record(run_dir)["methods"]:
        if not os.path.exists(method["log"]):
            continue
        pairs = _pairs(method["log"])
        if pairs is None:
            continue
        idx, (sc, sr), (pc, pr) = pairs
        hit_s = np.array([[c and r >= t for t in radii] for c, r in zip(sc, sr)], bool)
        hit_p = np.array([[c and r >= t for t in radii] for c, r in zip(pc, pr)], bool)
        acr_s, acr_p = np.where(sc, sr, 0.0), np.where(pc, pr, 0.0)
        d = acr_p - acr_s
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
        out.append(dict(label=method["label"], images=len(idx),
                        sound=100 * hit_s.mean(axis=0), pooled=100 * hit_p.mean(axis=0),
                        gained=(hit_p & ~hit_s).sum(axis=0), lost=(hit_s & ~hit_p).sum(axis=0),
                        acr_sound=float(acr_s.mean()), acr_pooled=float(acr_p.mean()),
                        radius_change=float(d.mean()), radius_change_se=se,
                        larger=int((d > 0).sum()), smaller=int((d < 0).sum())))
    return out


def run_section(run_dir: str, title: str, radii: Sequence[float]) -> str:
    rows = run_rows(run_dir, radii)
    if not rows:
        return ""
    header = ("| row | counting | images | " + " | ".join(f"r={r:g}" for r in radii)
              + " | ACR |")
    lines = [header, "|---|---|---|" + "---|" * len(radii) + "---|"]
    for row in rows:
        lines.append(f"| {row['label']} | sound | {row['images']} | "
                     + " | ".join(f"{v:.1f}" for v in row["sound"]) + f" | {row['acr_sound']:.3f} |")
        lines.append(f"| {row['label']} | pooled (not a certificate) | {row['images']} | "
                     + " | ".join(f"{v:.1f}" for v in row["pooled"])
                     + f" | {row['acr_pooled']:.3f} |")
        lines.append(f"| {row['label']} | images gained / lost | | "
                     + " | ".join(f"+{g} / -{lo}" for g, lo in zip(row["gained"], row["lost"]))
                     + f" | {row['radius_change']:+.3f} (se {row['radius_change_se']:.3f}; "
                       f"{row['larger']} larger, {row['smaller']} smaller) |")
    return "\n".join([
        f"#### {title} ({run_dir})", "",
        "Sound: one vote per draw (the certificate). Pooled: the members' own votes on the same "
        "draws as N*M trials at level alpha/2, the released counting, which is not a "
        "certificate. 'Images gained / lost': images certified-correct at r under the pooled "
        "counting only / the sound one only. The ACR column of that line is the mean change of "
        "an image's radius (counted 0 where wrong or abstained), pooled minus sound.",
        "", *lines, ""])


def section(run_dirs: Sequence[str], radii: Sequence[float]) -> str:
    """The whole comparison: each run folder with pooled logs (titled by its experiment),
    then the paper's cells beyond the sound cap."""
    parts = ["## Pooled member votes (the released counting, not a certificate)", "",
             "See docs/deviations.md C1 for why pooled votes bound nothing.", ""]
    for run in run_dirs:
        title = experiment.read_record(run).get("title") or os.path.basename(run)
        text = run_section(run, title, radii)
        if not text:
            raise ValueError(f"--pooled_runs: {run}: no log of its methods has pooled columns "
                             f"(certify with --votes=pooled)")
        parts.append(text)
    parts.append(paper_cells_section())
    return "\n".join(parts)
