import json
import re

import pytest

from cear_tf.cli import report
from cear_tf.reporting import (
    ablation,
    collection,
    document,
    formatting,
    paper_tables,
    plots,
    sections,
)
from cear_tf.reporting.log_files import CertifyLog
from tests.conftest import SHARED_DATASETS
from tests.helpers import parse_flags

PAPER = SHARED_DATASETS.parent / "reference" / "cear-paper.txt"


def test_transcribed_tables_match_the_paper_text():
    if not PAPER.exists():
        pytest.skip(f"{PAPER} not present")
    text = PAPER.read_text()
    row = re.compile(r"^(?:(\d+\.\d+) )?(RandSmooth|SWEEN|CEAR-?\((?:MV|RW|GM)\)) ((?:\d+ ){8}\d+)$")
    found, table, sigma = {}, None, None
    for line in text.splitlines():
        for number, dataset in ((4, "mnist"), (5, "cifar10"), (6, "tinyimagenet")):
            if line.startswith(f"Table {number}."):
                table = dataset
        if line.startswith("Table 1.") or line.startswith("Table 2.") or line.startswith("Table 3."):
            table = None
        m = row.match(line)
        if m and table:
            sigma = float(m.group(1)) if m.group(1) else sigma
            found.setdefault(table, {}).setdefault(sigma, {})[m.group(2)] = \
                [int(v) for v in m.group(3).split()]
    assert found == paper_tables.CERTIFIED_ACCURACY
    assert "CEAR(RW) 98.29% 10.60% 44.60% 81.00% 16.79% 46.00%" in text
    assert paper_tables.ATTACK_SUCCESS["CEAR(RW)"] == (98.29, 10.6, 44.6, 81.0, 16.79, 46.0)


LABELS = {"randsmooth": "RandSmooth", "sween": "SWEEN", "cear_minus_gm": "CEAR-(GM)",
          "cear_minus_rw": "CEAR-(RW)", "cear_rw": "CEAR(RW)", "cear_gm": "CEAR(GM)",
          "mean_first1": "first 1", "mean_first2": "first 2", "mean_first3": "first 3"}
AGGREGATIONS = {"randsmooth": "single", "sween": "sween", "mean_first1": "mean_first1",
                "mean_first2": "mean_first2", "mean_first3": "mean_first3"}


def _record(root, stems, sigma=0.25, attacks=(), variance=None, dataset="mnist"):
    """The experiment record cear_tf.cli.run writes: methods named by label, logs by path."""
    root.mkdir(parents=True, exist_ok=True)
    methods = [dict(key=s, label=LABELS[s], members=s, aggregation=AGGREGATIONS.get(
        s, s.rsplit("_", 1)[-1]), log=f"certify/{s}.tsv", in_table=True) for s in stems]
    (root / "experiment.json").write_text(json.dumps(dict(
        experiment=root.name, title=root.name, dataset=dataset, sigma=sigma, methods=methods,
        attacks=list(attacks), variance=variance)))


def _fake_run(root, radii_by_method, sigma=0.25, indices=None, variance=None,
              image_order="original"):
    """`indices`: the images of every log, or a {stem: images} map (default 0, 1, ...)."""
    _record(root, radii_by_method, sigma, variance=variance)
    folder = root / "certify"
    for stem, radii in radii_by_method.items():
        settings = dict(dataset="mnist", sigma=sigma, N0=100, N=1000, alpha=0.001,
                        logit_noise=0.0, models=[str(root / "nowhere")], aggregation=stem,
                        image_order=image_order)
        log = CertifyLog(str(folder / f"{stem}.tsv"), settings)
        images = indices.get(stem) if isinstance(indices, dict) else indices
        for i, r in zip(images or range(len(radii)), radii):
            correct = r >= 0
            log.write(i, 1, 1 if correct else -1, max(r, 0.0), correct, 0.1, 900, 1000, 0.9)
        log.close()


def test_report_places_ours_beside_the_paper(tmp_path):
    run = tmp_path / "runs" / "mnist_sigma025_cpu"
    _fake_run(run, {"cear_gm": [0.8, 0.6, 0.3, -1], "randsmooth": [0.8, 0.8, 0.8, 0.8]})
    text = document.build_report([str(run)], str(tmp_path / "rep"), plots=True)
    assert "| CEAR(GM) | paper | 98 | 97 | 93 | 90 | 0 | 0 | 0 | 0 | 0 |  |" in text
    # ours at r = 0, .25, .5, .75: 3/4, 3/4, 2/4, 1/4; ACR (0.8 + 0.6 + 0.3) / 4.
    # With 4 images two standard errors of ours are 43-50 points: only r = .75 (25 vs 90)
    # differs by more than that and by more than two of the paper's (67 images, 7 points).
    assert "| CEAR(GM) | ours (n=4) | 75 | 75 | 50 | 25* | 0 | 0 | 0 | 0 | 0 | 0.425 |" in text
    assert text.index("RandSmooth | paper") < text.index("CEAR(GM) | paper")  # paper's order
    assert "N=1000" in text and "4 images" in text
    png = tmp_path / "rep" / "certified_accuracy_mnist_sigma025_cpu.png"
    assert png.exists() and png.stat().st_size > 1000
    assert "authors' images" not in text  # none of the four is one of the authors' 67
    assert (tmp_path / "rep" / "report.md").read_text() == text


def test_report_cli_errors(tmp_path):
    from absl import app
    parse_flags([], report)
    with pytest.raises(app.UsageError, match="--runs"):
        report.main(["prog"])
    with pytest.raises(ValueError, match="no experiment.json"):
        document.build_report([str(tmp_path)], str(tmp_path / "r"))


def test_attack_table_beside_the_paper(tmp_path):
    from cear_tf.attacks import evaluation
    run = tmp_path / "mnist_sigma025_cpu"
    _record(run, [], attacks=[
        dict(target="CEAR(RW)", norm=norm, mode=mode, log=f"attack/cear_rw_{norm}{suffix}.tsv")
        for norm in ("l2", "linf") for mode, suffix in (("transfer", ""), ("eot", "_eot"))])
    base = dict(norm="2", eps=1.0, eot=1, images=10, clean_accuracy=0.9, seconds=1.0)
    evaluation.write_rows(str(run / "attack" / "cear_rw_l2.tsv"), [
        dict(base, source="member:0", attack="all", robust_accuracy=0.8, success_rate=0.1),
        dict(base, source="mean", attack="all", robust_accuracy=0.7, success_rate=0.25)])
    evaluation.write_rows(str(run / "attack" / "cear_rw_linf_eot.tsv"), [
        dict(base, source="ensemble", attack="all", robust_accuracy=0.2, success_rate=0.75)])
    text = sections.attack_section(str(run))
    assert "| CEAR(RW) | paper | 98.29% | 10.60% | 44.60% | | |" in text
    assert "| CEAR(RW) | ours | 90.00% | 25.00% |  |  | 75.00% |" in text
    assert "RandSmooth | ours" not in text


def test_collect_keeps_small_files_and_report_rebuilds_from_them(tmp_path):
    run = tmp_path / "runs" / "mnist_sigma050_cpu"
    member = run / "cear" / "member_0"
    (member / "variables").mkdir(parents=True)
    (member / "variables" / "big.data").write_bytes(b"x" * 1000)
    (member / "saved_model.pb").write_bytes(b"pb")
    (member / "cear.json").write_text(json.dumps({"arch": "lenet5", "epochs": 3,
                                                  "train_examples": 55000}))
    _record(run, ["cear_gm"], sigma=0.5)
    folder = run / "certify"
    log = CertifyLog(str(folder / "cear_gm.tsv"),
                     dict(dataset="mnist", sigma=0.5, N0=100, N=1000, alpha=0.001,
                          logit_noise=0.0, models=[str(member)], aggregation="gm"))
    log.write(0, 1, 1, 0.7, True, 0.1, 990, 1000, 0.99)
    log.close()
    copy = collection.collect(str(run), str(tmp_path / "results"))
    kept = sorted(str(p.relative_to(copy)) for p in __import__("pathlib").Path(copy).rglob("*")
                  if p.is_file())
    assert kept == ["cear/member_0/cear.json", "certify/cear_gm.tsv", "certify/cear_gm.tsv.json",
                    "experiment.json"]
    import shutil
    shutil.rmtree(run)  # the models are gone; the copy still names their epochs
    text = document.build_report([copy], str(tmp_path / "rep"), plots=False)
    assert "lenet5 trained 3 epochs on 55000 images" in text
    assert "| CEAR(GM) | paper | 96 | 93 | 90 | 84 | 75 | 61 | 44 | 25 | 0 |  |" in text


def test_stars_need_two_standard_errors_of_both_samples():
    # Paper 90% on 67 images: SE 3.7 points. Ours 80% on 500 images: SE 1.8 points.
    assert formatting.differs(80, 500, 90, 67)  # gap 10 > 7.3 and > 3.6
    assert not formatting.differs(84, 500, 90, 67)  # gap 6 < 2 SE of the paper's 67 images
    assert not formatting.differs(70, 4, 90, 67)  # gap 20 < 2 SE of our 4 images (46 points)
    assert formatting.differs(0, 500, 5, 67) is False  # 5% of 67: 2 SE = 5.3 points


def test_report_rows_on_the_authors_images_ensembles_and_claims(tmp_path):
    every20 = list(range(0, 10000, 20))
    authors = set(paper_tables.AUTHORS_IMAGES)
    assert len(authors) == 67 and authors <= set(every20)
    # sigma 1.0: CEAR(RW) certifies every image at 2.6 on the authors' images, RandSmooth 0.9
    # everywhere, CEAR-(RW) 1.9: the claims at sigma 1.0 hold on those images.
    rw = [2.6 if i in authors else 0.1 for i in every20]
    run = tmp_path / "mnist_sigma100"
    _fake_run(run, {"cear_rw": rw, "randsmooth": [0.9] * 500, "sween": [0.9] * 500,
                    "cear_minus_rw": [1.9] * 500,
                    "mean_first1": [0.5] * 500, "mean_first2": [0.7] * 500}, sigma=1.0,
              indices=every20, variance="sween/margin_variance.json")
    (run / "sween").mkdir()
    (run / "sween" / "margin_variance.json").write_text(json.dumps(
        dict(zeta=0.5, images=[1, 2], draws=100,
             by_k=[dict(k=1, measured_ratio=1.0, predicted_ratio=1.0),
                   dict(k=2, measured_ratio=0.74, predicted_ratio=0.75)])))
    text = document.build_report([str(run)], str(tmp_path / "rep"), plots=True)
    # All 500: every image correct at r = 0, the authors' 67 (13.4%) beyond; at r = 2 the gap
    # to the paper's 20% (6.6 points) is within two standard errors of its 67 images.
    assert "| CEAR(RW) | ours (n=500) | 100* | 13* | 13* | 13* | 13* | 13* | 13* | 13* | 13 | " \
        "0.435 |" in text
    assert "| CEAR(RW) | ours, authors' images (n=67) | 100* | 100* | 100* | 100* | 100* | " \
        "100* | 100* | 100* | 100* | 2.600 |" in text
    assert "mean_first" not in text.split("#### Ensembles")[0]  # not a Table 4 row
    assert "| 2 | 500 | 100 | 100 | 100 | 0 | 0 | 0 | 0 | 0 | 0 | 0.700 | 0.740 | 0.750 |" in text
    assert "zeta = 0.500" in text
    # one network at r = sigma = 1 beside the ensembles: Table 4's 42% and ours (0.9 < 1: 0%)
    assert "One network at r = 1, for the ensembles' column of the same radius: Table 4's " \
        "RandSmooth, one LeNet-5 42%; our RandSmooth, one" in text
    claims = text.split("### The paper's claims on MNIST")[1]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in claims.splitlines()
            if line.startswith("| sigma")}
    dominates = rows["sigma 1.0: CEAR(RW) dominates (87/76/60/20% at R = 0.25/0.5/1/2), above "
                     "every other method"]
    # All images: CEAR(RW) 13.4% at R = 0.25 against RandSmooth's 100%; the authors' 67: 100%
    # everywhere, ties (100 vs 100 at R = 0.25 .. 1) count for the leader.
    assert "**not reproduced** (n=500: R=0.25: CEAR(RW) 13.4 vs RandSmooth 100.0" in dominates
    assert dominates.split(" | ")[3].startswith("**reproduced**")
    vga = next(v for k, v in rows.items() if k.startswith("sigma 1.0: beyond R = 2"))
    assert "**not reproduced**" in vga.split(" | ")[2]  # all images: CEAR(RW) 13% < 20%
    assert "**reproduced**" in vga.split(" | ")[3]  # the authors' 67: 100%
    assert "not measured" in rows["sigma 0.5: CEAR(RW) attains 58% at R = 1.5, above both "
                                  "baselines"]
    assert (tmp_path / "rep" / "ensembles_for_rs_mnist_sigma100.png").stat().st_size > 1000


@pytest.mark.parametrize("image_order", ["by_class", "tfds", None])
def test_no_rows_on_the_authors_images_when_index_i_is_another_image(tmp_path, image_order):
    # An image-folder copy (the JPEG CIFAR-10) is read class by class: the authors' indices
    # 2160 .. 3480 would pick two classes, not the paper's images.
    every20 = list(range(0, 10000, 20))
    run = tmp_path / "mnist_sigma100"
    _fake_run(run, {"cear_rw": [2.6] * 500, "randsmooth": [0.9] * 500}, sigma=1.0,
              indices=every20, image_order=image_order)
    text = document.build_report([str(run)], str(tmp_path / "rep"), plots=False)
    assert "| CEAR(RW) | ours (n=500) |" in text
    assert "authors' images (n=" not in text
    why = {"by_class": "read class by class from an image-folder copy",
           "tfds": "in tensorflow-datasets' shuffled order",
           None: "in an order its logs do not record"}[image_order]
    assert f"No row on the authors' images: this run's test images are {why}" in text
    claims = text.split("### The paper's claims on MNIST")[1]
    dominates = next(line for line in claims.splitlines()
                     if line.startswith("| sigma 1.0: CEAR(RW) dominates"))
    assert "**" in dominates.split(" | ")[2]  # measured on all our images
    assert dominates.split(" | ")[3].rstrip(" |") == "not measured"


def test_ensembles_overview_puts_every_sigma_side_by_side(tmp_path):
    runs = []
    for sigma, first, third, zeta in ((0.5, 1.0, 1.2, 0.6), (1.0, 0.5, 0.55, 0.8)):
        run = tmp_path / f"mnist_sigma{sigma:g}"
        _fake_run(run, {"randsmooth": [first] * 4, "mean_first1": [first] * 4,
                        "mean_first2": [first] * 4, "mean_first3": [third] * 4}, sigma=sigma,
                  variance="sween/margin_variance.json")
        (run / "sween").mkdir()
        # at the largest k (3) measured = predicted, as zeta pooled from 3 members makes it
        (run / "sween" / "margin_variance.json").write_text(json.dumps(dict(
            zeta=zeta, images=[0, 1, 2, 3], draws=100,
            by_k=[dict(k=1, measured_ratio=1.0, predicted_ratio=1.0),
                  dict(k=2, measured_ratio=0.79, predicted_ratio=(1 + zeta) / 2),
                  dict(k=3, measured_ratio=(1 + 2 * zeta) / 3,
                       predicted_ratio=(1 + 2 * zeta) / 3)])))
        runs.append(str(run))
    text = document.build_report(runs, str(tmp_path / "rep"), plots=True)
    overview = text.split("### Ensembles for randomized smoothing across sigmas")[1]
    # ACR 1.0 -> 1.2 is +20% at sigma 0.5; 0.5 -> 0.55 is +10% at sigma 1.0; the formula's
    # test is k = 2: |0.79 - 0.8| and |0.79 - 0.9|
    assert "| mnist | 0.5 | 4 | 0.600 | 1.000 | 1.000 | 1.200 |  |  | +20.0% (k=3) | " \
        "0.733 (k=3) | 0.010 (k=2) |" in overview
    assert "| mnist | 1 | 4 | 0.800 | 0.500 | 0.500 | 0.550 |  |  | +10.0% (k=3) | " \
        "0.867 (k=3) | 0.110 (k=2) |" in overview
    assert "equals the measurement at the largest k by construction" in overview
    assert (tmp_path / "rep" / "ensembles_for_rs_overview.png").stat().st_size > 1000
    single = document.build_report(runs[:1], str(tmp_path / "one"), plots=False)
    assert "across sigmas" not in single  # one run: its own section says it all


def test_ablation_table_takes_unchanged_rows_from_base(tmp_path):
    root = tmp_path / "abl"
    _fake_run(root / "base", {"randsmooth": [1.0] * 10, "cear_rw": [0.6] * 10,
                              "cear_minus_rw": [1.2] * 10})
    _fake_run(root / "vga_rule", {"cear_rw": [1.6] * 5 + [-1] * 5})
    text = ablation.ablation_section(str(root))
    assert "| cear_tf's recipe | CEAR(RW) | 10 | 100.0 | 100.0 | 0.0 | 0.0 | 0.0 | 0.600 |  |" in text
    # vga_rule: CEAR(RW) 50% certified beyond 1.5 where base had 0; RandSmooth from base.
    # Paired over the 10 images: the +-50 point changes exceed two standard errors (0.17
    # each); the ACR change (+0.2, per-image sd 0.84, se 0.27) does not.
    assert "| + released VGA rule | CEAR(RW) | 10 | 50.0 | 50.0 | 50.0 | 50.0 | 0.0 | 0.800 | " \
        "-50.0* -50.0* +50.0* +50.0* +0.0 (ACR +0.200; 10 images) |" in text
    assert "| + released VGA rule | RandSmooth (base) | 10 | 100.0 | 100.0 | 100.0 | 0.0 | 0.0 | " \
        "1.000 |  |" in text
    assert "+ clip in training" not in text  # not run yet
    assert "| paper (Table 4, 67 images) | CEAR(RW) |  | 91 | 76 | 60 | 38 | 20 |  |  |" in text
    # a variant certified on other images is compared on the images both have
    _fake_run(root / "train_clip", {"randsmooth": [1.0] * 3})
    text = ablation.ablation_section(str(root))
    assert "| + clip in training | RandSmooth | 3 | 100.0 | 100.0 | 100.0 | 0.0 | 0.0 | 1.000 | " \
        "+0.0 +0.0 +0.0 +0.0 +0.0 (ACR +0.000; 3 images) |" in text


def test_ablation_variant_of_a_variant_is_measured_from_it(tmp_path):
    root = tmp_path / "abl"
    _fake_run(root / "base", {"randsmooth": [1.0] * 4, "cear_rw": [0.6] * 4})
    _fake_run(root / "all", {"randsmooth": [0.6] * 4, "cear_rw": [0.2] * 4})
    _fake_run(root / "released_epochs", {"randsmooth": [0.6] * 2 + [-1] * 2})
    text = ablation.ablation_section(str(root))
    # its change is from `all` (0.6 -> half of the images abstain), not from the base
    assert "| all released choices, RandSmooth 75 epochs | RandSmooth | 4 | 50.0 | 50.0 | 0.0 | " \
        "0.0 | 0.0 | 0.300 | -50.0 -50.0 +0.0 +0.0 +0.0 (ACR -0.300; 4 images) from 'all " \
        "released choices' |" in text
    # the row it does not certify is `all`'s, said so
    assert "| all released choices, RandSmooth 75 epochs | CEAR(RW) (all) | 4 | 100.0 | 0.0 | " \
        "0.0 | 0.0 | 0.0 | 0.200 |  |" in text


def test_ablation_over_seeds_pairs_each_variant_with_its_own_seeds_base(tmp_path):
    roots = []
    # seed 0: vga_rule lifts CEAR(RW) on 4 of 10 images beyond r = 1 (+40 points, ACR +0.4);
    # seed 5: its base is weaker (0.5) and vga_rule lifts 2 of 10 (+20, ACR +0.2).
    for name, base_r, lifted in (("abl", 0.6, 4), ("abl_seed5", 0.5, 2)):
        root = tmp_path / name
        _fake_run(root / "base", {"randsmooth": [1.0] * 10, "cear_rw": [base_r] * 10})
        _fake_run(root / "vga_rule", {"cear_rw": [base_r + 1.0] * lifted
                                      + [base_r] * (10 - lifted)})
        roots.append(str(root))
    _fake_run(tmp_path / "abl" / "train_clip", {"randsmooth": [1.0] * 10})  # one seed only
    text = ablation.ablation_seeds_section(roots)
    assert "| + released VGA rule | CEAR(RW) | 2 | +30.0 (+40.0, +20.0) | +0.0 (+0.0, +0.0) | " \
        "+0.300 (+0.400, +0.200) |" in text
    assert "clip in training" not in text  # certified in one seed folder: nothing to pool
    assert ablation.ablation_seeds_section(roots[:1]) == ""
    full = document.build_report([], str(tmp_path / "rep"), plots=False, ablation_dir=roots)
    assert full.count("### Released-recipe ablation, MNIST") == 2
    assert "### Released-recipe ablation over member seeds" in full


def test_radius_cap_is_the_radius_of_n_votes_of_n():
    from cear_tf.smoothing.decisions import certified_radius, lower_confidence_bound
    for sigma, n, alpha in [(0.25, 1000, 0.001), (1.0, 100000, 0.001), (0.5, 10000, 0.01)]:
        cap = sections.radius_cap(sigma, dict(N=n, alpha=alpha))
        assert cap == pytest.approx(certified_radius(lower_confidence_bound(n, n, alpha), sigma),
                                    rel=1e-6)
    assert sections.radius_cap(1.0, dict(N=100000, alpha=0.001)) == pytest.approx(3.8, abs=0.02)
    assert sections.radius_cap(1.0, dict(N=1000, alpha=0.001, target_radius=0.5)) is None


def test_overview_plot_of_several_runs(tmp_path):
    runs = []
    for sigma, name in ((0.25, "mnist_sigma025"), (1.0, "mnist_sigma100")):
        run = tmp_path / name
        _fake_run(run, {"cear_gm": [0.8, 0.6, 0.3, -1], "cear_minus_gm": [0.5, 0.4, 0.2, 0.1],
                        "randsmooth": [0.8, 0.8, 0.8, 0.8]}, sigma=sigma)
        runs.append(str(run))
    text = document.build_report(runs, str(tmp_path / "rep"), plots=True)
    assert "certified_accuracy_overview.png" in text
    assert (tmp_path / "rep" / "certified_accuracy_overview.png").stat().st_size > 1000
    # CEAR and CEAR- share a colour per aggregation and differ in line style.
    assert plots.style("CEAR(GM)")["color"] == plots.style("CEAR-(GM)")["color"]
    assert plots.style("CEAR(GM)")["linestyle"] != plots.style("CEAR-(GM)")["linestyle"]


def test_percent_cells_round_halves_up_not_to_even():
    # 200 images give half points: 117/200 and 123/200 must print as 59 and 62, not 58 and 62.
    cells = [formatting.percent(100 * k / n) for k, n in ((117, 200), (123, 200), (51, 200),
                                                       (65, 67), (200, 200), (0, 200))]
    assert cells == ["59", "62", "26", "97", "100", "0"]


def test_ensembles_note_says_the_last_k_agrees_by_construction(tmp_path):
    path = tmp_path / "margin_variance.json"
    path.write_text(json.dumps(dict(zeta=0.6, images=[0, 50], draws=10, by_k=[
        dict(k=k, measured_ratio=(1 + 0.6 * (k - 1)) / k, predicted_ratio=(1 + 0.6 * (k - 1)) / k)
        for k in (1, 2, 3)])))
    text = sections.ensembles_section({}, str(path), [0.0, 0.25])
    assert "at k = 3 the two agree by construction" in text and "k = 2..2 are the test" in text


def test_settings_line_states_every_members_accuracy_and_noise():
    students = [dict(clean_test_accuracy=0.6777, noisy_test_accuracy=0.7329, sigma=0.2739,
                     temperature=2.0),
                dict(clean_test_accuracy=0.6573, noisy_test_accuracy=0.6972, sigma=0.3467,
                     temperature=3.0), {}]
    assert sections._members_accuracy(students) == (
        "; test accuracy clean 67.77 / 65.73%, noisy 73.29 / 69.72% at sigma 0.274 / 0.347, "
        "T = 2 / 3 (1 member(s) without a cear.json here)")
    gaussian = [dict(clean_test_accuracy=0.7, noisy_test_accuracy=0.75, sigma=0.25)] * 2
    assert sections._members_accuracy(gaussian) == \
        "; test accuracy clean 70.00 / 70.00%, noisy 75.00 / 75.00% at sigma 0.250"
    assert sections._members_accuracy([{}]) == ""


def _with_member_accuracy(run, digests_measured, digests_certified):
    """The fake run's cear_gm log made by members `digests_certified`, and a member-accuracy
    file (cear_tf.cli.member_accuracy) measured on `digests_measured`, named by the record."""
    record = json.loads((run / "experiment.json").read_text())
    record["member_accuracy"] = {"cear_gm": "member_accuracy/cear_gm.json"}
    (run / "experiment.json").write_text(json.dumps(record))
    settings_path = run / "certify" / "cear_gm.tsv.json"
    settings = json.loads(settings_path.read_text())
    settings["fingerprint"] = {"members": digests_certified, "aggregator_weights": None}
    settings_path.write_text(json.dumps(settings))
    (run / "member_accuracy").mkdir()
    acc = lambda v: dict(value=v, low=v - 0.01, high=v + 0.01, images=100)  # noqa: E731
    (run / "member_accuracy" / "cear_gm.json").write_text(json.dumps(dict(
        sigma=0.25, draws=4, images=100, member_digests=digests_measured,
        members=[dict(member="a", clean=acc(0.9), noisy=acc(0.8123)),
                 dict(member="b", clean=acc(0.7), noisy=acc(0.65))])))


def test_settings_line_gives_members_noisy_accuracy_at_the_certification_sigma(tmp_path):
    run = tmp_path / "mnist_sigma025_cpu"
    _fake_run(run, {"cear_gm": [0.8, 0.6, 0.3, -1]})
    _with_member_accuracy(run, ["d0", "d1"], ["d0", "d1"])
    text = document.build_report([str(run)], str(tmp_path / "rep"), plots=False)
    assert ("noisy test accuracy at the certification sigma 0.25: 81.23 / 65.00% "
            "(4 draws on each of 100 test images)") in text
    copy = collection.collect(str(run), str(tmp_path / "kept"))
    assert (tmp_path / "kept" / run.name / "member_accuracy" / "cear_gm.json").exists()
    assert "81.23 / 65.00%" in document.build_report([copy], str(tmp_path / "rep2"), plots=False)


def test_accuracies_of_other_members_are_not_reported(tmp_path):
    run = tmp_path / "mnist_sigma025_cpu"
    _fake_run(run, {"cear_gm": [0.8, 0.6, 0.3, -1]})
    _with_member_accuracy(run, ["d0", "retrained"], ["d0", "d1"])
    text = document.build_report([str(run)], str(tmp_path / "rep"), plots=False)
    assert "certification sigma" not in text


def test_ablation_80_epochs_are_measured_from_the_same_draws_once_certified(tmp_path):
    root = tmp_path / "abl"
    _fake_run(root / "base", {"randsmooth": [1.0] * 4, "cear_rw": [0.6] * 4})
    _fake_run(root / "all", {"randsmooth": [0.6] * 4, "cear_rw": [0.2] * 4})
    _fake_run(root / "all_80_epochs", {"cear_rw": [1.2] * 4})
    text = ablation.ablation_section(str(root))
    label = "all released choices, students 80 epochs (and keyed training draws)"
    # no 20-epoch students with the same draws yet: the change is from `all`
    assert f"| {label} | CEAR(RW) | 4 | 100.0 | 100.0 | 100.0 | 0.0 | 0.0 | 1.200 | " \
        "+0.0 +100.0 +100.0 +0.0 +0.0 (ACR +1.000; 4 images) from 'all released choices' |" \
        in text
    assert f"| {label} | RandSmooth (all) | 4 |" in text
    _fake_run(root / "all_keyed_draws", {"cear_rw": [1.0] * 2 + [0.4] * 2})
    text = ablation.ablation_section(str(root))
    # now from the students with the same draws at 20 epochs; RandSmooth still `all`'s
    assert f"| {label} | CEAR(RW) | 4 | 100.0 | 100.0 | 100.0 | 0.0 | 0.0 | 1.200 | " \
        "+0.0 +50.0 +50.0 +0.0 +0.0 (ACR +0.500*; 4 images) from 'all released choices, " \
        "students 20 epochs with the keyed training draws' |" in text
    assert f"| {label} | RandSmooth (all) | 4 |" in text
    assert "| all released choices, students 20 epochs with the keyed training draws | " \
        "CEAR(RW) | 4 | 100.0 | 50.0 | 50.0 | 0.0 | 0.0 | 0.700 | +0.0 +50.0 +50.0 +0.0 +0.0 " \
        "(ACR +0.500*; 4 images) from 'all released choices' |" in text


def test_claims_compare_rows_on_the_images_every_row_has(tmp_path):
    # Pass 2 fills the logs row by row: here RandSmooth and SWEEN hold all 500 images, CEAR(RW)
    # only the authors' 67. RandSmooth certifies the 433 others at 3.0 and the 67 at 0.9;
    # CEAR(RW) the 67 at 1.5. On the images all rows have (the 67) CEAR(RW) ties or leads at
    # every radius of the claim; against RandSmooth's 500 it would lose at R = 2 (0 vs 86.6).
    every20 = list(range(0, 10000, 20))
    authors = sorted(paper_tables.AUTHORS_IMAGES)
    run = tmp_path / "mnist_sigma100"
    _fake_run(run, {"cear_rw": [1.5] * 67, "sween": [0.9] * 500, "cear_minus_rw": [0.9] * 500,
                    "randsmooth": [0.9 if i in authors else 3.0 for i in every20]},
              sigma=1.0, indices={"cear_rw": authors, "sween": every20,
                                  "cear_minus_rw": every20, "randsmooth": every20})
    text = document.build_report([str(run)], str(tmp_path / "rep"), plots=False)
    assert "| RandSmooth | ours (n=500) |" in text  # the row's own table keeps all its images
    claims = text.split("### The paper's claims on MNIST")[1]
    dominates = next(line for line in claims.splitlines()
                     if line.startswith("| sigma 1.0: CEAR(RW) dominates"))
    all_images, authors_67 = dominates.split(" | ")[2:4]
    assert all_images.startswith("**reproduced** (n=67: ")
    assert "R=2: CEAR(RW) 0.0 vs " in all_images and "86.6" not in all_images
    assert authors_67.startswith("**reproduced** (n=67: ")
    # CEAR-(RW) holds 500 images, CEAR(RW) 67: the VGA claim names both, so it is decided on 67.
    vga = next(line for line in claims.splitlines() if line.startswith("| sigma 1.0: beyond"))
    assert "(n=67: " in vga.split(" | ")[2]
