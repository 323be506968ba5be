"""Fused training and evaluation of LeNet-5 ensembles (models.fused,
trainers.FusedEnsembleTrainer, loop.train_fused_members): member i of the fused network is
member i of separate training, step for step."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cear_tf import models
from cear_tf.cli import train
from cear_tf.ensemble import members
from cear_tf.models.fused import FusedLeNet5, stack_member_inputs
from cear_tf.training import loop, recipe, trainers
from tests.helpers import member_config, parse_flags, tiny_splits, train_tiny

SHAPE = (28, 28, 1)
NORM = ((0.13,), (0.31,))


def _networks(m, seed=0):
    nets = []
    for i in range(m):
        keras.utils.set_random_seed(seed + i)
        nets.append(models.build_model("lenet5", SHAPE, 10, NORM))
    return nets


def test_fused_logits_equal_the_members_and_round_trip():
    nets = _networks(3)
    fused = FusedLeNet5.from_networks(nets)
    x = np.random.default_rng(0).uniform(size=(4, 3, *SHAPE)).astype(np.float32)
    out = fused(stack_member_inputs(tf.constant(x))).numpy()
    ref = np.stack([nets[i](x[:, i]).numpy() for i in range(3)])
    np.testing.assert_allclose(out, ref, atol=1e-5)
    back = fused.member_network(2, lambda: models.build_model("lenet5", SHAPE, 10, NORM))
    np.testing.assert_allclose(back(x[:, 2]).numpy(), ref[2], atol=1e-6)


def test_per_member_clipping_equals_clipping_each_member_alone():
    nets = _networks(3, seed=4)
    fused = FusedLeNet5.from_networks(nets)
    x = np.random.default_rng(1).uniform(size=(8, 3, *SHAPE)).astype(np.float32)
    scales = tf.constant([1.0, 30.0, 0.01])  # member 1's gradient far above the clip
    with tf.GradientTape() as tape:
        per_member = tf.reduce_mean(fused(stack_member_inputs(tf.constant(x))) ** 2, axis=[1, 2])
        loss = tf.reduce_sum(per_member * scales)
    grads = fused.clip_per_member(tape.gradient(loss, fused.trainable_variables), 1.0)
    for i, net in enumerate(nets):
        with tf.GradientTape() as tape:
            loss_i = tf.reduce_mean(net(x[:, i]) ** 2) * scales[i]
        alone, _ = tf.clip_by_global_norm(tape.gradient(loss_i, net.trainable_variables), 1.0)
        expected = {v.path.split("/")[-2] + "_" + v.path.split("/")[-1]: g.numpy()
                    for v, g in zip(net.trainable_variables, alone)}
        for var, g in zip(fused.trainable_variables, grads):
            name = var.path.split("/")[-1]  # e.g. c1_kernel
            if len(var.shape) in (2, 3) and var.shape[0] == 3:
                part = g.numpy()[i]
            else:
                n = var.shape[-1] // 3
                part = g.numpy()[..., i * n:(i + 1) * n]
            np.testing.assert_allclose(part, expected[name], rtol=1e-4, atol=1e-7,
                                       err_msg=f"{name}, member {i}")


@pytest.mark.parametrize("role", ["gaussian", "student"])
def test_fused_steps_equal_separate_steps(role, tmp_path):
    """Without noise (sigma 0) the fused trainer's updates are the separate trainers'."""
    m, steps, batch = 3, 3, 16
    splits = tiny_splits(n_train=64)
    x, y = splits.train
    teacher = None
    if role == "student":
        teacher_dir = str(tmp_path / "teacher")
        train_tiny(member_config(epochs=1), splits, teacher_dir, verbose=0)
        teacher = members.load_member(teacher_dir)
    rng = np.random.default_rng(5)
    orders = [rng.permutation(len(y)) for _ in range(m)]
    temps = [2.0, 4.0, 6.0] if role == "student" else None
    nets = _networks(m, seed=10)
    fused = FusedLeNet5.from_networks(nets)
    fused_trainer = trainers.FusedEnsembleTrainer(fused, [0.0] * m, temps, teacher, clipnorm=1.0)
    fused_trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-4))
    for s in range(steps):
        idx = [o[s * batch:(s + 1) * batch] for o in orders]
        fused_trainer.train_on_batch(np.stack([x[i] for i in idx], 1), np.stack([y[i] for i in idx], 1))
    for i, net in enumerate(_networks(m, seed=10)):
        if role == "student":
            single = trainers.Distiller(net, teacher, temps[i], 0.0)
        else:
            single = trainers.NoisyInputTrainer(net, 0.0)
        single.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-4,
                                                      global_clipnorm=1.0))
        for s in range(steps):
            idx = orders[i][s * batch:(s + 1) * batch]
            single.train_on_batch(x[idx], y[idx])
        got = fused.member_network(i, lambda: models.build_model("lenet5", SHAPE, 10, NORM))
        for a, b in zip(got.get_weights(), net.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fused_members_export_like_separate_ones(tmp_path):
    splits = tiny_splits()
    configs = recipe.ensemble_configs(member_config(role="gaussian", base_sigma=0.5, epochs=2), [None],
                                     "gaussian", num_members=3)
    dirs = [str(tmp_path / "ens" / f"member_{i}") for i in range(3)]
    metas = loop.train_fused_members(configs, splits, dirs, verbose=0, allow_collapsed=True)
    assert [m["seed"] for m in metas] == [0, 1, 2]
    for d, meta in zip(dirs, metas):
        assert members.is_complete_member(d)
        saved = json.load(open(os.path.join(d, "cear.json")))
        assert saved["fused_with"] == ["member_0", "member_1", "member_2"]
        assert saved["clean_test_accuracy"] == meta["clean_test_accuracy"]
    assert not os.path.exists(tmp_path / "ens" / "fused_member_0_member_1_member_2.ckpt")
    with open(tmp_path / "ens" / "fused_member_0_member_1_member_2.logs" / "train.csv") as f:
        assert len(f.read().strip().split("\n")) == 3  # header + 2 epochs


def test_fusion_needs_members_that_differ_only_by_seed_and_temperature():
    base = member_config(role="student", base_sigma=0.5, vga=True, temperature=2.0)
    configs = recipe.ensemble_configs(base, [2, 3], "student")
    assert recipe.fusion_problem(configs) is None
    assert "per_example" in recipe.fusion_problem(
        [c.__class__(**{**c.__dict__, "vga_mode": "per_example"}) for c in configs])
    assert "resnet20" in recipe.fusion_problem(
        [c.__class__(**{**c.__dict__, "arch": "resnet20"}) for c in configs])
    mixed = [configs[0], configs[1].__class__(**{**configs[1].__dict__, "learning_rate": 0.1})]
    assert "more than seed and temperature" in recipe.fusion_problem(mixed)


def test_cli_ensemble_is_fused_by_default(tmp_path):
    from tests import data_fakes as fakes
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=60, n_test=20)
    for fuse, out in (("--fuse_members", tmp_path / "fused"), ("--nofuse_members", tmp_path / "sep")):
        parse_flags([f"--data_dir={data_dir}", "--role=ensemble", "--member_role=gaussian",
                     "--num_members=2", "--sigma=0.5", "--epochs=1", "--batch_size=16",
                     "--validation_size=10", f"--model_dir={out}", "--verbose=0",
                     "--allow_collapsed", fuse], train)
        train.main(["prog"])
        meta = json.load(open(out / "member_1" / "cear.json"))
        assert ("fused_with" in meta) == (fuse == "--fuse_members")


def test_fused_collapse_guard_warns_per_member_and_stops_when_all_collapse(tmp_path):
    splits = tiny_splits()
    cfg = member_config(role="gaussian", base_sigma=0.5, epochs=20, learning_rate=1e4, clipnorm=0.0)
    configs = recipe.ensemble_configs(cfg, [None], "gaussian", num_members=2)
    dirs = [str(tmp_path / "ens" / f"member_{i}") for i in range(2)]
    with pytest.raises(recipe.CollapsedMemberError, match="2 of 2 members collapsed"):
        loop.train_fused_members(configs, splits, dirs, verbose=0, collapse_patience=2)
    with open(tmp_path / "ens" / "fused_member_0_member_1.logs" / "train.csv") as f:
        assert len(f.read().strip().split("\n")) - 1 == 2  # stopped after two epochs
    assert not os.path.exists(dirs[0]) and not os.path.exists(dirs[1])


def test_precomputed_teacher_logits_give_the_steps_of_calling_the_teacher(tmp_path):
    """A student trained on batches that carry its teacher's logits (computed once, as
    cear_tf.cli.train does without augmentation) takes the steps of one calling the teacher,
    noise included, separately and fused."""
    m, steps, batch = 3, 3, 16
    splits = tiny_splits(n_train=64)
    x, y = splits.train
    teacher_dir = str(tmp_path / "teacher")
    train_tiny(member_config(epochs=1), splits, teacher_dir, verbose=0)
    teacher = members.load_member(teacher_dir)
    targets = recipe.teacher_logits(teacher, x, batch_size=24)  # batches unlike the steps'
    np.testing.assert_allclose(targets, teacher(tf.constant(x)).numpy(), rtol=1e-5, atol=1e-5)
    temps = [2.0, 4.0, 6.0]

    def separate(cached):
        net = _networks(1, seed=3)[0]
        single = trainers.Distiller(net, teacher, 3.0, 0.3, seed=7)
        single.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, global_clipnorm=1.0))
        for s in range(steps):
            idx = slice(s * batch, (s + 1) * batch)
            single.train_on_batch((x[idx], targets[idx]) if cached else x[idx], y[idx])
        return net.get_weights()

    def fused(cached):
        network = FusedLeNet5.from_networks(_networks(m, seed=10))
        trainer = trainers.FusedEnsembleTrainer(network, [0.3] * m, temps, teacher,
                                                clipnorm=1.0, seed=7)
        trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        for s in range(steps):
            idx = slice(s * batch, (s + 1) * batch)
            images = np.repeat(x[idx][:, None], m, axis=1)
            logits = np.repeat(targets[idx][:, None], m, axis=1)
            trainer.train_on_batch((images, logits) if cached else images,
                                   np.repeat(y[idx][:, None], m, axis=1))
        return network.get_weights()

    for run in (separate, fused):
        for a, b in zip(run(True), run(False)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_teacher_logits_are_cached_only_for_students_without_augmentation():
    splits = tiny_splits(n_train=8)
    x = splits.train[0]
    teacher = _networks(1)[0]
    cfg = recipe.MemberConfig(role="student", arch="lenet5", dataset="mnist", seed=0,
                                base_sigma=0.5, temperature=2.0)
    np.testing.assert_allclose(recipe.cached_teacher_logits(cfg, teacher, x),
                               teacher(x).numpy(), rtol=1e-5, atol=1e-6)
    flip = recipe.dataclasses.replace(cfg, augment="flip_crop")
    assert recipe.cached_teacher_logits(flip, teacher, x) is None
    gaussian = recipe.dataclasses.replace(cfg, role="gaussian", temperature=None)
    assert recipe.cached_teacher_logits(gaussian, teacher, None) is None
    with pytest.raises(ValueError, match="augmentation"):
        from cear_tf.data import datasets
        datasets.make_pipeline(x, splits.train[1], 4, shuffle=False, augment="flip_crop",
                           teacher_logits=teacher(x).numpy())
