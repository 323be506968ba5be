import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app

from cear_tf.cli import train
from cear_tf.ensemble import members
from cear_tf.training import recipe
from tests import data_fakes as fakes
from tests.helpers import (
    Interrupt,
    epochs_logged,
    member_config,
    parse_flags,
    tiny_splits,
    train_tiny,
)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("teacher") / "teacher")
    train_tiny(member_config(epochs=2), tiny_splits(), path, verbose=0)
    return path


def test_export_round_trip_same_logits(teacher_dir):
    splits = tiny_splits()
    loaded = tf.saved_model.load(teacher_dir)
    fn = loaded.signatures["serving_default"]
    x = splits.test[0][:8]
    out = fn(images=tf.constant(x))["logits"].numpy()
    member = members.load_member(teacher_dir)
    assert member.input_shape == (28, 28, 1) and member.num_classes == 10
    # With variables: bit-identical; frozen (the default): constant folding reorders float
    # arithmetic, so equal to rounding.
    plain = members.load_member(teacher_dir, frozen=False)
    np.testing.assert_allclose(plain(tf.constant(x)).numpy(), out, rtol=0, atol=0)
    np.testing.assert_allclose(member(tf.constant(x)).numpy(), out, rtol=1e-5, atol=1e-5)
    meta = json.load(open(os.path.join(teacher_dir, "cear.json")))
    for key in ("arch", "dataset", "role", "base_sigma", "sigma", "temperature", "seed", "epochs",
                "clean_test_accuracy", "noisy_test_accuracy", "package_version"):
        assert key in meta
    assert meta["role"] == "teacher" and meta["input_shape"] == [28, 28, 1]


def test_exported_logits_equal_keras_logits(tmp_path):
    splits = tiny_splits()
    cfg = member_config()
    trainer = recipe.build_trainer(cfg, splits.info)
    x = splits.test[0][:5]
    members.export_member(trainer.network, str(tmp_path / "m"), {"role": "teacher"})
    member = members.load_member(str(tmp_path / "m"))
    np.testing.assert_allclose(member(tf.constant(x)).numpy(),
                               trainer.network(x, training=False).numpy(), rtol=1e-6, atol=1e-6)


def test_student_metadata_records_vga(teacher_dir, tmp_path):
    teacher = members.load_member(teacher_dir)
    meta = train_tiny(member_config(role="student", base_sigma=0.4, vga=True, temperature=3.0,
                                   seed=5, learning_rate=0.01),
                              tiny_splits(), str(tmp_path / "s"), teacher, verbose=0)
    assert 0.2 <= meta["sigma"] <= 0.6 and meta["sigma"] != 0.4
    assert meta["vga_beta"] == pytest.approx(meta["sigma"] - 0.4)
    assert meta["temperature"] == 3.0 and meta["teacher_dir"] == teacher_dir
    assert 0.0 <= meta["noisy_test_accuracy"] <= 1.0


def _train_until_interrupted(cfg, splits, model_dir, epoch, batch):
    with pytest.raises(KeyboardInterrupt):
        train_tiny(cfg, splits, model_dir, verbose=0,
                   extra_callbacks=[Interrupt(epoch=epoch, batch=batch)])


def test_resume_after_interrupted_epoch_continues(tmp_path):
    splits = tiny_splits()
    model_dir = str(tmp_path / "m")
    cfg = member_config(epochs=3)
    _train_until_interrupted(cfg, splits, model_dir, epoch=1, batch=1)
    assert epochs_logged(model_dir) == [0]
    assert os.path.isdir(model_dir + ".ckpt") and not os.path.exists(model_dir)
    clock = os.path.join(model_dir + ".ckpt", "train_seconds.json")
    with open(clock) as f:
        first_run = json.load(f)
    assert first_run["epochs"] == 1 and first_run["seconds"] > 0
    # A stand-in for a long first run, so that the sum cannot pass by the last run alone.
    with open(clock, "w") as f:
        json.dump({"epochs": 1, "seconds": 1000.0}, f)
    meta = train_tiny(cfg, splits, model_dir, verbose=0)
    assert epochs_logged(model_dir) == [0, 1, 2]  # epoch 0 not trained again
    assert members.is_complete_member(model_dir)
    assert not os.path.exists(model_dir + ".ckpt")  # removed once training finished
    assert 1000.0 < meta["train_seconds"] < 1000.0 + 600  # every run's seconds, summed
    assert meta["train_seconds_complete"] is True


def test_train_seconds_unknown_before_the_clock_are_flagged(tmp_path):
    splits = tiny_splits()
    model_dir = str(tmp_path / "m")
    cfg = member_config(epochs=2)
    _train_until_interrupted(cfg, splits, model_dir, epoch=1, batch=0)
    os.remove(os.path.join(model_dir + ".ckpt", "train_seconds.json"))  # an older checkpoint
    meta = train_tiny(cfg, splits, model_dir, verbose=0)
    assert meta["train_seconds_complete"] is False and meta["train_seconds"] >= 0
    fresh = train_tiny(cfg, splits, str(tmp_path / "fresh"), verbose=0)
    assert fresh["train_seconds_complete"] is True and fresh["train_seconds"] > 0


def test_noresume_restarts(tmp_path):
    splits = tiny_splits()
    model_dir = str(tmp_path / "m")
    _train_until_interrupted(member_config(epochs=2), splits, model_dir, epoch=1, batch=0)
    train_tiny(member_config(epochs=2), splits, model_dir, resume=False, verbose=0)
    assert epochs_logged(model_dir) == [0, 1]  # the discarded run's epoch moved aside
    assert os.path.exists(model_dir + ".logs/train.discarded.1.csv")


def test_bad_inputs_fail_before_training(teacher_dir, tmp_path):
    splits = tiny_splits()
    model_dir = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="teacher"):
        train_tiny(member_config(role="student", base_sigma=0.25, temperature=2.0), splits,
                           model_dir, teacher=None, verbose=0)
    with pytest.raises(ValueError, match="sigma"):
        train_tiny(member_config(role="gaussian", base_sigma=0.0), splits, model_dir, verbose=0)
    teacher = members.load_member(teacher_dir)
    cifar = tiny_splits(dataset="cifar10")
    with pytest.raises(ValueError, match=r"takes input \(28, 28, 1\).*\(32, 32, 3\)"):
        train_tiny(member_config(role="student", dataset="cifar10", base_sigma=0.25,
                                temperature=2.0, arch="resnet20"), cifar, model_dir, teacher,
                           verbose=0)
    assert not os.path.exists(model_dir + ".logs")  # nothing started


def test_teacher_class_count_mismatch(tmp_path):
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    members.export_member(net, str(tmp_path / "t5"), {"role": "teacher"})
    teacher = members.load_member(str(tmp_path / "t5"))
    with pytest.raises(ValueError, match="5 classes but mnist has 10"):
        recipe.check_teacher(teacher, tiny_splits().info)


def test_cli_flags_validated():
    from absl import flags
    for argv, name in ((["--temperature=0.5"], "temperature"), (["--sigma=0"], "sigma"),
                       (["--temperatures=2,x"], "temperatures"), (["--epochs=0"], "epochs")):
        with pytest.raises(flags.IllegalFlagValueError, match=name):
            parse_flags(argv, train)
    parse_flags(["--role=student"], train)
    with pytest.raises(app.UsageError, match="--teacher_dir"):
        train.main(["prog"])


def test_cli_ensemble_trains_and_skips_finished(teacher_dir, tmp_path):
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=60, n_test=20)
    out = tmp_path / "ens"
    argv = [f"--data_dir={data_dir}", "--role=ensemble", f"--teacher_dir={teacher_dir}",
            "--temperatures=2,4", "--sigma=0.5", "--epochs=1", "--batch_size=16",
            "--validation_size=10", f"--model_dir={out}", "--verbose=0", "--seed=3",
            "--allow_collapsed"]
    parse_flags(argv, train)
    train.main(["prog"])
    metas = [json.load(open(out / f"member_{i}" / "cear.json")) for i in range(2)]
    assert [m["temperature"] for m in metas] == [2.0, 4.0]
    assert [m["seed"] for m in metas] == [3, 4]
    assert metas[0]["sigma"] != metas[1]["sigma"]  # VGA: each member its own sigma
    assert metas[0]["train_examples"] == 50 and metas[0]["validation_size"] == 10
    stamp = os.path.getmtime(out / "member_0" / "saved_model.pb")
    parse_flags(argv, train)
    train.main(["prog"])
    assert os.path.getmtime(out / "member_0" / "saved_model.pb") == stamp  # skipped


def test_clipnorm_reaches_the_optimizer_and_metadata(tmp_path):
    import keras as k
    seen = {}

    class Probe(k.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["clip"] = self.model.optimizer.global_clipnorm

    meta = train_tiny(member_config(clipnorm=1.0), tiny_splits(), str(tmp_path / "m"), verbose=0,
                              extra_callbacks=[Probe()])
    assert seen["clip"] == 1.0 and meta["clipnorm"] == 1.0


def test_literature_lenet_trains_with_the_literature_recipe(tmp_path):
    # The baseline of shared/literature_lenet.toml: unnormalised pixels, SGD with a step
    # schedule and no gradient clipping; its cear.json records the recipe.
    cfg = member_config(role="gaussian", arch="literature_lenet", base_sigma=0.5, normalize=False,
               epochs=2, learning_rate=0.01, lr_schedule="step", lr_step_epochs=1,
               lr_gamma=0.1, clipnorm=0.0, weight_decay=1e-3, batch_size=32)
    path = str(tmp_path / "literature_lenet")
    train_tiny(cfg, tiny_splits(), path, verbose=0)
    meta = json.load(open(os.path.join(path, "cear.json")))
    assert (meta["arch"], meta["normalize"], meta["lr_schedule"], meta["clipnorm"]) == (
        "literature_lenet", False, "step", 0.0)
    loaded = tf.saved_model.load(path)
    assert int(sum(np.prod(v.shape) for v in loaded.trainable_variables)) == 431080
    assert members.load_member(path)(tf.zeros((2, 28, 28, 1))).shape == (2, 10)
