"""cear_tf.cli.member_accuracy: interval coverage, the noise streams, and a member whose noisy
accuracy has a closed form, through the command line."""

import json
import math

import keras
import numpy as np
import pytest
from scipy import stats

from cear_tf.cli import member_accuracy
from cear_tf.ensemble import accuracy, members
from cear_tf.smoothing.noise import noisy_images
from tests import data_fakes as fakes
from tests.helpers import constant_member, parse_flags


def test_wilson_interval_known_values():
    # Wilson (1927) at z = 1.96: 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634].
    low, high = accuracy.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = accuracy.wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    with pytest.raises(ValueError, match="at least one trial"):
        accuracy.wilson_interval(0, 0)


@pytest.mark.parametrize("p,n", [(0.3, 50), (0.9, 200), (0.7, 1000)])
def test_wilson_interval_covers_95_percent(p, n):
    rng = np.random.default_rng(int(p * 100) + n)
    trials = 4000
    hits = sum(lo <= p <= hi for lo, hi in
               (accuracy.wilson_interval(int(k), n) for k in rng.binomial(n, p, trials)))
    # 4000 trials: the coverage's standard error is ~0.0035.
    assert 0.93 <= hits / trials <= 0.97, hits / trials


def test_noisy_interval_covers_the_population_accuracy():
    # Images differ in how often noise fools the member (p_i ~ Beta(4, 2), mean 2/3), and
    # the draws of one image are binomial(draws, p_i): the interval is over images.
    rng = np.random.default_rng(7)
    trials, hits = 1000, 0
    for _ in range(trials):
        p = rng.beta(4, 2, size=300)
        fractions = rng.binomial(4, p) / 4
        acc = accuracy.noisy_accuracy(fractions)
        hits += acc.low <= 2 / 3 <= acc.high
    assert 0.93 <= hits / trials <= 0.97, hits / trials


def test_noise_does_not_depend_on_batching_and_has_the_asked_std():
    images = np.zeros((3, 28, 28, 1), np.float32)
    together = noisy_images(images, np.array([4, 5, 6]), 0.5, 2, seed=1).numpy()
    alone = noisy_images(images[:1], np.array([5]), 0.5, 2, seed=1).numpy()
    np.testing.assert_array_equal(together[2:4], alone)
    assert together.shape == (6, 28, 28, 1)
    assert np.std(together) == pytest.approx(0.5, rel=0.03)
    other_seed = noisy_images(images[:1], np.array([5]), 0.5, 2, seed=2).numpy()
    assert not np.allclose(alone, other_seed)
    graph = accuracy._noisy_images_graph()(images, np.array([4, 5, 6]), 0.5, 2, 1)
    np.testing.assert_array_equal(graph.numpy(), together)  # what measure() runs


def threshold_member(path, threshold):
    """Predicts class 1 when the mean pixel exceeds `threshold`, else class 0."""
    inputs = keras.Input((28, 28, 1))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.array([[-1.0, 1.0]], np.float32),
                       np.array([threshold, -threshold], np.float32)])
    members.export_member(model, str(path), {"role": "test", "sigma": 0.8})
    return str(path)


def test_cli_matches_the_closed_form_noisy_accuracy(tmp_path, capsys):
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=10, n_test=200)
    fakes.write_idx(data_dir / "t10k-images-idx3-ubyte", np.full((200, 28, 28), 128, np.uint8))
    fakes.write_idx(data_dir / "t10k-labels-idx1-ubyte", np.ones(200, np.uint8))
    ens = tmp_path / "ens"
    threshold_member(ens / "member_0", 0.48)
    constant_member(ens / "member_1", 0, k=2, strength=50.0)  # never class 1, noisy or not
    out = tmp_path / "acc.json"
    parse_flags([f"--data_dir={data_dir}", f"--models={ens}", "--sigma=1.0", "--draws=50",
                 "--batch=3200", f"--outfile={out}"], member_accuracy)
    member_accuracy.main(["prog"])
    record = json.load(open(out))
    assert record["images"] == 200 and record["draws"] == 50 and record["sigma"] == 1.0
    threshold, constant = record["members"]
    # The mean of 784 pixels of N(0, 1) noise is N(0, 1/784): P(mean > 0.48) for a 128/255
    # image is Phi((128/255 - 0.48) * 28).
    exact = stats.norm.cdf((128 / 255 - 0.48) * math.sqrt(784))
    assert threshold["clean"]["value"] == 1.0
    assert threshold["noisy"]["low"] <= exact <= threshold["noisy"]["high"]
    assert abs(threshold["noisy"]["value"] - exact) < 0.02
    assert threshold["trained_sigma"] == 0.8
    assert constant["clean"]["value"] == 0.0 and constant["noisy"]["value"] == 0.0
    assert constant["clean"]["high"] == pytest.approx(3.8415 / (200 + 3.8415), abs=1e-4)
    assert "trained at sigma 0.800" in capsys.readouterr().out


def test_cli_refuses_members_of_another_shape(tmp_path):
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=10, n_test=5)
    constant_member(tmp_path / "rgb", 1, shape=(32, 32, 3))
    parse_flags([f"--data_dir={data_dir}", f"--models={tmp_path / 'rgb'}",
                 f"--outfile={tmp_path / 'x.json'}"], member_accuracy)
    with pytest.raises(ValueError, match="--models: members take"):
        member_accuracy.main(["prog"])
    assert not (tmp_path / "x.json").exists()


def test_resume_keeps_a_file_of_the_same_members_and_settings_only(tmp_path):
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=10, n_test=6)
    ens = tmp_path / "ens"
    constant_member(ens / "member_0", 3)
    out = tmp_path / "acc.json"
    args = [f"--data_dir={data_dir}", f"--models={ens}", f"--outfile={out}"]
    parse_flags(args + ["--draws=2"], member_accuracy)
    member_accuracy.main(["prog"])
    out.write_text(out.read_text().replace('"clip": false', '"clip": false, "kept": 1'))
    member_accuracy.main(["prog"])
    assert json.loads(out.read_text()).get("kept") == 1  # same members and settings: kept
    parse_flags(args + ["--draws=3"], member_accuracy)
    member_accuracy.main(["prog"])
    assert "kept" not in json.loads(out.read_text()) and json.loads(out.read_text())["draws"] == 3
    constant_member(ens / "member_0", 5)  # the member retrained: measured again
    parse_flags(args + ["--draws=3"], member_accuracy)
    out.write_text(out.read_text().replace('"clip": false', '"clip": false, "kept": 1'))
    member_accuracy.main(["prog"])
    assert "kept" not in json.loads(out.read_text())
