"""cear_tf.cli.variance: the margin-variance ratio of ensembles of the first k members, checked
on members with a known correlation and through its command line on tiny members."""

import json

import numpy as np
import pytest

from cear_tf.cli import variance
from cear_tf.smoothing import margins
from tests.helpers import parse_flags


def test_margins_use_the_runner_up_of_the_members_mean():
    probs = np.array([[[0.6, 0.3, 0.1], [0.5, 0.1, 0.4]],
                      [[0.7, 0.2, 0.1], [0.4, 0.3, 0.3]]])  # [M=2, D=2, K=3]
    # Mean over members and draws: [0.55, 0.225, 0.225]: runner-up class 1 (lowest index).
    np.testing.assert_allclose(margins.margins(probs, 0), [[0.3, 0.4], [0.5, 0.1]])


@pytest.mark.parametrize("zeta", [0.0, 0.3, 0.8])
def test_ratios_match_the_closed_form_for_equicorrelated_members(zeta):
    rng = np.random.default_rng(int(zeta * 10))
    images = []
    for scale in (0.5, 1.0, 2.0):  # images differ in margin variance
        common = rng.standard_normal(4000)
        own = rng.standard_normal((5, 4000))
        images.append(scale * (np.sqrt(zeta) * common + np.sqrt(1 - zeta) * own))
    stats = margins.margin_statistics(images)
    assert abs(stats["zeta"] - zeta) < 0.03
    for row in stats["by_k"]:
        exact = (1 + zeta * (row["k"] - 1)) / row["k"]
        assert abs(row["measured_ratio"] - exact) < 0.04, row
        assert abs(row["predicted_ratio"] - exact) < 0.03, row
    assert stats["by_k"][0]["measured_ratio"] == pytest.approx(1.0)


def test_saturated_members_are_an_error():
    with pytest.raises(ValueError, match="saturated"):
        margins.margin_statistics([np.ones((3, 10))])


def test_cli_writes_the_statistics(tmp_path):
    from tests import data_fakes as fakes
    from tests.test_certify_cli import constant_member
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=20, n_test=30)
    ens = tmp_path / "ens"
    for i, cls in enumerate((3, 3, 5)):  # weak members: the noise moves their margins
        constant_member(ens / f"member_{i}", cls, strength=0.5)
    out = tmp_path / "var.json"
    parse_flags([f"--data_dir={data_dir}", f"--models={ens}", "--sigma=0.5", "--draws=200",
                 "--batch=100", "--skip=5", "--start=5", "--max=25", f"--outfile={out}",
                 "--validation_size=0"], variance)
    variance.main(["prog"])
    stats = json.load(open(out))
    assert stats["images"] == [5, 10, 15, 20]
    assert [r["k"] for r in stats["by_k"]] == [1, 2, 3]
    assert -1 <= stats["zeta"] <= 1
