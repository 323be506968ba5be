import json
import os

import numpy as np
import pytest
from absl import flags

from cear_tf.cli import analyze, certify, weights
from cear_tf.ensemble import fitting, loading
from cear_tf.reporting import certified_accuracy
from cear_tf.reporting.log_files import LogError, read_rows
from tests import data_fakes as fakes
from tests.helpers import certify_tiny, constant_member, parse_flags, rows_without_time


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cert")
    data_dir = root / "mnist"
    arrays = fakes.write_mnist(data_dir, n_train=40, n_test=12)
    # Every test label 3 and every validation label 3: known answers for RW weights.
    fakes.write_idx(data_dir / "t10k-labels-idx1-ubyte", np.full(12, 3, np.uint8))
    fakes.write_idx(data_dir / "train-labels-idx1-ubyte", np.full(40, 3, np.uint8))
    ens = root / "ens"
    dirs = [constant_member(ens / f"member_{i}", cls) for i, cls in enumerate((3, 3, 5))]
    return dict(root=root, data_dir=str(data_dir), ens=str(ens), dirs=dirs, arrays=arrays)


def test_rw_weights_known_answer_and_certify_all(setup):
    parse_flags([f"--data_dir={setup['data_dir']}", f"--models={setup['ens']}", "--sigma=0.25",
                 "--N0=20", "--N=200", "--batch=64", "--validation_size=10", "--aggregation=rw",
                 "--num_images=5"], weights)
    weights.main(["prog"])
    record = json.load(open(os.path.join(setup["ens"], "weights_rw.json")))
    np.testing.assert_allclose(record["weights"], [0.5, 0.5, 0.0])
    assert record["certified_accuracy"] == [1.0, 1.0, 0.0] and record["images"] == 5

    out = str(setup["root"] / "c_{aggregation}.tsv")
    certify_tiny(setup, out, "--aggregation=mean,mv,rw,gm,single")
    for name in ("mean", "mv", "rw", "gm", "single"):
        rows = read_rows(out.replace("{aggregation}", name))
        assert [int(r["idx"]) for r in rows] == list(range(12))
        assert all(r["predict"] == "3" and r["correct"] == "1" for r in rows), name
        assert all(float(r["radius"]) > 0.3 for r in rows)
    # The analysis reads the logs: everything certified at 0 and 0.25.
    table = certified_accuracy.summarize([("gm", out.replace("{aggregation}", "gm"))], [0.0, 0.25, 5.0])
    assert table[0][1:5] == [12, 100.0, 100.0, 0.0]


def test_sween_weights_cli_and_certify(setup):
    parse_flags([f"--data_dir={setup['data_dir']}", f"--models={setup['ens']}", "--sigma=0.25",
                 "--batch=64", "--validation_size=10", "--aggregation=sween", "--num_images=4",
                 "--sween_draws=8"], weights)
    weights.main(["prog"])
    record = json.load(open(os.path.join(setup["ens"], "weights_sween.json")))
    assert record["draws"] == 8 and record["images"] == 4
    w = np.asarray(record["weights"])
    assert w.sum() == pytest.approx(1.0) and w[2] < 0.05  # member 2 predicts 5, labels are 3
    out = str(setup["root"] / "sween.tsv")
    certify_tiny(setup, out, "--aggregation=sween", "--max=3")
    assert [r["predict"] for r in read_rows(out)] == ["3", "3", "3"]


def test_resume_after_interruption_gives_the_same_rows(setup):
    full = str(setup["root"] / "full.tsv")
    certify_tiny(setup, full, "--aggregation=mean", "--max=8")
    part = str(setup["root"] / "part.tsv")
    certify_tiny(setup, part, "--aggregation=mean", "--max=8")
    # Simulate a kill mid-write: keep the header, 3 rows and half of the fourth.
    with open(part) as f:
        lines = f.read().split("\n")
    with open(part, "w") as f:
        f.write("\n".join(lines[:4]) + "\n" + lines[4][:5])
    certify_tiny(setup, part, "--aggregation=mean", "--max=8")
    assert rows_without_time(part) == rows_without_time(full)
    certify_tiny(setup, part, "--aggregation=mean", "--max=8")  # complete: nothing added
    assert rows_without_time(part) == rows_without_time(full)


def test_rows_depend_only_on_seed_and_index(setup):
    every = str(setup["root"] / "every.tsv")
    odd_schedule = str(setup["root"] / "skip3.tsv")
    certify_tiny(setup, every, "--aggregation=gm", "--seed=4")
    certify_tiny(setup, odd_schedule, "--aggregation=gm", "--seed=4", "--skip=3")
    by_idx = {r["idx"]: r for r in rows_without_time(every)}
    rows = rows_without_time(odd_schedule)
    assert [r["idx"] for r in rows] == ["0", "3", "6", "9"]
    assert all(by_idx[r["idx"]] == r for r in rows)


def test_resume_refuses_other_settings(setup):
    path = str(setup["root"] / "settings.tsv")
    certify_tiny(setup, path, "--aggregation=mean", "--max=2")
    with pytest.raises(LogError, match="--N: log 200 vs now 300"):
        certify_tiny(setup, path, "--aggregation=mean", "--max=2", "--N=300")
    certify_tiny(setup, path, "--aggregation=mean", "--max=2", "--N=300", "--noresume")
    assert os.path.exists(path + ".old1") and len(read_rows(path)) == 2
    assert os.path.exists(path + ".old1.json")


def test_bad_weights_and_members(setup, tmp_path):
    bad = tmp_path / "w.json"
    bad.write_text(json.dumps({"method": "rw", "weights": [1, 1]}))
    with pytest.raises(ValueError, match="2 weights but the ensemble has 3 members"):
        certify_tiny(setup, str(tmp_path / "x.tsv"), "--aggregation=rw", f"--rw_weights={bad}")
    assert not os.path.exists(tmp_path / "x.tsv")  # failed before any log was opened
    with pytest.raises(ValueError, match="no sween weights"):
        certify_tiny(setup, str(tmp_path / "x.tsv"), "--aggregation=sween",
                 f"--sween_weights={tmp_path / 'missing.json'}")
    other = constant_member(tmp_path / "big", 1, shape=(32, 32, 3))
    with pytest.raises(ValueError, match="disagree on input shape"):
        loading.load_ensemble([setup["dirs"][0], other])
    with pytest.raises(ValueError, match="neither a SavedModel"):
        loading.resolve_member_dirs([str(tmp_path)])


@pytest.mark.parametrize("flag,match", [
    ("--sigma=0", "sigma"), ("--alpha=1.5", "alpha"), ("--N0=0", "N0"), ("--N=0", "N"),
    ("--batch=0", "batch"), ("--aggregation=mean,vote", "aggregation"),
])
def test_flag_validation(flag, match):
    with pytest.raises(flags.IllegalFlagValueError, match=match):
        parse_flags([flag], certify)


def test_wrongly_scaled_or_damaged_data_are_refused_before_anything_is_written(
        setup, tmp_path, monkeypatch):
    # The tools read their images through cear_tf.data.datasets; a copy in 0-255 or with NaNs (here
    # what a loader of such a copy would return) is named with the contract, and neither the
    # log nor the weights file appears.
    from cear_tf.data import datasets
    real = datasets.load_split
    for damage, match in ((lambda x: 255 * x, r"divide by 255"),
                          (lambda x: np.where(x > 0.5, np.nan, x), r"not finite")):
        monkeypatch.setattr(datasets, "load_split",
                            lambda *a, damage=damage, **k: (
                                damage(real(*a, **k)[0]).astype(np.float32), real(*a, **k)[1]))
        log = tmp_path / "c.tsv"
        with pytest.raises(ValueError, match=r"input contract .*the mnist test images read "
                                             r"from --data_dir=.*" + match):
            certify_tiny(setup, str(log), "--aggregation=mean")
        assert not os.path.exists(log) and not os.path.exists(str(log) + ".json")
        out = tmp_path / "w.json"
        parse_flags([f"--data_dir={setup['data_dir']}", f"--models={setup['ens']}",
                     "--sigma=0.25", "--N0=20", "--N=200", "--batch=64", "--validation_size=10",
                     "--aggregation=rw", "--num_images=5", f"--outfile={out}"], weights)
        with pytest.raises(ValueError, match=r"input contract .*validation images read from"):
            weights.main(["prog"])
        assert not os.path.exists(out)


def test_sween_weights_prefer_the_reliable_member():
    labels = np.zeros(200, np.int64)
    good = np.tile([0.9, 0.1], (200, 1))
    bad = np.tile([0.1, 0.9], (200, 1))
    lam, nll = fitting.fit_sween_weights(np.stack([good, bad, good]), labels)
    assert lam[1] < 1e-3 and abs(lam[0] - lam[2]) < 1e-6
    assert nll == pytest.approx(-np.log(0.9), abs=1e-3)


def test_analyze_known_table(tmp_path, capsys):
    log = tmp_path / "a.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                   "0\t1\t1\t0.5\t1\t0:00:01\n1\t2\t2\t0.1\t1\t0:00:01\n"
                   "2\t3\t-1\t0.0\t0\t0:00:01\n3\t4\t5\t0.9\t0\t0:00:01\n")
    parse_flags([f"--logs=A={log}", "--radii=0,0.25,0.5,0.75", f"--csv_out={tmp_path / 't.csv'}"], analyze)
    analyze.main(["prog"])
    out = capsys.readouterr().out
    assert "| A | 4 | 50.0 | 25.0 | 25.0 | 0.0 | 0.150 |" in out
    assert (tmp_path / "t.csv").read_text().splitlines()[1] == \
        "A,4,50.0000,25.0000,25.0000,0.0000,0.1500"
    # '=' in the name or in the path: split where the path exists.
    odd = tmp_path / "sigma=0.25"
    odd.mkdir()
    (odd / "b.tsv").write_text(log.read_text())
    assert analyze.parse_named([f"N=1e5={log}", f"B={odd / 'b.tsv'}", str(odd / "b.tsv")]) == [
        ("N=1e5", str(log)), ("B", str(odd / "b.tsv")), ("b", str(odd / "b.tsv"))]


def test_adaptive_and_consensus_cli(setup):
    out = str(setup["root"] / "adaptive.tsv")
    certify_tiny(setup, out, "--aggregation=mean", "--max=4", "--target_radius=0.25",
             "--adaptive_stages=100,1000", "--consensus_k=2")
    rows = read_rows(out)
    assert [r["predict"] for r in rows] == ["3"] * 4
    assert all(int(r["num"]) == 100 and float(r["radius"]) >= 0.25 for r in rows)
    settings = json.load(open(out + ".json"))
    assert settings["target_radius"] == 0.25 and settings["consensus_k"] == 2
    with pytest.raises(flags.IllegalFlagValueError, match="stages"):
        parse_flags(["--adaptive_stages=100,50"], certify)


def test_precision_flag_recorded_and_binding(setup):
    """--precision=mixed_bfloat16 certifies these large-margin members exactly as float32,
    records itself in the settings, and a float32 log is not resumed under it."""
    from cear_tf.ensemble import precision
    if tf_gpu():
        pytest.skip("mixed_bfloat16 is a CPU rewrite")
    f32 = str(setup["root"] / "f32.tsv")
    bf16 = str(setup["root"] / "bf16.tsv")
    certify_tiny(setup, f32, "--aggregation=mean", "--max=3")
    try:
        certify_tiny(setup, bf16, "--aggregation=mean", "--max=3", "--precision=mixed_bfloat16")
        with pytest.raises(LogError, match="--precision: log None vs now 'mixed_bfloat16'"):
            certify_tiny(setup, f32, "--aggregation=mean", "--max=3", "--precision=mixed_bfloat16")
    finally:
        precision.set_inference_precision("float32")
    assert rows_without_time(bf16) == rows_without_time(f32) and len(rows_without_time(f32)) == 3
    with open(bf16 + ".json") as f:
        assert json.load(f)["precision"] == "mixed_bfloat16"


def tf_gpu():
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


def test_analyze_writes_the_table_to_a_file(tmp_path, capsys):
    from cear_tf.reporting.log_files import CertifyLog
    path = str(tmp_path / "a.tsv")
    log = CertifyLog(path, {"x": 1})
    log.write(0, 1, 1, 0.6, True, 0.1, 90, 100, 0.9)
    log.close()
    parse_flags([f"--logs=A={path}", "--radii=0,0.5", f"--output_dir={tmp_path}",
                 "--outfile={output_dir}/t/table.md", "--csv_out={output_dir}/t/table.csv"], analyze)
    analyze.main(["prog"])
    text = (tmp_path / "t" / "table.md").read_text()
    assert "| A | 1 | 100.0 | 100.0 | 0.600 |" in text
    out = capsys.readouterr().out
    assert text.strip() in out
    assert (tmp_path / "t" / "table.csv").read_text().splitlines()[1] == "A,1,100.0000,100.0000,0.6000"
    # The run ends by saying where the table went.
    assert out.strip().splitlines()[-1] == (f"table: {tmp_path}/t/table.md and "
                                            f"{tmp_path}/t/table.csv")


def test_pooled_votes_logged_beside_the_certificate(setup):
    # Members predict 3, 3, 5 with large margins: every aggregation votes 3 on each draw
    # (n_A = N = 200); pooled, class 3 has 400 of the 600 member votes.
    from scipy.stats import beta, norm
    out = str(setup["root"] / "pooled_{aggregation}.tsv")
    certify_tiny(setup, out, "--aggregation=mean,mv", "--votes=pooled")
    sound_out = str(setup["root"] / "sound_{aggregation}.tsv")
    certify_tiny(setup, sound_out, "--aggregation=mean,mv")
    p_lower = beta.ppf(0.01 / 2, 400, 600 - 400 + 1)
    for name in ("mean", "mv"):
        path = out.replace("{aggregation}", name)
        rows = read_rows(path)
        assert list(rows[0])[-6:] == ["pooled_predict", "pooled_radius", "pooled_correct",
                                      "pooled_count", "pooled_num", "pooled_p_lower"]
        assert all(r["pooled_count"] == "400" and r["pooled_num"] == "600" for r in rows)
        assert all(float(r["pooled_radius"]) == pytest.approx(0.25 * norm.ppf(p_lower), rel=1e-5)
                   for r in rows)
        # The certificate columns are those of a run without pooled votes.
        sound = rows_without_time(sound_out.replace("{aggregation}", name))
        assert [{k: r[k] for k in s} for r, s in zip(rows_without_time(path), sound)] == sound
        settings = json.load(open(path + ".json"))
        assert settings["votes"] == "pooled"
        assert settings["pooled_votes"]["valid_certificate"] is False
        assert "NOT a valid certificate" in settings["pooled_votes"]["warning"]
        correct, radius = certified_accuracy.load_log(path, votes="pooled")
        assert correct.all() and radius == pytest.approx(0.25 * norm.ppf(p_lower), rel=1e-5)
    # A sound log cannot be resumed as a pooled one, nor read as one.
    with pytest.raises(LogError, match="votes"):
        certify_tiny(setup, sound_out, "--aggregation=mean,mv", "--votes=pooled")
    with pytest.raises(ValueError, match="no pooled member-vote columns"):
        certified_accuracy.load_log(sound_out.replace("{aggregation}", "mv"), votes="pooled")


def test_pooled_votes_refused_with_adaptive_sampling(setup):
    with pytest.raises(Exception, match="--votes=pooled"):
        certify_tiny(setup, str(setup["root"] / "x.tsv"), "--votes=pooled", "--target_radius=0.1")


def test_released_rw_weights_fit_on_one_noisy_test_copy(setup, tmp_path):
    # A2: each member's accuracy on one noisy (clipped) copy of the test images; every test
    # label is 3, members 0 and 1 always say 3, member 2 always 5.
    out = str(tmp_path / "released_rw.json")
    parse_flags([f"--data_dir={setup['data_dir']}", f"--models={setup['ens']}", "--sigma=0.5",
                 "--batch=5", "--validation_size=10", "--aggregation=rw", "--rw_fit=released",
                 "--num_images=12", "--clip", f"--outfile={out}"], weights)
    weights.main(["prog"])
    record = json.load(open(out))
    np.testing.assert_allclose(record["weights"], [0.5, 0.5, 0.0])
    assert record["noisy_accuracy"] == [1.0, 1.0, 0.0] and record["images"] == 12
    assert (record["rw_fit"], record["split"], record["clip"]) == ("released", "test", True)


def test_is_done_says_finished_only_for_the_same_images_members_and_settings(setup, tmp_path):
    # cear_tf.cli.run skips a stage whose is_done() is True without starting it.
    out = str(tmp_path / "d_{aggregation}.tsv")
    common = [f"--data_dir={setup['data_dir']}", f"--models={setup['ens']}", "--sigma=0.25",
              "--N0=20", "--N=200", "--batch=64", "--alpha=0.01", "--validation_size=10",
              f"--outfile={out}", "--aggregation=mean,mv"]
    parse_flags(common + ["--max=6"], certify)
    assert not certify.is_done()
    certify.main(["prog"])
    for extra, done in ((["--max=6"], True), (["--max=4"], True), (["--max=8"], False),
                        (["--max=6", "--N=300"], False), (["--max=6", "--noresume"], False),
                        (["--max=6", "--votes=pooled"], False),
                        (["--max=6", "--seed=1"], False)):
        parse_flags(common + extra, certify)
        assert certify.is_done() is done, extra


def test_analyze_pairs_every_log_with_the_named_one(tmp_path, capsys):
    """--paired_against: counts on the images both logs hold and the exact McNemar p-value,
    against a hand count; a name that is not one of --logs is refused before any table."""
    from cear_tf.reporting.log_files import CertifyLog
    # A certifies images 0-7 at radius 1.0 and image 8 at 0.2; B certifies 0-1 at 1.0 and
    # 2-8 at 0.2; image 9 only A holds. On the 9 common images at r = 0.5: A certifies 0-7,
    # B 0-1, so 6 are A's only and none B's only.
    radii_a = {i: 1.0 for i in range(8)} | {8: 0.2, 9: 1.0}
    radii_b = {0: 1.0, 1: 1.0} | {i: 0.2 for i in range(2, 9)}
    for name, radii in (("a", radii_a), ("b", radii_b)):
        log = CertifyLog(str(tmp_path / f"{name}.tsv"), {"x": 1})
        for i, r in radii.items():
            log.write(i, 1, 1, r, True, 0.1, 90, 100, 0.9)
        log.close()
    logs = f"--logs=A={tmp_path / 'a.tsv'},B={tmp_path / 'b.tsv'}"
    parse_flags([logs, "--radii=0,0.5", "--paired_against=B",
                 f"--outfile={tmp_path / 't.md'}"], analyze)
    analyze.main(["prog"])
    text = (tmp_path / "t.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| A | 9 vs 9"))
    assert row == f"| A | 9 vs 9 of 9 (+0/-0, p = 1) | 8 vs 2 of 9 (+6/-0, p = {2 * 0.5 ** 6:.2g}) |"
    assert "| B |" not in text.split("Paired against B")[1]
    capsys.readouterr()
    parse_flags([logs, "--paired_against=C"], analyze)
    with pytest.raises(ValueError, match=r"--paired_against: 'C' is not the name of one of "
                                         r"--logs \(A, B\)"):
        analyze.main(["prog"])
    assert capsys.readouterr().out == ""
