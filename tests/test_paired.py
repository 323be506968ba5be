"""Exact McNemar comparisons of two logs (cear_tf.reporting.paired) against known answers."""

import numpy as np
import pytest
from scipy.stats import binom

from cear_tf.reporting import paired
from cear_tf.reporting.comparisons import SINGLE_NETWORK, single_network_section


def _log(idx, correct, radius):
    return dict(idx=np.array(idx), correct=np.array(correct, bool),
                radius=np.array(radius, float))


def test_mcnemar_known_values():
    assert paired.mcnemar_p(0, 0) == 1.0
    # 8 discordant pairs all one way: 2 * 0.5^8.
    assert paired.mcnemar_p(8, 0) == pytest.approx(2 * 0.5 ** 8)
    assert paired.mcnemar_p(3, 5) == pytest.approx(min(1.0, 2 * binom.cdf(3, 8, 0.5)))
    assert paired.mcnemar_p(5, 3) == paired.mcnemar_p(3, 5)


def test_compare_counts_the_discordant_images_on_the_common_ones():
    a = _log([0, 1, 2, 3, 4], [1, 1, 1, 0, 1], [0.5, 0.2, 1.0, 0.0, 0.7])
    b = _log([1, 2, 3, 4, 9], [1, 0, 1, 1, 1], [0.6, 0.0, 0.9, 0.1, 2.0])
    at0, at05 = paired.compare(a, b, [0.0, 0.5])
    # Common images 1..4. r = 0: A certifies 1, 2, 4; B certifies 1, 3, 4.
    assert (at0.images, at0.a, at0.b, at0.a_only, at0.b_only) == (4, 3, 3, 1, 1)
    assert at0.p_value == 1.0
    # r = 0.5: A certifies 2, 4 (1.0, 0.7); B certifies 1 (0.6) and 3 (0.9).
    assert (at05.a, at05.b, at05.a_only, at05.b_only) == (2, 2, 2, 2)
    only = paired.compare(a, b, [0.0], keep={1, 2})[0]
    assert (only.images, only.a_only, only.b_only) == (2, 1, 0)
    assert paired.describe(at0) == "3 vs 3 of 4 (+1/-1, p = 1)"


def test_the_test_holds_its_level_under_the_null():
    # Two rows that certify each image independently with the same probability: the exact
    # test rejects at 5% in at most 5% of repeats (it is conservative).
    rng = np.random.default_rng(0)
    rejections = 0
    for _ in range(2000):
        a = _log(range(60), rng.random(60) < 0.7, np.ones(60))
        b = _log(range(60), rng.random(60) < 0.7, np.ones(60))
        rejections += paired.compare(a, b, [0.5])[0].p_value <= 0.05
    assert rejections / 2000 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 2000)


def test_single_network_section_pairs_each_row_at_radii_in_units_of_sigma():
    # sigma 0.25: radii 0, 0.25, 0.5, 0.625, 0.75, 0.875. The ensemble certifies images 0-5
    # at 0.9 and image 6 at 0.3; the network images 0-1 at 0.9 and 2-6 at 0.6.
    ensemble = _log(range(7), [1] * 7, [0.9] * 6 + [0.3])
    network = _log(range(7), [1] * 7, [0.9] * 2 + [0.6] * 5)
    info = {"dataset": "mnist", "sigma": 0.25,
            "curves": {"CEAR(RW)": ensemble, SINGLE_NETWORK: network}}
    text = single_network_section([info])
    row = next(line for line in text.splitlines() if line.startswith("| 0.25 | CEAR(RW) |"))
    cells = row.strip("| ").split(" | ")[2:]
    assert cells[1] == "r = 0.25: 7 vs 7 of 7 (+0/-0, p = 1)"
    assert cells[2] == "r = 0.5: 6 vs 7 of 7 (+0/-1, p = 1)"
    assert cells[3] == "r = 0.625: 6 vs 2 of 7 (+4/-0, p = 0.12)"
    assert cells[5] == "r = 0.875: 6 vs 2 of 7 (+4/-0, p = 0.12)"
    assert "r = 3.5 sigma" in text
    assert single_network_section([{**info, "curves": {"CEAR(RW)": ensemble}}]) == ""
