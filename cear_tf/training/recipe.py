"""What a CEAR member's training is: its recipe (MemberConfig: the teacher, distilled VGA
students, Gaussian baselines, ensembles of them), the data splits it sees, and how its
optimizer, trainer and teacher targets are built from the recipe. The loop that runs a
recipe, checkpoints it each epoch and exports the member is cear_tf.training.loop; the
command line is cear_tf.cli.train.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from absl import logging

from cear_tf.common.lazy import lazy_module

keras = lazy_module("keras")
tf = lazy_module("tensorflow")
datasets = lazy_module("cear_tf.data.datasets")
members = lazy_module("cear_tf.ensemble.members")
models = lazy_module("cear_tf.models")
trainers = lazy_module("cear_tf.training.trainers")

DEFAULT_LEARNING_RATE = 0.05


# Measured on real MNIST, LeNet-5, one epoch: Gaussian members at sigma 1.0 with lr 0.05
# ended at 11.35% (all "1") for seeds 2 and 3 unclipped and at 95.7% / 95.4% clipped at 1.0;
# a VGA student (T 2, sigma 0.55) at lr 0.1 ended at 11.35% unclipped and 95.8% clipped.
DEFAULT_CLIPNORM = 1.0


ROLES = ("teacher", "student", "gaussian", "ensemble")


@dataclasses.dataclass(frozen=True)
class MemberConfig:
    """Everything that defines one trained member (recorded in its cear.json): the training
    spec. Frozen; derive variants with dataclasses.replace."""

    role: str  # teacher | student | gaussian
    arch: str
    dataset: str
    seed: int
    base_sigma: float = 0.0
    vga: bool = False
    vga_mode: str = "per_model"
    temperature: float | None = None
    hard_label_weight: float = 0.0
    normalize: bool = True
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = DEFAULT_LEARNING_RATE
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    clipnorm: float = DEFAULT_CLIPNORM
    lr_schedule: str = "cosine"
    lr_step_epochs: int = 30
    lr_gamma: float = 0.1
    augment: str = "none"
    # Options that restore the released code's choices (docs/deviations.md); defaults ours.
    optimizer: str = "sgd"
    vga_rule: str = "uniform"
    student_loss: str = "hinton"
    train_clip: bool = False
    fixed_noisy_copy: bool = False

    @property
    def sigma(self) -> float:
        """The sigma this member trains with (VGA draws it from the seed)."""
        if self.role == "teacher":
            return 0.0
        if self.vga and self.vga_mode == "per_model":
            return trainers.vga_sigma(self.base_sigma, self.seed, self.vga_rule,
                                      self.temperature)
        return self.base_sigma


class CollapsedMemberError(RuntimeError):
    """A trained member's clean or noisy accuracy is at chance level."""


# A collapsed network predicts one class, so its accuracy is that class's share of the data
# (MNIST test: 11.35%, the digit 1). Below CHANCE_FACTOR times the most frequent class's
# share a member counts as collapsed: 17.0% on MNIST, 15% on CIFAR-10, 0.75% on TinyImageNet.
CHANCE_FACTOR = 1.5


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class of `labels`."""
    labels = np.asarray(labels).astype(np.int64)
    return float(np.bincount(labels).max() / len(labels))


def is_at_chance(accuracy: float, chance: float) -> bool:
    return accuracy < CHANCE_FACTOR * chance


@dataclasses.dataclass(frozen=True)
class Splits:
    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray]
    info: datasets.DatasetInfo
    validation_size: int
    split_seed: int


def load_splits(dataset, data_dir, validation_size, split_seed, train_subset=0) -> Splits:
    kw = dict(data_dir=data_dir, validation_size=validation_size, split_seed=split_seed)
    train = datasets.load_split(dataset, "train", **kw)
    if train_subset and train_subset < len(train[1]):
        # A random subset: local copies may be sorted by class (the CIFAR-10 image folders).
        keep = np.sort(np.random.default_rng([split_seed, 1]).permutation(len(train[1]))
                       [:train_subset])
        train = (train[0][keep], train[1][keep])
    validation = datasets.load_split(dataset, "validation", **kw) if validation_size else None
    return Splits(train, validation, datasets.load_split(dataset, "test", **kw),
                  datasets.dataset_info(dataset), validation_size, split_seed)


def check_teacher(teacher: members.Member, info: datasets.DatasetInfo) -> None:
    if teacher.num_classes != info.num_classes:
        raise ValueError(f"teacher {teacher.path} has {teacher.num_classes} classes but "
                         f"{info.name} has {info.num_classes}")
    if tuple(teacher.input_shape) != tuple(info.image_shape):
        raise ValueError(f"teacher {teacher.path} takes input {teacher.input_shape} but "
                         f"{info.name} images are {info.image_shape}")


def _learning_rate(cfg: MemberConfig, steps_per_epoch: int):
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    total = cfg.epochs * steps_per_epoch
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
    boundaries = list(range(cfg.lr_step_epochs * steps_per_epoch, total, cfg.lr_step_epochs
                            * steps_per_epoch))
    if not boundaries:
        return cfg.learning_rate
    values = [cfg.learning_rate * cfg.lr_gamma**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def build_trainer(cfg: MemberConfig, info: datasets.DatasetInfo, teacher=None):
    """The keras.Model subclass that trains this member (uncompiled)."""
    normalization = (info.mean, info.std) if cfg.normalize else None
    network = models.build_model(cfg.arch, info.image_shape, info.num_classes, normalization)
    sigma = cfg.sigma
    noise = dict(seed=cfg.seed, noise_mode="per_model", clip=cfg.train_clip)
    if cfg.role != "teacher" and cfg.vga and cfg.vga_mode == "per_example":
        noise.update(noise_mode="per_example",
                     sigma_range=(cfg.base_sigma / 2, 3 * cfg.base_sigma / 2))
    if cfg.role == "student":
        if teacher is None:
            raise ValueError("a student needs a teacher (--teacher_dir)")
        trainer = trainers.Distiller(network, teacher, cfg.temperature, sigma,
                                     hard_label_weight=cfg.hard_label_weight,
                                     student_loss=cfg.student_loss, **noise)
    else:
        trainer = trainers.NoisyInputTrainer(network, sigma, **noise)
    trainer(np.zeros((1, *info.image_shape), np.float32))  # built, as checkpoints require
    return trainer


def build_optimizer(cfg: MemberConfig, steps_per_epoch: int, global_clipnorm: bool = True):
    """The member's optimizer and learning-rate schedule; `global_clipnorm=False` leaves
    gradient clipping to the trainer (the fused trainer clips each member on its own)."""
    common = dict(learning_rate=_learning_rate(cfg, steps_per_epoch),
                  weight_decay=cfg.weight_decay or None,
                  global_clipnorm=(cfg.clipnorm or None) if global_clipnorm else None)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(**common)
    return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)


def teacher_logits(teacher, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """The frozen teacher's logits on `images` ([N, K] float32), in batches."""
    call = tf.function(lambda x: tf.cast(teacher(x), tf.float32))
    return np.concatenate([call(tf.constant(images[i:i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)])


def cached_teacher_logits(cfg: MemberConfig, teacher, images: np.ndarray):
    """A student's soft targets computed once, or None. Without augmentation the teacher
    sees the same clean image every epoch, so one pass replaces one teacher pass per step
    (a third of a LeNet-5 student's step); with augmentation it must see each augmented
    image and is called in train_step."""
    if cfg.role != "student" or cfg.augment != "none":
        return None
    start = time.time()
    logits = teacher_logits(teacher, images)
    logging.info("teacher logits on %d training images computed once (%.1f s)", len(images),
                 time.time() - start)
    return logits


FUSABLE_ARCHS = ("lenet5",)


# What may differ between members trained as one fused network.
_PER_MEMBER = ("seed", "temperature")


def fusion_problem(configs: list[MemberConfig]) -> str | None:
    """Why these members cannot be trained as one fused network, or None if they can."""
    first = configs[0]
    if len(configs) < 2:
        return "a single member"
    if first.arch not in FUSABLE_ARCHS:
        return f"--arch={first.arch} (fused training: {', '.join(FUSABLE_ARCHS)})"
    if first.role == "teacher":
        return "the teacher"
    if first.vga and first.vga_mode != "per_model":
        return "--vga_mode=per_example"
    if first.fixed_noisy_copy:
        return "--fixed_noisy_copy"
    if first.hard_label_weight:
        return "--hard_label_weight"
    if first.student_loss != "hinton":
        return f"--student_loss={first.student_loss}"
    if first.augment != "none":
        return f"--augment={first.augment}"
    shared = {k: v for k, v in dataclasses.asdict(first).items() if k not in _PER_MEMBER}
    for cfg in configs[1:]:
        other = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _PER_MEMBER}
        if other != shared:
            return "members differ in more than seed and temperature"
    return None


def ensemble_configs(base: MemberConfig, temperatures, member_role: str,
                     num_members: int = 0) -> list[MemberConfig]:
    """One config per member: member i has seed base.seed + i and temperature T_i."""
    if member_role == "student":
        if num_members and num_members != len(temperatures):
            raise ValueError(f"--num_members={num_members} but --temperatures has "
                             f"{len(temperatures)} entries: students need one temperature each")
    else:
        temperatures = [None] * (num_members or len(temperatures))
    return [dataclasses.replace(base, role=member_role, seed=base.seed + i,
                                vga=base.vga and member_role == "student",
                                temperature=float(t) if t is not None else None)
            for i, t in enumerate(temperatures)]
