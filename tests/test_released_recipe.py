"""The released code's recipe as options (docs/deviations.md): each option alone, checked
against what the released code does, and the experiment file that selects them all."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cear_tf.training import trainers
from tests.helpers import member_config, tiny_splits, train_tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_released_mnist_vga_rule_signs_by_temperature():
    sigma = 0.5
    assert trainers.vga_sigma(sigma, 0, "released_mnist", 1.0) == sigma
    for seed in range(20):
        for t in (2, 4, 5):
            s = trainers.vga_sigma(sigma, seed, "released_mnist", t)
            assert sigma <= s <= 1.5 * sigma and round(s - sigma, 3) == pytest.approx(s - sigma)
        for t in (3, 6):
            assert 0.5 * sigma <= trainers.vga_sigma(sigma, seed, "released_mnist", t) <= sigma


def test_released_cifar_vga_rule_by_model_number():
    sigma = 0.6
    assert trainers.vga_sigma(sigma, 3, "released_cifar", 2.0) == sigma  # model 1
    for seed in range(20):
        for t in (3, 6):  # models 2 and 5: plus
            assert sigma <= trainers.vga_sigma(sigma, seed, "released_cifar", t) <= 4 / 3 * sigma
        for t in (4, 5):  # models 3 and 4: minus
            assert 2 / 3 * sigma <= trainers.vga_sigma(sigma, seed, "released_cifar", t) <= sigma
    with pytest.raises(ValueError, match="needs the member's temperature"):
        trainers.vga_sigma(sigma, 0, "released_cifar")


def test_uniform_rule_unchanged():
    # The paper's rule is what every committed member was trained with: pinned.
    assert trainers.vga_sigma(1.0, 0) == trainers.vga_sigma(1.0, 0, "uniform", 4.0)
    assert round(trainers.vga_sigma(1.0, 0), 4) == 1.0957  # results/mnist_sigma100 member 0


def test_fixed_noisy_copy_is_one_draw_and_clipped():
    x = np.full((4, 3, 3, 1), 0.5, np.float32)
    a = trainers.fixed_noisy_copy(x, 1.0, seed=7, clip=True)
    np.testing.assert_array_equal(a, trainers.fixed_noisy_copy(x, 1.0, seed=7, clip=True))
    assert a.min() >= 0 and a.max() <= 1 and not np.allclose(a, 0.5)
    b = trainers.fixed_noisy_copy(x, 1.0, seed=7, clip=False)
    assert b.min() < 0 or b.max() > 1


def test_trainer_uses_the_fixed_copy_and_clips_fresh_noise():
    net = keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    trainer = trainers.NoisyInputTrainer(net, 1.0, clip=True)
    x = tf.fill((2, 3, 3, 1), 0.5)
    noisy = trainer.add_noise(x, trainer.noise_keys.train(0))
    assert float(tf.reduce_min(noisy)) >= 0 and float(tf.reduce_max(noisy)) <= 1
    pair = tf.stack([x, x + 0.25], axis=1)  # [B, 2, H, W, C]
    clean, fixed = trainer.clean_and_noisy(pair)
    np.testing.assert_allclose(clean.numpy(), 0.5)
    np.testing.assert_allclose(fixed.numpy(), 0.75)


def test_released_mnist_loss_by_hand():
    teacher = tf.constant([[2.0, 0.0, -1.0]])
    student = tf.constant([[1.0, 1.0, 0.0]])
    t = 4.0
    targets = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    p = np.exp([1.0, 1.0, 0.0]) / np.exp([1.0, 1.0, 0.0]).sum()
    q = np.exp(p / t) / np.exp(p / t).sum()
    expected = -(targets * np.log(q)).sum()
    got = float(trainers.released_mnist_loss(teacher, student, t))
    assert got == pytest.approx(expected, rel=1e-5)


def test_options_reach_training_and_metadata(tmp_path):
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["optimizer"] = type(self.model.optimizer).__name__
            seen["clip"] = self.model.clip

    teacher_dir = str(tmp_path / "teacher")
    train_tiny(member_config(epochs=1), tiny_splits(), teacher_dir, verbose=0)
    from cear_tf.ensemble import members
    teacher = members.load_member(teacher_dir)
    cfg = member_config(role="student", base_sigma=0.5, vga=True, temperature=3.0, optimizer="adam",
               learning_rate=1e-3, vga_rule="released_mnist", student_loss="released_mnist",
               train_clip=True, fixed_noisy_copy=True, arch="released_mnist_cnn")
    meta = train_tiny(cfg, tiny_splits(), str(tmp_path / "s"), teacher, verbose=0,
                      extra_callbacks=[Probe()])
    assert seen == {"optimizer": "Adam", "clip": True}
    assert meta["sigma"] < 0.5  # T = 3: minus
    for key in ("optimizer", "vga_rule", "student_loss", "train_clip", "fixed_noisy_copy"):
        assert meta[key] == getattr(cfg, key)
    with pytest.raises(ValueError, match="--fixed_noisy_copy cannot be combined with --augment"):
        train_tiny(member_config(role="gaussian", base_sigma=0.5, fixed_noisy_copy=True,
                        augment="flip_crop"), tiny_splits(), str(tmp_path / "g"), verbose=0)


def test_nesterov_reaches_the_optimizer_and_the_record(tmp_path):
    from cear_tf.ensemble import members
    from cear_tf.training import recipe
    optimizer = recipe.build_optimizer(member_config(momentum=0.8, nesterov=True), steps_per_epoch=10)
    assert optimizer.nesterov and optimizer.momentum == 0.8
    assert not recipe.build_optimizer(member_config(), steps_per_epoch=10).nesterov
    train_tiny(member_config(epochs=1, nesterov=True), tiny_splits(), str(tmp_path / "t"), verbose=0)
    assert members.load_member(str(tmp_path / "t")).metadata["nesterov"] is True


def test_released_recipe_experiment_file_selects_every_option():
    from cear_tf.config import experiment, stages
    exp = experiment.load(os.path.join(REPO, "flags", "mnist_released_sigma100.toml"))
    commands = {s.what: s.args for s in stages.stages(exp)}
    train_args = {k: v for k, v in commands.items() if k.startswith("train ")}
    for what, args in train_args.items():
        assert "--arch=released_mnist_cnn" in args and "--nonormalize" in args, what
    for what in ("train cear", "train cear_minus"):
        for option in ("--optimizer=adam", "--student_loss=released_mnist", "--train_clip",
                       "--fixed_noisy_copy", "--batch_size=256"):
            assert option in train_args[what], (what, option)
    assert "--vga_rule=released_mnist" in train_args["train cear"]
    assert "--vga_rule=released_mnist" not in train_args["train cear_minus"]
    for option in ("--train_clip", "--fixed_noisy_copy", "--momentum=0.8", "--nesterov"):
        assert option in train_args["train randsmooth"], option
    for option in ("--nesterov", "--batch_size=256", "--momentum=0.8"):
        assert option in train_args["train teacher"], option
    certify_args = [v for k, v in commands.items() if k.startswith("certify ")]
    assert certify_args and all("--clip" in args for args in certify_args)
    assert any("--aggregation=mean,rw,gm" in args for args in certify_args)  # released "MV"
