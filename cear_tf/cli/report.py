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

import json
import math
import os
import re
import textwrap
from typing import Any, Sequence

import numpy as np
from absl import flags, logging

from cear_tf.reporting import certified_accuracy
from cear_tf.cli import runner
from cear_tf.config import experiment
from cear_tf.reporting import paired
from cear_tf.reporting import paper_claims
from cear_tf.reporting import paper_tables
from cear_tf.reporting import pooled_votes
from cear_tf.config.choices import BY_CLASS_ORDER, ORIGINAL_ORDER, TFDS_ORDER
from cear_tf.common.lazy import lazy_module

members = lazy_module("cear_tf.ensemble.members")  # loaded when used: --help without TensorFlow

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (runner.run), never on import."""
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


def _order(method: str) -> int:
    return (paper_tables.METHODS.index(method) if method in paper_tables.METHODS
            else len(paper_tables.METHODS))


def _percent(v: float) -> str:
    """A certified-accuracy cell in whole points (the paper's style), halves rounded up:
    f"{v:.0f}" rounds half to even, which would print 200 images' 58.5 as 58 but 61.5 as 62.
    The epsilon absorbs 100 * k / n landing a hair below the half (117 / 200 -> 58.4999...)."""
    return str(math.floor(v + 0.5 + 1e-9))


def _points(v: float) -> str:
    """An ablation cell to one decimal: its changes are paired differences of a few points
    on 200 images (half points), which whole points would hide or inflate."""
    return f"{v:.1f}"


def _signed_points(d: float) -> str:
    """A paired change in points, to one decimal, with its sign."""
    return f"{d:+.1f}"


def _signed_acr(d: float) -> str:
    """A paired change in ACR, with its sign."""
    return f"{d:+.3f}"


def _standard_error(p_percent: float, n: int) -> float:
    """Binomial standard error (points) of a proportion from n images, floored at the
    p = 1/(2n) level so that 0% and 100% cells still carry an error."""
    p = min(max(p_percent / 100, 0.0), 1.0)
    return 100 * math.sqrt(max(p * (1 - p), 0.25 / n) / n)


def differs(ours: float, n_ours: int, paper: float, n_paper: int) -> bool:
    """True when |ours - paper| exceeds two standard errors of *both* samples."""
    gap = abs(ours - paper)
    return gap > 2 * _standard_error(ours, n_ours) and gap > 2 * _standard_error(paper, n_paper)


ENSEMBLE_PREFIX = re.compile(r"mean_first(\d+)")


def _read_log(path: str) -> dict[str, np.ndarray]:
    correct, radius = certified_accuracy.load_log(path)
    from cear_tf.reporting.log_files import read_rows
    idx = np.array([int(r["idx"]) for r in read_rows(path)])
    return dict(idx=idx, correct=correct, radius=radius)


def _subset(log: dict[str, np.ndarray], keep) -> dict[str, np.ndarray]:
    mask = np.isin(log["idx"], list(keep))
    return {k: v[mask] for k, v in log.items()}


def _row_cells(log, radii, ref):
    n = len(log["correct"])
    ours = 100 * certified_accuracy.certified_accuracy(log["correct"], log["radius"], radii)
    cells = []
    for i, v in enumerate(ours):
        mark = "*" if ref is not None and differs(v, n, ref[i], paper_tables.PAPER_IMAGE_COUNT) else ""
        cells.append(f"{_percent(v)}{mark}")
    return n, cells, certified_accuracy.average_certified_radius(log["correct"], log["radius"])


def run_section(records: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    settings = records[0]["settings"]
    dataset, sigma = settings["dataset"], float(settings["sigma"])
    radii = paper_tables.RADII[dataset]
    paper = paper_tables.CERTIFIED_ACCURACY.get(dataset, {}).get(sigma, {})
    header = ["method", "source", *[f"{r:g}" for r in radii], "ACR"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    authors = set(paper_tables.AUTHORS_IMAGES)
    randsmooth_arch = "?"
    curves, details, prefix_logs, other_orders, original_order = {}, [], {}, set(), set()
    for rec in sorted(records, key=lambda r: _order(r["method"])):
        log = _read_log(rec["path"])
        m = ENSEMBLE_PREFIX.fullmatch(rec["aggregation"])
        if m:  # the ensembles-for-RS curve, reported in its own section
            prefix_logs[int(m.group(1))] = (log, rec)
            continue
        ref = paper.get(rec["method"])
        if ref is not None:
            lines.append("| " + " | ".join([rec["method"], "paper", *map(str, ref), ""]) + " |")
        n, cells, acr = _row_cells(log, radii, ref)
        lines.append("| " + " | ".join([rec["method"], f"ours (n={n})", *cells, f"{acr:.3f}"])
                     + " |")
        order = rec["settings"].get("image_order")
        if order == ORIGINAL_ORDER:
            mine = _subset(log, authors)
            original_order.add(rec["method"])
        else:
            mine = {"idx": []}
            other_orders.add(order)
        if 0 < len(mine["idx"]) < n:
            k, cells, acr = _row_cells(mine, radii, ref)
            lines.append("| " + " | ".join([rec["method"], f"ours, authors' images (n={k})",
                                             *cells, f"{acr:.3f}"]) + " |")
        curves[rec["method"]] = log
        if rec["method"] == "RandSmooth":
            randsmooth_arch = rec["member"].get("arch", "?")
        s, meta = rec["settings"], rec["member"]
        details.append(f"{rec['method']}: N0={s.get('N0')}, N={s.get('N')}, alpha={s.get('alpha')}, "
                       f"logit_noise={s.get('logit_noise')}, {n} images, members "
                       f"{len(s.get('models', []))} x {meta.get('arch', '?')} trained "
                       f"{meta.get('epochs', '?')} epochs on {meta.get('train_examples', '?')} images"
                       f"{_members_accuracy(rec.get('members', []))}"
                       f"{_noisy_at_sigma(rec.get('member_accuracy'))}")
    table_no = paper_tables.TABLE_NUMBER.get(dataset)
    text = [f"### {dataset}, sigma = {sigma:g} ({os.path.basename(records[0]['run'].rstrip('/'))})",
            "",
            f"Certified accuracy (%) at radius r. 'paper': Table {table_no} of the paper; 'ours': "
            f"measured here, on every certified image and (where they are a subset) on the "
            f"{paper_tables.PAPER_IMAGE_COUNT} test images of the authors' certify script "
            f"(indices 2160-3480, every 20th), the images the paper's cells most likely come "
            f"from. '*' marks a cell of ours that differs from the paper's by more than two "
            f"binomial standard errors of both samples (ours: n images; the paper's: "
            f"{paper_tables.PAPER_IMAGE_COUNT}).{_order_note(other_orders)}",
            "", *lines, "", "Settings:", "", *[f"- {d}" for d in details], ""]
    one_network = _one_network(dataset, sigma, curves, paper, radii, randsmooth_arch)
    if prefix_logs:
        _, first = min(prefix_logs.items())
        text.append(ensembles_section(prefix_logs, records[0]["variance"], radii,
                                      first[1]["member"].get("arch", "?"),
                                      one_network=one_network))
    caps = [radius_cap(sigma, r["settings"]) for r in records]
    return "\n".join(text), dict(dataset=dataset, sigma=sigma, curves=curves,
                                 original_order=original_order,
                                 prefix=prefix_logs, variance=records[0]["variance"],
                                 one_network=one_network,
                                 cap=max([c for c in caps if c] or [0.0]))


def _members_accuracy(metas: list[dict]) -> str:
    """The members' test accuracies from their cear.json, clean and under the noise each
    trained at (its sigma_i for a VGA student), with that sigma and the temperature."""
    known = [m for m in metas if "clean_test_accuracy" in m]
    if not known:
        return ""
    def each(key, fmt):
        cells = [fmt(m[key]) if m.get(key) is not None else "?" for m in known]
        return cells[0] if len(set(cells)) == 1 and key in ("sigma", "temperature") else \
            " / ".join(cells)
    text = (f"; test accuracy clean {each('clean_test_accuracy', lambda v: f'{100 * v:.2f}')}%, "
            f"noisy {each('noisy_test_accuracy', lambda v: f'{100 * v:.2f}')}% at sigma "
            f"{each('sigma', lambda v: f'{v:.3f}')}")
    if any(m.get("temperature") for m in known):
        text += f", T = {each('temperature', lambda v: f'{v:g}')}"
    if len(known) < len(metas):
        text += f" ({len(metas) - len(known)} member(s) without a cear.json here)"
    return text


def _noisy_at_sigma(measured: dict | None) -> str:
    """The members' noisy test accuracy at the certification sigma (cear_tf.cli.member_accuracy),
    which differs from their cear.json's for VGA students trained at their own sigma_i."""
    if not measured:
        return ""
    cells = " / ".join(f"{100 * m['noisy']['value']:.2f}" for m in measured["members"])
    return (f"; noisy test accuracy at the certification sigma {measured['sigma']:g}: "
            f"{cells}% ({measured['draws']} draws on each of {measured['images']} test images)")


def _order_note(orders) -> str:
    """Why a run has no rows on the authors' images: its test images are not in the
    official order, so the authors' indices name other images here."""
    if not orders:
        return ""
    why = {BY_CLASS_ORDER: "read class by class from an image-folder copy, the "
                                "original order lost",
           TFDS_ORDER: "in tensorflow-datasets' shuffled order",
           None: "in an order its logs do not record"}
    said = "; ".join(why.get(o, f"in order {o!r}") for o in sorted(orders, key=str))
    return (f" No row on the authors' images: this run's test images are {said}, so the "
            f"authors' indices would pick other images (here, all of few classes).")


def radius_cap(sigma: float, settings: dict) -> float | None:
    """The largest radius CERTIFY can return with N draws at level alpha: all N votes give
    p_lower = alpha^(1/N), so R <= sigma * PhiInv(alpha^(1/N))."""
    from scipy.stats import norm
    n, alpha = settings.get("N"), settings.get("alpha")
    if not n or not alpha or settings.get("target_radius") is not None:
        return None
    return float(sigma * norm.ppf(float(alpha) ** (1.0 / int(n))))


def _read_variance(path: str | None) -> dict:
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def _one_network(dataset: str, sigma: float, curves, paper, radii,
                 arch: str) -> dict[str, Any]:
    """Certified accuracy (%) at r = sigma of one network, for the ensembles' comparison:
    the paper's RandSmooth row (its architecture) and ours, where each exists."""
    if sigma not in radii:
        return {}
    out = dict(radius=sigma)
    if "RandSmooth" in paper:
        out["paper"] = (paper["RandSmooth"][list(radii).index(sigma)],
                        f"Table {paper_tables.TABLE_NUMBER[dataset]}'s RandSmooth, one "
                        f"{paper_tables.ARCHITECTURE.get(dataset, 'network')}")
    if "RandSmooth" in curves:
        log = curves["RandSmooth"]
        out["ours"] = (100 * certified_accuracy.certified_accuracy(log["correct"], log["radius"],
                                                         [sigma])[0], f"our RandSmooth, one {arch}")
    return out


def ensembles_section(prefix_logs, variance_path: str | None, radii, arch: str = "?",
                      one_network: dict[str, Any] | None = None) -> str:
    """Certified accuracy and ACR of the soft ensemble of the first k Gaussian members, and
    the margin-variance ratio measured by cear_tf.cli.variance when its JSON is present."""
    variance = _read_variance(variance_path)
    by_k = {row["k"]: row for row in variance.get("by_k", [])}
    header = ["k", "images", *[f"{r:g}" for r in radii], "ACR", "Var ratio measured",
              "(1 + zeta (k-1)) / k"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k in sorted(prefix_logs):
        log, _ = prefix_logs[k]
        n, cells, acr = _row_cells(log, radii, None)
        row = by_k.get(k, {})
        ratio = f"{row['measured_ratio']:.3f}" if row else ""
        predicted = f"{row['predicted_ratio']:.3f}" if row else ""
        lines.append("| " + " | ".join([str(k), str(n), *cells, f"{acr:.3f}", ratio, predicted])
                     + " |")
    note = (f"zeta = {variance['zeta']:.3f} (pooled correlation of the members' margins on "
            f"{len(variance['images'])} test images, {variance['draws']} draws each)"
            + (f"; at k = {len(variance['by_k'])} the two agree by construction (zeta is "
               f"estimated from these {len(variance['by_k'])} members), so k = 2.."
               f"{len(variance['by_k']) - 1} are the test of the formula"
               if len(variance.get('by_k', [])) > 2 else "")
            if variance else "margin variance not measured yet (cear_tf.cli.variance)")
    return "\n".join([
        "#### Ensembles for randomized smoothing: the first k Gaussian members, averaged",
        "", "Soft ensembles (mean of softmax) of the first k SWEEN candidates (Gaussian-trained "
        f"{arch}, seeds 0..k-1), certified from the same member passes as SWEEN. Var ratio: "
        "variance of the ensemble's classification margin over one member's, against "
        f"Horvath et al.'s (1 + zeta (k - 1)) / k; {note}.{_one_network_note(one_network)}",
        "", *lines, ""])


def _one_network_note(one_network: dict[str, Any] | None) -> str:
    refs = [f"{label} {_percent(value)}%" for key in ("paper", "ours")
            if (one_network or {}).get(key) for value, label in [one_network[key]]]
    if not refs:
        return ""
    return (f" One network at r = {one_network['radius']:g}, for the ensembles' column of the "
            f"same radius: " + "; ".join(refs) + " (the paper's on its own images and "
            "protocol).")


_COLORS = {"RandSmooth": "black", "SWEEN": "tab:gray", "MV": "tab:blue", "RW": "tab:red",
           "GM": "tab:green"}


def _style(method: str) -> dict[str, Any]:
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
        for method in sorted(info["curves"], key=_order):
            log = info["curves"][method]
            ax.plot(grid, 100 * certified_accuracy.certified_accuracy(log["correct"], log["radius"], grid),
                    label=method, linewidth=1.2, **_style(method))
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
    methods = sorted(info["curves"], key=_order)
    grid = np.linspace(0, _x_limit([info]), 300)
    cols = min(4, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.5 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for ax, method in zip(axes.flat, methods):
        log = info["curves"][method]
        style = _style(method)
        ax.plot(grid, 100 * certified_accuracy.certified_accuracy(log["correct"], log["radius"], grid),
                color=style["color"], linestyle="-", label=f"ours (n={len(log['correct'])})")
        if method in paper:
            ax.plot(radii, paper[method], "o--", color=style["color"], markersize=4,
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


def claims_section(infos: list[dict[str, Any]]) -> str:
    """Each MNIST claim of the paper, reproduced or not in our numbers, on all our images and
    on the authors' 67."""
    mnist = {i["sigma"]: i for i in infos if i["dataset"] == "mnist"}
    if not mnist:
        return ""

    def lookup(keep):
        def ca(method, sigma, radius):
            log = mnist.get(sigma, {}).get("curves", {}).get(method)
            if log is None:
                return None
            if keep is not None:
                if method not in mnist[sigma].get("original_order", ()):
                    return None  # the authors' indices name other images in this log
                log = _subset(log, keep)
                if not len(log["idx"]):
                    return None
            return 100 * float(certified_accuracy.certified_accuracy(log["correct"], log["radius"],
                                                          [radius])[0])
        return ca

    lines = ["| claim | where | all our images | the authors' 67 images (those we have) |",
             "|---|---|---|---|"]
    for claim in paper_claims.MNIST_CLAIMS:
        cells = []
        for keep in (None, set(paper_tables.AUTHORS_IMAGES)):
            verdict, why = paper_claims.evaluate(claim, lookup(keep))
            log = mnist.get(claim.sigma, {}).get("curves", {}).get(claim.leader)
            if keep is not None and claim.leader not in mnist.get(claim.sigma, {}).get(
                    "original_order", ()):
                log = None
            n = "" if log is None else \
                f"n={len(log['idx']) if keep is None else len(_subset(log, keep)['idx'])}: "
            if verdict != "not measured":
                why += _claim_p_values(claim, mnist.get(claim.sigma, {}).get("curves", {}),
                                       keep)
            cells.append(f"**{verdict}** ({n}{why})" if verdict != "not measured" else verdict)
        lines.append(f"| {claim.text} | {claim.where} | {cells[0]} | {cells[1]} |")
    return "\n".join([
        "### The paper's claims on MNIST, checked against our numbers", "",
        "A claim is reproduced when every inequality it states holds in our measured cells "
        "(shown, in %); with 67 images one image is 1.5 points, so close calls are within "
        "sampling error either way. 'paired' gives, at each radius, the images certified by "
        "the claim's leader only and by its closest rival only, and the exact McNemar "
        "p-value of that difference (cear_tf.reporting.paired): a small p says the images decide "
        "the order; a large one that they do not.", "", *lines, ""])


def _claim_p_values(claim, curves: dict, keep) -> str:
    """'; paired: R=0.5: +3/-1, p = 0.62 ...' of the claim's leader against the rival closest
    to it at each radius, on the images both certified (and `keep`)."""
    lead = curves.get(claim.leader)
    rivals = {m: curves[m] for m in claim.rivals if m != claim.leader and m in curves}
    if lead is None or not rivals:
        return ""
    parts = []
    for r in claim.radii:
        best = max(rivals, key=lambda m: paired.compare(rivals[m], lead, [r], keep)[0].a)
        p = paired.compare(lead, rivals[best], [r], keep)[0]
        parts.append(f"R={r:g} vs {best}: +{p.a_only}/-{p.b_only}, p = {p.p_value:.2g}")
    return "; paired: " + "; ".join(parts)


SINGLE_NETWORK = "RandSmooth (literature LeNet)"


def single_network_section(infos: list[dict[str, Any]],
                           radii=(0.0, 0.5, 1.0, 1.5, 2.0)) -> str:
    """Does each CEAR and CEAR- row, SWEEN and the soft ensemble of five LeNet-5 beat one
    strong single network (the literature's 431k-parameter Gaussian LeNet), image by image?
    Exact McNemar p-values on the images both certified, at each radius."""
    lines = []
    for info in infos:
        if info["dataset"] != "mnist" or SINGLE_NETWORK not in info["curves"]:
            continue
        single = info["curves"][SINGLE_NETWORK]
        rows = {m: log for m, log in info["curves"].items() if m != SINGLE_NETWORK}
        if 5 in info.get("prefix", {}):
            rows["soft ensemble of five LeNet-5 (309k parameters)"] = info["prefix"][5][0]
        for method in sorted(rows, key=_order):
            cells = [paired.describe(p) for p in paired.compare(rows[method], single, radii)]
            lines.append(f"| {info['sigma']:g} | {method} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    header = ("| sigma | row (A) | " + " | ".join(f"r = {r:g}" for r in radii) + " |")
    return "\n".join([
        f"### Against one strong network: {SINGLE_NETWORK}", "",
        "Each cell: images certified-correct at r by the row (A) vs by the literature's "
        "431,080-parameter Gaussian LeNet (B), of the images both certified; +x/-y the images "
        "only A / only B certifies; p the exact two-sided McNemar p-value (cear_tf.reporting.paired).",
        "", header, "|---|---|" + "---|" * len(radii), *lines, ""])


ABLATION_VARIANTS = (
    ("base", "cear_tf's recipe"), ("train_clip", "+ clip in training"),
    ("certify_clip", "+ clip in certification"),
    ("clip", "+ clip in training and certification"), ("fixed_copy", "+ fixed noisy copy"),
    ("network", "+ released CNN"), ("student_loss", "+ released student loss"),
    ("optimizer", "+ Adam (released students)"), ("vga_rule", "+ released VGA rule"),
    ("all", "all released choices"),
    ("released_epochs", "all released choices, RandSmooth 75 epochs"),
    ("all_released_rw", "all released choices, RW weights as released (A2)"),
    ("all_80_epochs", "all released choices, students 80 epochs"),
    ("all_80_epochs_released_rw", "all released choices, students 80 epochs, RW weights as "
                                  "released (A2)"))
# A variant that changes another variant rather than the base: the rows it does not certify
# are that variant's, and its changes are measured from it.
ABLATION_REFERENCE = {"released_epochs": "all", "all_released_rw": "all",
                      "all_80_epochs": "all", "all_80_epochs_released_rw": "all_80_epochs"}


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
    points = " ".join(cell(hit[:, j], _signed_points, 100) for j in range(len(radii)))
    return f"{points} (ACR {cell(acr, _signed_acr, 1)}; {len(acr)} images)"


def _ablation_rows(root: str):
    """(variant, variant label, row label, log, log is the reference's) for every certified
    row of the ablation under `root`, in the variants' order; a variant's row it does not
    change is its reference variant's log (the base's unless ABLATION_REFERENCE says)."""
    logs_of: dict[str, dict[str, dict]] = {}  # variant -> row -> its own log
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
        logs_of[variant] = {row: _read_log(path) for row, path in logs.items()}
        reference = logs_of.get(ABLATION_REFERENCE.get(variant, "base"), {})
        if variant != "base":
            reference = {**logs_of.get("base", {}), **reference}
        for row in base_rows + [r for r in logs if r not in base_rows]:
            if row in logs:
                out.append((variant, variant_label, row, logs_of[variant][row], False))
            elif variant != "base" and row in reference:
                out.append((variant, variant_label, row, reference[row], True))
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
        reference = ABLATION_REFERENCE.get(variant, "base")
        if (reference, row) not in own:
            reference = "base"
        if variant != "base" and not inherited_row and (reference, row) in own:
            change = _paired_change(log, own[(reference, row)], radii)
            if reference != "base":
                change += f" from '{labels[reference]}'"
        inherited = ABLATION_REFERENCE.get(variant, "base") if inherited_row else ""
        if inherited and (inherited, row) not in own:
            inherited = "base"
        lines.append(f"| {variant_label} | {row}{f' ({inherited})' if inherited else ''} | "
                     f"{len(log['correct'])} | " + " | ".join(_points(v) for v in ca)
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
            fmt = _signed_acr if j == len(radii) else _signed_points
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


def ensembles_overview_section(infos: list[dict[str, Any]]) -> str:
    """ACR against the ensemble size k at every sigma side by side: the gain over one member
    and the margin-variance ratio measured vs (1 + zeta (k - 1)) / k. Empty unless two or more
    runs have the curve. Each row's images are those its sigma's curve was certified on."""
    runs = [i for i in infos if i["prefix"]]
    if len(runs) < 2:
        return ""
    lines = ["| dataset | sigma | images | zeta | " + " | ".join(
                 f"ACR k={k}" for k in range(1, 6)) + " | ACR gain k=5 vs 1 | "
             "Var ratio measured at the largest k | largest \\|measured - predicted\\| at "
             "2 <= k < the largest |", "|" + "---|" * 12]
    for info in sorted(runs, key=lambda i: (i["dataset"], i["sigma"])):
        acr = {k: certified_accuracy.average_certified_radius(g["correct"], g["radius"])
               for k, (g, _) in info["prefix"].items()}
        variance = _read_variance(info.get("variance"))
        by_k = {row["k"]: row for row in variance.get("by_k", [])}
        last = max(acr)
        n = len(info["prefix"][last][0]["correct"])
        gain = f"{100 * (acr[last] / acr[1] - 1):+.1f}% (k={last})" if 1 in acr and acr[1] else ""
        ratio = f"{by_k[last]['measured_ratio']:.3f} (k={last})" if last in by_k else \
            "not measured"
        # At the largest k the prediction equals the measurement by construction (zeta is
        # pooled from the same members); only the smaller k test the formula.
        gaps = {k: abs(by_k[k]["measured_ratio"] - by_k[k]["predicted_ratio"])
                for k in by_k if 2 <= k < last}
        worst = max(gaps, key=gaps.get) if gaps else None
        test = f"{gaps[worst]:.3f} (k={worst})" if worst else ""
        zeta = f"{variance['zeta']:.3f}" if variance else ""
        cells = [f"{acr[k]:.3f}" if k in acr else "" for k in range(1, 6)]
        lines.append(f"| {info['dataset']} | {info['sigma']:g} | {n} | {zeta} | "
                     + " | ".join(cells) + f" | {gain} | {ratio} | {test} |")
    return "\n".join([
        "### Ensembles for randomized smoothing across sigmas", "",
        "Soft ensembles of the first k SWEEN candidates (see each run's section). Horvath et "
        "al.'s argument: the more the members' margins correlate (zeta), the less averaging "
        "reduces the margin's variance, and the less the ensemble should gain; the columns "
        "test it. The ratio's prediction (1 + zeta (k - 1)) / k equals the measurement at the "
        "largest k by construction (zeta is pooled from those members), so the last column, "
        "the smaller k, is the formula's test.", "", *lines, ""])


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
        rows = _read_variance(info.get("variance")).get("by_k", [])
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


def _attack_row(path):
    """(clean accuracy, success rate) of the combined attack: the 'all' row of the sources'
    mean (transfer) or of the single source; None if the file is missing."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    rows = [dict(zip(lines[0], r)) for r in lines[1:]]
    attacks_seen = {r["attack"] for r in rows}
    attack = "all" if "all" in attacks_seen else rows[-1]["attack"]
    pick = [r for r in rows if r["attack"] == attack]
    chosen = next((r for r in pick if r["source"] == "mean"), pick[-1])
    return 100 * float(chosen["clean_accuracy"]), 100 * float(chosen["success_rate"]), chosen


def attack_section(run_dir: str) -> str:
    """Table 3 beside ours, from the attack runs of the run's experiment record."""
    rec = experiment.read_record(run_dir)
    runs = [a for a in rec.get("attacks", []) if os.path.exists(a["log"])]
    if not runs:
        return ""
    dataset = rec["dataset"]
    col = {"mnist": 0, "cifar10": 3}.get(dataset)
    lines = ["| model | source | clean acc. | L2 success | Linf success | L2 success, EOT | "
             "Linf success, EOT |", "|---|---|---|---|---|---|---|"]
    columns = (("l2", "transfer"), ("linf", "transfer"), ("l2", "eot"), ("linf", "eot"))
    for name in dict.fromkeys(a["target"] for a in runs):
        ref = paper_tables.ATTACK_SUCCESS.get(name)
        if ref and col is not None:
            lines.append(f"| {name} | paper | {ref[col]:.2f}% | {ref[col + 1]:.2f}% | "
                         f"{ref[col + 2]:.2f}% | | |")
        logs = {(a["norm"], a["mode"]): a["log"] for a in runs if a["target"] == name}
        cells, clean = [], None
        for key in columns:
            got = _attack_row(logs[key]) if key in logs else None
            if got is None:
                cells.append("")
                continue
            clean = clean if clean is not None else got[0]
            cells.append(f"{got[1]:.2f}%")
        if any(cells):
            lines.append(f"| {name} | ours | {clean:.2f}% | " + " | ".join(cells) + " |")
    return "\n".join([
        f"### Table 3: attacker success rate, {dataset} ({os.path.basename(run_dir.rstrip('/'))})",
        "", "Success rate = share of correctly classified test images whose prediction the "
        "attack changes, for the combined attack (an image counts if APGD-CE, APGD-DLR or FAB "
        "succeeds). Without EOT: crafted on each member (averaged over members; RandSmooth: "
        "on its single network) and evaluated on the noisy-logit ensemble. With EOT: crafted on "
        "the whole randomised ensemble, gradients averaged over noise draws (APGD-CE and "
        "APGD-DLR, each on two surrogates: the log of the aggregated probabilities and its "
        "log-space form, for GM also on the members' mean (BPDA); an image counts if any "
        "succeeds).",
        "", *lines, ""])


def build_report(run_dirs, report_dir: str, plots: bool = True,
                 ablation_dir: str | Sequence[str] | None = None,
                 title: str = "cear_tf: measured certified accuracy beside the paper") -> str:
    os.makedirs(report_dir, exist_ok=True)
    sections = [f"# {title}", ""]
    infos = []
    for run in run_dirs:
        attack_text = attack_section(run)
        methods = experiment.read_record(run)["methods"]
        if any(os.path.exists(m["log"]) for m in methods):
            text, info = run_section(discover(run))
            infos.append(info)
            sections.append(text)
        elif attack_text:
            sections.append(attack_text)
            continue
        else:
            raise ValueError(f"--runs: {run}: no log of its experiment's methods exists yet")
        if attack_text:
            sections.append(attack_text)
        if plots:
            png = f"certified_accuracy_{os.path.basename(run.rstrip('/'))}.png"
            try:
                plot_run(info, os.path.join(report_dir, png))
                sections.append(f"![certified accuracy vs radius]({png})\n")
                if info["prefix"]:
                    png = f"ensembles_for_rs_{os.path.basename(run.rstrip('/'))}.png"
                    plot_ensembles(info, os.path.join(report_dir, png))
                    sections.append(f"![ACR vs ensemble size]({png})\n")
            except ImportError:
                logging.warning("matplotlib is not installed: no plots (pip install matplotlib)")
                plots = False
    if plots and len(infos) > 1:
        plot_overview(infos, os.path.join(report_dir, "certified_accuracy_overview.png"))
        sections.append("![certified accuracy of every method and run]"
                        "(certified_accuracy_overview.png)\n")
    overview = ensembles_overview_section(infos)
    if overview:
        sections.append(overview)
        if plots:
            plot_ensembles_overview(infos, os.path.join(report_dir, "ensembles_for_rs_overview.png"))
            sections.append("![ACR and margin variance against the ensemble size, every sigma]"
                            "(ensembles_for_rs_overview.png)\n")
    claims = claims_section(infos)
    if claims:
        sections.append(claims)
    single = single_network_section(infos)
    if single:
        sections.append(single)
    ablation_dirs = [ablation_dir] if isinstance(ablation_dir, str) else list(ablation_dir or [])
    for root in ablation_dirs:
        sections.append(ablation_section(root) or f"(no ablation logs under {root} yet)\n")
    if len(ablation_dirs) > 1:
        sections.append(ablation_seeds_section(ablation_dirs)
                        or "(no ablation variant is certified in two seed folders yet)\n")
    report = "\n".join(sections)
    with open(os.path.join(report_dir, "report.md"), "w") as f:
        f.write(report)
    return report

def main(argv):
    runner.require(argv, "runs")
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
    runner.run(main, define_flags)
