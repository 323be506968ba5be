"""Training and attack step throughput (cear_tf.cli.bench): M LeNet-5 students trained fused
in one step against one after another, and attack steps on fused against separate members.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from cear_tf import models
from cear_tf.attacks import evaluation
from cear_tf.data import datasets
from cear_tf.ensemble import deployed
from cear_tf.ensemble import members as members_lib
from cear_tf.ensemble.loading import FusedMembers
from cear_tf.models.fused import FusedLeNet5
from cear_tf.performance.certification import SETTINGS, build_members
from cear_tf.performance.timing import interleaved_seconds
from cear_tf.smoothing import aggregate
from cear_tf.training import loop, recipe


def _student_configs(m: int, batch: int):
    """M CEAR students as cear_tf.cli.train makes them (seeds 0..M-1, T = 2, 3, ..., VGA)."""
    base = recipe.MemberConfig(role="student", arch="lenet5", dataset="mnist", seed=0,
                                 base_sigma=0.5, vga=True, batch_size=batch, epochs=1)
    return recipe.ensemble_configs(base, [2 + i for i in range(m)], "student")


def measure_training(m: int, batch: int, repeats: int, steps: int = 40) -> list[dict]:
    """Student-images/s of training M LeNet-5 CEAR students one after another (each its own
    Distiller, as cear_tf.cli.train without fusion) and fused in one step (FusedEnsembleTrainer),
    on random MNIST-shaped batches with a random LeNet-5 teacher whose logits are computed
    once, before timing, as cear_tf.cli.train does without augmentation; both also with the
    teacher called at every step (`*_teacher_s`, as with augmentation). The four variants
    interleaved, `steps` optimizer steps per member each time, after a warm-up."""
    info = datasets.DATASETS["mnist"]
    rng = np.random.default_rng(0)
    n = steps * batch
    x = rng.uniform(size=(n, *info.image_shape)).astype(np.float32)
    y = rng.integers(0, info.num_classes, size=n).astype(np.int32)
    teacher = models.build_model("lenet5", info.image_shape, info.num_classes,
                                 (info.mean, info.std))
    configs = _student_configs(m, batch)

    def separate_trainers():
        out = []
        for cfg in configs:
            trainer = recipe.build_trainer(cfg, info, teacher)
            trainer.compile(optimizer=recipe.build_optimizer(cfg, steps))
            out.append(trainer)
        return out

    def fused_trainer():
        fused = loop.build_fused_trainer(configs, info, teacher)
        fused.compile(optimizer=recipe.build_optimizer(configs[0], steps,
                                                         global_clipnorm=False))
        return [fused]

    # As cear_tf.cli.train's pipelines: the teacher's logits computed once and carried by the
    # batches, tf.data autotuning off (datasets.without_autotune; with it, a fit this short can
    # wait a second or more for the tuner at its end).
    targets = recipe.teacher_logits(teacher, x)
    stack = lambda a: np.repeat(a[:, None], m, axis=1)  # noqa: E731

    def pipeline(*arrays):
        return datasets.without_autotune(
            tf.data.Dataset.from_tensor_slices(arrays).batch(batch).cache())

    variants = {
        "separate_s": (separate_trainers(), pipeline((x, targets), y)),
        "fused_s": (fused_trainer(), pipeline((stack(x), stack(targets)), stack(y))),
        "separate_teacher_s": (separate_trainers(), pipeline(x, y)),
        "fused_teacher_s": (fused_trainer(), pipeline(stack(x), stack(y))),
    }

    def seconds(name):
        trainers_, dataset = variants[name]
        start = time.perf_counter()
        for trainer in trainers_:
            trainer.fit(dataset, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - start

    for name in variants:  # trace and fill the caches
        seconds(name)
    rows = [{name: seconds(name) for name in variants} for _ in range(repeats)]
    return [dict(batch=batch, members=m, steps=steps, images=m * n, **row) for row in rows]


def measure_attack(m: int, logit_noise: float, repeats: int, batch: int = 100,
                   calls: int = 30) -> dict:
    """Seconds per `calls` attack steps (the GM ensemble's log-space scores on a batch and
    their gradient with respect to the images, as cear_tf.cli.attack's APGD takes them) on M
    random LeNet-5 members, fused (cear_tf.cli.attack's default) and one by one, interleaved."""
    shape = SETTINGS["lenet5"]["shape"]
    networks = build_members("lenet5", m, shape, 10)
    frozen = [members_lib.freeze_keras(net) for net in networks]
    fused = FusedMembers(FusedLeNet5.from_networks(networks))
    gm = aggregate.make_aggregator("gm", m)
    x = tf.constant(np.random.default_rng(0).uniform(size=(batch, *shape)).astype(np.float32))
    steps = {}
    for name, f in (("one by one", None), ("fused", fused)):
        model = evaluation.AttackTarget(
            deployed.DeployedEnsemble(frozen, logit_noise, fused=f), gm)

        @tf.function
        def step(images, model=model):
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss = tf.reduce_sum(model.ensemble_log_space_scores(images)[:, 0])
            return tape.gradient(loss, images)

        step(x).numpy()  # trace
        steps[name] = step
    seconds = interleaved_seconds(steps, x, repeats, calls)
    return dict(members=m, logit_noise=logit_noise, batch=batch, calls=calls, seconds=seconds)
