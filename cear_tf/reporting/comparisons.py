"""Sections that compare rows image by image: the paper's MNIST claims checked against our
numbers, and every row against one strong single network, with exact McNemar p-values
(cear_tf.reporting.paired).
"""

from __future__ import annotations

from typing import Any

from cear_tf.reporting import certified_accuracy, paired, paper_claims, paper_tables
from cear_tf.reporting.collection import subset
from cear_tf.reporting.formatting import method_order


def claims_section(infos: list[dict[str, Any]]) -> str:
    """Each MNIST claim of the paper, reproduced or not in our numbers, on all our images and
    on the authors' 67; each on the images that every row it names has certified, so a claim
    never sets a row on 500 images against a row on 67 (pass 2 fills the logs row by row)."""
    mnist = {i["sigma"]: i for i in infos if i["dataset"] == "mnist"}
    if not mnist:
        return ""

    lines = ["| claim | where | all our images (those every row of the claim has) | "
             "the authors' 67 images (those we have) |",
             "|---|---|---|---|"]
    for claim in paper_claims.MNIST_CLAIMS:
        info = mnist.get(claim.sigma, {})
        curves = info.get("curves", {})
        # On the authors' images only the logs whose indices name the authors' images.
        authors_curves = {m: log for m, log in curves.items()
                          if m in info.get("original_order", ())}
        cells = []
        for logs, keep in ((curves, None), (authors_curves, set(paper_tables.AUTHORS_IMAGES))):
            images = _claim_images(claim, logs, keep)
            verdict, why = paper_claims.evaluate(claim, _lookup(claim.sigma, logs, images))
            if verdict == "not measured":
                cells.append(verdict)
                continue
            why += _claim_p_values(claim, logs, images)
            cells.append(f"**{verdict}** (n={len(images)}: {why})")
        lines.append(f"| {claim.text} | {claim.where} | {cells[0]} | {cells[1]} |")
    return "\n".join([
        "### The paper's claims on MNIST, checked against our numbers", "",
        "A claim is reproduced when every inequality it states holds in our measured cells "
        "(shown, in %), on the images that every row the claim names has certified (n); with "
        "67 images one image is 1.5 points, so close calls are within "
        "sampling error either way. 'paired' gives, at each radius, the images certified by "
        "the claim's leader only and by its closest rival only, and the exact McNemar "
        "p-value of that difference (cear_tf.reporting.paired): a small p says the images decide "
        "the order; a large one that they do not.", "", *lines, ""])


def _claim_images(claim, logs: dict, keep) -> set[int]:
    """The images every log the claim names (and has) certified, within `keep` when given."""
    names = {claim.leader, *claim.rivals, *(method for method, *_ in claim.levels)}
    held = [set(logs[m]["idx"].tolist()) for m in names if m in logs]
    images = set.intersection(*held) if held else set()
    return images if keep is None else images & keep


def _lookup(sigma: float, logs: dict, images: set[int]) -> paper_claims.Lookup:
    def ca(method, at_sigma, radius):
        log = logs.get(method) if at_sigma == sigma else None
        if log is None or not images:
            return None
        log = subset(log, images)
        return 100 * float(certified_accuracy.certified_accuracy(log["correct"], log["radius"],
                                                                 [radius])[0])
    return ca


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
                           radii_in_sigma=(0.0, 1.0, 2.0, 2.5, 3.0, 3.5)) -> str:
    """Does each CEAR and CEAR- row, SWEEN and the soft ensemble of five LeNet-5 beat one
    strong single network (the literature's 431k-parameter Gaussian LeNet), image by image?
    Exact McNemar p-values on the images both certified, at radii in units of each run's
    sigma (N = 100,000 at alpha = 0.001 caps every radius at 3.81 sigma, so fixed radii
    would compare only zeros at sigma = 0.25 beyond r = 0.95)."""
    lines = []
    for info in infos:
        if info["dataset"] != "mnist" or SINGLE_NETWORK not in info["curves"]:
            continue
        single = info["curves"][SINGLE_NETWORK]
        rows = {m: log for m, log in info["curves"].items() if m != SINGLE_NETWORK}
        if 5 in info.get("prefix", {}):
            rows["soft ensemble of five LeNet-5 (309k parameters)"] = info["prefix"][5][0]
        radii = [k * info["sigma"] for k in radii_in_sigma]
        for method in sorted(rows, key=method_order):
            cells = [f"r = {r:g}: " + paired.describe(p)
                     for r, p in zip(radii, paired.compare(rows[method], single, radii))]
            lines.append(f"| {info['sigma']:g} | {method} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    header = ("| sigma | row (A) | "
              + " | ".join("r = 0" if k == 0 else f"r = {k:g} sigma" for k in radii_in_sigma)
              + " |")
    return "\n".join([
        f"### Against one strong network: {SINGLE_NETWORK}", "",
        "Each cell: images certified-correct at r by the row (A) vs by the literature's "
        "431,080-parameter Gaussian LeNet (B), of the images both certified; +x/-y the images "
        "only A / only B certifies; p the exact two-sided McNemar p-value (cear_tf.reporting.paired). "
        "Radii in units of the run's sigma: no radius can exceed sigma * PhiInv(alpha^(1/N)), "
        "3.81 sigma at N = 100,000 and alpha = 0.001.",
        "", header, "|---|---|" + "---|" * len(radii_in_sigma), *lines, ""])
