"""The report's sections per run: certified accuracy beside the paper's table, the
ensembles-for-RS curve with its margin variance, and Table 3's attacks.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from cear_tf.config import experiment
from cear_tf.config.choices import BY_CLASS_ORDER, ORIGINAL_ORDER, TFDS_ORDER
from cear_tf.reporting import certified_accuracy, paper_tables
from cear_tf.reporting.collection import read_log, subset
from cear_tf.reporting.formatting import method_order, percent, row_cells

ENSEMBLE_PREFIX = re.compile(r"mean_first(\d+)")


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
    for rec in sorted(records, key=lambda r: method_order(r["method"])):
        log = read_log(rec["path"])
        m = ENSEMBLE_PREFIX.fullmatch(rec["aggregation"])
        if m:  # the ensembles-for-RS curve, reported in its own section
            prefix_logs[int(m.group(1))] = (log, rec)
            continue
        ref = paper.get(rec["method"])
        if ref is not None:
            lines.append("| " + " | ".join([rec["method"], "paper", *map(str, ref), ""]) + " |")
        n, cells, acr = row_cells(log, radii, ref)
        lines.append("| " + " | ".join([rec["method"], f"ours (n={n})", *cells, f"{acr:.3f}"])
                     + " |")
        order = rec["settings"].get("image_order")
        if order == ORIGINAL_ORDER:
            mine = subset(log, authors)
            original_order.add(rec["method"])
        else:
            mine = {"idx": []}
            other_orders.add(order)
        if 0 < len(mine["idx"]) < n:
            k, cells, acr = row_cells(mine, radii, ref)
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


def read_variance(path: str | None) -> dict:
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
    variance = read_variance(variance_path)
    by_k = {row["k"]: row for row in variance.get("by_k", [])}
    header = ["k", "images", *[f"{r:g}" for r in radii], "ACR", "Var ratio measured",
              "(1 + zeta (k-1)) / k"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k in sorted(prefix_logs):
        log, _ = prefix_logs[k]
        n, cells, acr = row_cells(log, radii, None)
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
    refs = [f"{label} {percent(value)}%" for key in ("paper", "ours")
            if (one_network or {}).get(key) for value, label in [one_network[key]]]
    if not refs:
        return ""
    return (f" One network at r = {one_network['radius']:g}, for the ensembles' column of the "
            f"same radius: " + "; ".join(refs) + " (the paper's on its own images and "
            "protocol).")


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
        variance = read_variance(info.get("variance"))
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
