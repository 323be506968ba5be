"""The report's figures (matplotlib, imported when drawing): certified accuracy against the
radius per run and across runs, like the paper's Figure 2, and ACR against the ensemble
size.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import Any

import numpy as np

from cear_tf.reporting import certified_accuracy, paper_tables
from cear_tf.reporting.formatting import method_order
from cear_tf.reporting.sections import read_variance

_COLORS = {"RandSmooth": "black", "SWEEN": "tab:gray", "MV": "tab:blue", "RW": "tab:red",
           "GM": "tab:green"}


def style(method: str) -> dict[str, Any]:
    m = re.fullmatch(r"CEAR(-?)\((\w+)\)", method)
    if m:
        return dict(color=_COLORS.get(m.group(2), "tab:purple"),
                    linestyle="--" if m.group(1) else "-")
    return dict(color=_COLORS.get(method, "tab:purple"), linestyle="-.")


def _x_limit(infos) -> float:
    """Fitted to sigma: past the largest radius certified and the radius cap."""
    reach = [float(np.max(c["radius"])) for i in infos for c in i["curves"].values()]
    reach += [i.get("cap") or 0.0 for i in infos]
    reach += [max(paper_tables.RADII[i["dataset"]]) for i in infos
              if i["sigma"] in paper_tables.CERTIFIED_ACCURACY.get(i["dataset"], {})]
    return 1.05 * max(reach)


def _mark_cap(ax, cap):
    if cap:
        ax.axvline(cap, color="0.5", linestyle=":", linewidth=1)
        ax.annotate("cap", (cap, 98), fontsize=6, color="0.4", ha="right", va="top")


def plot_overview(infos: list[dict[str, Any]], path: str) -> None:
    """Every method of every run in one figure, one panel per (data set, sigma): colour by
    aggregation, solid CEAR, dashed CEAR-, dash-dot baselines; the radius cap dotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(infos), figsize=(4.2 * len(infos), 3.4), squeeze=False)
    for ax, info in zip(axes[0], infos):
        grid = np.linspace(0, _x_limit([info]), 300)
        for method in sorted(info["curves"], key=method_order):
            log = info["curves"][method]
            ax.plot(grid, 100 * certified_accuracy.certified_accuracy(log["correct"], log["radius"], grid),
                    label=method, linewidth=1.2, **style(method))
        _mark_cap(ax, info.get("cap"))
        ax.set_title(f"{info['dataset']}, sigma = {info['sigma']:g}", fontsize=9)
        ax.set_xlim(0, grid[-1])
        ax.set_ylim(0, 100)
        ax.set_xlabel("radius (L2)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("certified acc. (%)", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_run(info: dict[str, Any], path: str) -> None:
    """One small panel per method: our certified-accuracy curve (solid) and the paper's
    Table cells (dashed, circles), on an x axis fitted to sigma with the radius cap marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset, sigma = info["dataset"], info["sigma"]
    paper = paper_tables.CERTIFIED_ACCURACY.get(dataset, {}).get(sigma, {})
    radii = paper_tables.RADII[dataset]
    methods = sorted(info["curves"], key=method_order)
    grid = np.linspace(0, _x_limit([info]), 300)
    cols = min(4, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.5 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for ax, method in zip(axes.flat, methods):
        log = info["curves"][method]
        look = style(method)
        ax.plot(grid, 100 * certified_accuracy.certified_accuracy(log["correct"], log["radius"], grid),
                color=look["color"], linestyle="-", label=f"ours (n={len(log['correct'])})")
        if method in paper:
            ax.plot(radii, paper[method], "o--", color=look["color"], markersize=4,
                    linewidth=1, markerfacecolor="white", label="paper")
        _mark_cap(ax, info.get("cap"))
        ax.set_title(method, fontsize=9)
        ax.set_xlim(0, grid[-1])
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper right")
    for ax in axes.flat[len(methods):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("radius (L2)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("certified acc. (%)", fontsize=8)
    title = (f"{dataset}, sigma = {sigma:g}: ours (solid) and the paper's Table "
             f"{paper_tables.TABLE_NUMBER.get(dataset)} (dashed); dotted: radius cap")
    # Wrapped to the figure's width (~13 characters per inch at 10 pt): a run with one or two
    # methods (a partial run) has a narrow figure that would clip the title.
    fig.suptitle(textwrap.fill(title, int(13 * 3.1 * cols)), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ensembles(info: dict[str, Any], path: str) -> None:
    """ACR and certified accuracy at r = sigma against the ensemble size k."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(info["prefix"])
    logs = [info["prefix"][k][0] for k in ks]
    acr = [certified_accuracy.average_certified_radius(g["correct"], g["radius"]) for g in logs]
    at_sigma = [100 * certified_accuracy.certified_accuracy(g["correct"], g["radius"], [info["sigma"]])[0]
                for g in logs]
    fig, ax = plt.subplots(figsize=(4.2, 3))
    ax.plot(ks, acr, "o-", color="tab:blue")
    ax.set_xlabel("members k (soft ensemble of the first k)")
    ax.set_ylabel("ACR", color="tab:blue")
    other = ax.twinx()
    other.plot(ks, at_sigma, "s--", color="tab:red", label="ensemble of the first k")
    one = info.get("one_network") or {}
    for key, style in (("paper", ":"), ("ours", "-.")):
        if key in one:
            value, label = one[key]
            other.axhline(value, ls=style, color="gray", lw=1, label=label)
    if one:
        other.legend(fontsize=6, loc="center right")
    other.set_ylabel(f"certified acc. at r = {info['sigma']:g} (%)", color="tab:red")
    ax.set_xticks(ks)
    ax.set_title(f"{info['dataset']}, sigma = {info['sigma']:g}: ensembles for RS", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ensembles_overview(infos: list[dict[str, Any]], path: str) -> None:
    """Left: ACR relative to one member against k, one line per sigma. Right: the measured
    margin-variance ratio against k (markers) and (1 + zeta (k - 1)) / k (lines)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    for info in sorted((i for i in infos if i["prefix"]), key=lambda i: i["sigma"]):
        ks = sorted(info["prefix"])
        acr = [certified_accuracy.average_certified_radius(info["prefix"][k][0]["correct"],
                                                 info["prefix"][k][0]["radius"]) for k in ks]
        label = f"{info['dataset']} sigma={info['sigma']:g}"
        line, = left.plot(ks, [a / acr[0] for a in acr], "o-", label=label)
        rows = read_variance(info.get("variance")).get("by_k", [])
        if rows:
            right.plot([r["k"] for r in rows], [r["measured_ratio"] for r in rows], "o",
                       color=line.get_color(), label=f"{label} measured")
            right.plot([r["k"] for r in rows], [r["predicted_ratio"] for r in rows], "-",
                       color=line.get_color(), alpha=0.6)
    left.set_xlabel("members k")
    left.set_ylabel("ACR / ACR(k = 1)")
    left.legend(fontsize=7)
    right.set_xlabel("members k")
    right.set_ylabel("margin variance ratio")
    right.set_title("measured (o) vs (1 + zeta (k-1)) / k (line)", fontsize=8)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
