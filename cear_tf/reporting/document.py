"""The markdown report: every run's sections, the figures, the claims, the comparison
with one strong network and the ablation, assembled into <report_dir>/report.md.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import logging

from cear_tf.config import experiment
from cear_tf.reporting.ablation import ablation_section, ablation_seeds_section
from cear_tf.reporting.collection import discover
from cear_tf.reporting.comparisons import claims_section, single_network_section
from cear_tf.reporting.plots import plot_ensembles, plot_ensembles_overview, plot_overview, plot_run
from cear_tf.reporting.sections import attack_section, ensembles_overview_section, run_section


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
