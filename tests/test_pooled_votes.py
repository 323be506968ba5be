"""The pooled-vote comparison (cear_tf.reporting.pooled_votes): radius caps, the paper's cells beyond
the sound cap, and the per-row comparison read from logs with pooled columns."""

import json

import numpy as np
import pytest
from scipy.stats import norm

from cear_tf.reporting import pooled_votes
from cear_tf.reporting.log_files import CertifyLog
from cear_tf.smoothing.decisions import Certificate


def test_caps_at_the_papers_protocol():
    assert pooled_votes.sound_cap(0.5, 100_000, 0.001) == pytest.approx(1.9057, abs=1e-4)
    assert pooled_votes.pooled_cap(0.5, 100_000, 5, 0.001) == pytest.approx(2.0852, abs=1e-4)
    # One network at the released alpha/2 is *below* the sound cap.
    assert pooled_votes.pooled_cap(0.5, 100_000, 1, 0.001) < pooled_votes.sound_cap(0.5, 100_000, 0.001)


def test_table5_cear_rw_at_radius_2_needs_pooled_votes():
    cells = pooled_votes.paper_cells_beyond_the_sound_cap()
    hit = [c for c in cells if c[:4] == ("cifar10", 0.5, "CEAR(RW)", 2.0)]
    assert len(hit) == 1 and hit[0][4] == 5
    assert hit[0][5] < 2.0 <= hit[0][6]
    # Every listed cell is non-zero and beyond the sound cap; no MNIST cell is (its sigma 0.25
    # and 0.5 tables are 0 beyond r = 0.75 and 1.75).
    assert all(v > 0 and r > cap for _, _, _, r, v, cap, _ in cells)
    assert not [c for c in cells if c[0] == "mnist"]
    text = pooled_votes.paper_cells_section()
    assert "| 5 (cifar10) | 0.5 | CEAR(RW) | 2 | 5 | 1.906 | 2.085 | yes |" in text


def _pooled_log(path, rows):
    settings = dict(votes="pooled", sigma=1.0)
    with CertifyLog(str(path), settings) as log:
        for idx, (pred, radius, ppred, pradius) in enumerate(rows):
            pooled = Certificate(ppred, pradius, 10, 50, norm.cdf(pradius))
            log.write(idx, 1, pred, radius, pred == 1, 0.1, 9, 10, norm.cdf(radius),
                      pooled=pooled)


def test_run_section_counts_images_gained_and_lost(tmp_path):
    # Image 0: both certify 1 at 0.6 / 0.9; image 1: sound 0.2, pooled abstains; image 2:
    # sound wrong, pooled right at 0.4.
    _pooled_log(tmp_path / "certify" / "cear_mv.tsv",
                [(1, 0.6, 1, 0.9), (1, 0.2, -1, 0.0), (0, 0.3, 1, 0.4)])
    (tmp_path / "experiment.json").write_text(json.dumps(dict(
        title="t", methods=[dict(label="CEAR(MV)", log="certify/cear_mv.tsv")])))
    rows = pooled_votes.run_rows(str(tmp_path), [0.0, 0.5, 0.75])
    assert len(rows) == 1
    row = rows[0]
    np.testing.assert_allclose(row["sound"], [200 / 3, 100 / 3, 0.0])
    np.testing.assert_allclose(row["pooled"], [200 / 3, 100 / 3, 100 / 3])
    assert row["gained"].tolist() == [1, 0, 1] and row["lost"].tolist() == [1, 0, 0]
    assert row["radius_change"] == pytest.approx((0.3 - 0.2 + 0.4) / 3)
    assert (row["larger"], row["smaller"]) == (2, 1)
    text = pooled_votes.section([str(tmp_path)], [0.0, 0.5, 0.75])
    assert "| CEAR(MV) | pooled (not a certificate) | 3 |" in text
    assert "| CEAR(MV) | images gained / lost | | +1 / -1 | +0 / -0 | +1 / -0 |" in text


def test_a_run_without_pooled_logs_is_refused(tmp_path):
    with CertifyLog(str(tmp_path / "certify" / "rs.tsv"), dict(sigma=1.0)) as log:
        log.write(0, 1, 1, 0.5, True, 0.1, 9, 10, 0.7)
    (tmp_path / "experiment.json").write_text(json.dumps(dict(
        title="t", methods=[dict(label="RandSmooth", log="certify/rs.tsv")])))
    with pytest.raises(ValueError, match="no log of its methods has pooled columns"):
        pooled_votes.section([str(tmp_path)], [0.0])
