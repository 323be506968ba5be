"""tf.distribute on this CPU machine: two logical CPU devices (set in conftest)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cear_tf import models
from cear_tf.cli import certify
from cear_tf.reporting import log_files
from cear_tf.reporting.log_files import read_rows
from cear_tf.smoothing import aggregate
from cear_tf.smoothing.core import Smooth
from cear_tf.training import trainers
from tests import data_fakes as fakes
from tests.helpers import parse_flags


@pytest.fixture(scope="module")
def mirrored():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy


def _fit(strategy, make_trainer, x, y, epochs=2):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        trainer = make_trainer()
        trainer(x[:1])
        trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=epochs, verbose=0,
                shuffle=False)
    return [w.numpy() for w in trainer.network.weights]


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, n)


@pytest.mark.parametrize("role", ["gaussian", "student"])
def test_mirrored_steps_match_single_device(mirrored, role):
    x, y = _data()
    teacher = models.build_model("lenet5", (28, 28, 1), 10)

    def make():
        net = models.build_model("lenet5", (28, 28, 1), 10)
        if role == "student":  # sigma 0 so that both runs see the same inputs
            return trainers.Distiller(net, teacher, temperature=3.0, sigma=0.0)
        return trainers.NoisyInputTrainer(net, sigma=0.0)

    single = _fit(tf.distribute.get_strategy(), make, x, y)
    multi = _fit(mirrored, make, x, y)
    for a, b in zip(single, multi):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_replicas_draw_different_noise(mirrored):
    with mirrored.scope():
        trainer = trainers.NoisyInputTrainer(models.build_model("lenet5", (28, 28, 1), 10),
                                             sigma=0.5, seed=1)
    x = np.zeros((8, 28, 28, 1), np.float32)
    dist = mirrored.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x))
    add = tf.function(lambda x: trainer.add_noise(x, trainer.noise_keys.train(3)))
    noise = mirrored.run(add, args=(next(iter(dist)),))
    a, b = (t.numpy() for t in mirrored.experimental_local_results(noise))
    assert a.shape == b.shape == (4, 28, 28, 1)
    assert not np.allclose(a, b)
    assert abs(a.std() - 0.5) < 0.03 and abs(b.std() - 0.5) < 0.03


def test_mirrored_certification_counts_equal_single_device(mirrored):
    net = models.build_model("lenet5", (28, 28, 1), 10)
    with mirrored.scope():
        shared = models.build_model("lenet5", (28, 28, 1), 10)
    shared.set_weights(net.get_weights())
    aggs = [aggregate.make_aggregator(a, 2) for a in ("mean", "mv", "gm")]
    x = np.random.default_rng(3).uniform(size=(28, 28, 1)).astype(np.float32)
    single = Smooth([net, net], 10, 0.5, aggs, logit_noise=0.1, seed=5)
    multi = Smooth([shared, shared], 10, 0.5, aggs, logit_noise=0.1, seed=5, strategy=mirrored)
    # 1,050 draws in batches of 200: 6 batches, the last short, an odd count per replica.
    a = single.sample_counts(x, 1050, 200, idx=7)
    b = multi.sample_counts(x, 1050, 200, idx=7)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].sum() == 1050
    assert single.certify(x, 100, 1050, 0.01, 200, idx=7) == \
        multi.certify(x, 100, 1050, 0.01, 200, idx=7)


def test_shards_merge_into_the_unsharded_log(tmp_path):
    from tests.test_certify_cli import constant_member

    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=20, n_test=15)
    members = [constant_member(tmp_path / f"m{i}", c, strength=0.3) for i, c in enumerate((1, 2))]
    common = [f"--data_dir={data_dir}", f"--models={','.join(members)}", "--sigma=0.5", "--N0=20",
              "--N=100", "--batch=40", "--aggregation=gm", "--validation_size=5", "--skip=2",
              "--seed=9"]
    parse_flags(common + [f"--outfile={tmp_path / 'all.tsv'}"], certify)
    certify.main(["prog"])
    shards = []
    for i in range(3):
        shards.append(str(tmp_path / f"s{i}.tsv"))
        parse_flags(common + [f"--outfile={shards[-1]}", f"--shard={i}/3"], certify)
        certify.main(["prog"])
    assert sorted(int(r["idx"]) for s in shards for r in read_rows(s)) == list(range(0, 15, 2))
    merged = str(tmp_path / "merged.tsv")
    with pytest.raises(log_files.MergeError, match="in no shard"):
        log_files.merge_logs(shards[:2], merged)
    assert log_files.merge_logs(shards, merged) == 8

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "time"} for r in rows]

    assert strip(read_rows(merged)) == strip(read_rows(str(tmp_path / "all.tsv")))
    parse_flags(common + [f"--outfile={tmp_path / 'other.tsv'}", "--N=120", "--shard=0/3"], certify)
    certify.main(["prog"])
    with pytest.raises(log_files.MergeError, match="differs .* in N"):
        log_files.merge_logs([str(tmp_path / "other.tsv"), shards[1], shards[2]],
                         str(tmp_path / "m2.tsv"))


def test_strategy_flag_values():
    from absl import flags
    with pytest.raises(flags.IllegalFlagValueError):
        parse_flags(["--strategy=tpu"], certify)
    with pytest.raises(flags.IllegalFlagValueError, match="shard"):
        parse_flags(["--shard=3/3"], certify)
