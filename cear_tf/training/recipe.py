"""Training CEAR members, configured by a MemberConfig: the teacher, distilled VGA students,
Gaussian baselines, and ensembles of them (one after another or fused).

Every member is exported as a SavedModel + cear.json (see cear_tf.ensemble.members). A checkpoint is
written each epoch next to the member (`<model_dir>.ckpt`); training resumes from it when the
settings it was made with are today's. The command line is cear_tf.cli.train.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time

import numpy as np
from absl import logging

from cear_tf.common.lazy import lazy_module
from cear_tf.common.locking import OutputLock

keras = lazy_module("keras")
tf = lazy_module("tensorflow")
datasets = lazy_module("cear_tf.data.datasets")
members = lazy_module("cear_tf.ensemble.members")
models = lazy_module("cear_tf.models")
trainers = lazy_module("cear_tf.training.trainers")

CHECKPOINT_SETTINGS = "cear_settings.json"

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


def train_member(cfg: MemberConfig, splits: Splits, model_dir: str, teacher=None,
                 resume: bool = True, verbose: int = 1, extra_callbacks=(),
                 strategy: tf.distribute.Strategy | None = None,
                 allow_collapsed: bool = False, collapse_patience: int = 3) -> dict:
    """Trains one member, exports it to `model_dir`, returns its metadata.

    Under a tf.distribute `strategy` the model and optimizer are created in its scope and
    Keras splits each global batch of `cfg.batch_size` across the replicas.

    Raises CollapsedMemberError, without exporting, when the member's clean or noisy test
    accuracy is at chance level (see CHANCE_FACTOR), unless `allow_collapsed`.
    """
    if cfg.role not in ("teacher", "student", "gaussian"):
        raise ValueError(f"unknown member role {cfg.role!r}")
    if cfg.role != "teacher" and cfg.base_sigma <= 0:
        raise ValueError(f"--sigma must be > 0 for a {cfg.role}, got {cfg.base_sigma}")
    if cfg.fixed_noisy_copy and cfg.role != "teacher":
        if cfg.augment != "none":
            raise ValueError("--fixed_noisy_copy cannot be combined with --augment: the copy is "
                             "drawn once, before any augmentation")
        if cfg.vga and cfg.vga_mode == "per_example":
            raise ValueError("--fixed_noisy_copy needs one sigma per member: use "
                             "--vga_mode=per_model")
    if cfg.role == "student":
        if teacher is None:
            raise ValueError("a student needs a teacher (--teacher_dir)")
        check_teacher(teacher, splits.info)
    os.makedirs(os.path.dirname(os.path.abspath(model_dir)), exist_ok=True)
    with OutputLock(model_dir):  # one process trains a member at a time
        return _train_and_export(cfg, splits, model_dir, teacher, resume, verbose,
                                 extra_callbacks, strategy, allow_collapsed, collapse_patience)


def checkpoint_settings(cfg: MemberConfig, splits: Splits, teacher=None) -> dict:
    """What a checkpoint's weights depend on: resuming under anything else is refused."""
    return dict(dataclasses.asdict(cfg), train_examples=int(len(splits.train[1])),
                validation_size=splits.validation_size, split_seed=splits.split_seed,
                teacher_dir=getattr(teacher, "path", None),
                training_draws=trainers.TRAINING_DRAWS)


def _prepare_checkpoint(ckpt_dir: str, settings: dict, resume: bool) -> None:
    """Checks a checkpoint before Keras restores it: the settings it was made with must be
    today's (a checkpoint from before settings were recorded adopts them, in one line), and
    its files must be readable; then records the settings for the next resume."""
    path = os.path.join(ckpt_dir, CHECKPOINT_SETTINGS)
    if not resume and os.path.exists(ckpt_dir):
        logging.info("--noresume: discarding checkpoint %s", ckpt_dir)
        shutil.rmtree(ckpt_dir)
    if os.path.isdir(ckpt_dir) and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e}); pass --noresume to start the "
                             f"member over") from None
        defaults = {f.name: f.default for f in dataclasses.fields(MemberConfig)}
        # A setting added after the checkpoint was made matches when it has its default.
        old = {**{k: defaults[k] for k in settings if k not in old and k in defaults}, **old}
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if "training_draws" in diff:
            raise ValueError(f"{ckpt_dir} was trained under another way of drawing batches and "
                             f"noise ({old.get('training_draws') or 'an older cear_tf'}; now "
                             f"{settings['training_draws']!r}), so it cannot be continued draw "
                             f"for draw; pass --noresume to start the member over")
        if diff:
            details = ", ".join(f"--{k}: checkpoint {old.get(k)!r} vs now {settings.get(k)!r}"
                                for k in diff)
            raise ValueError(f"{ckpt_dir} was made with other settings ({details}); rerun with "
                             f"those settings, or pass --noresume to start the member over")
    elif os.path.isdir(ckpt_dir):
        logging.warning("%s: no settings recorded (a checkpoint from before they were); "
                        "adopting today's", ckpt_dir)
    weights = os.path.join(ckpt_dir, "latest.weights.h5")
    if os.path.exists(weights):
        import h5py
        try:
            with h5py.File(weights, "r"):
                pass
            with open(os.path.join(ckpt_dir, "training_metadata.json")) as f:
                json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{weights}: the checkpoint cannot be read ({e}); pass --noresume "
                             f"to start the member over") from None
    os.makedirs(ckpt_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(settings, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def _checkpoint_epochs(ckpt_dir: str) -> int:
    """Epochs the checkpoint in `ckpt_dir` has finished (0 when there is none)."""
    try:
        with open(os.path.join(ckpt_dir, "training_metadata.json")) as f:
            return int(json.load(f).get("epoch", 0))
    except FileNotFoundError:
        return 0


def align_train_log(log_dir: str, ckpt_dir: str) -> None:
    """Keeps `train.csv` to the epochs of the run the checkpoint continues, so that a log
    never mixes two runs: rows of a run whose checkpoint is gone (lost, or discarded by
    --noresume) or of epochs the checkpoint does not hold move to the next free
    `train.discarded.<k>.csv`, never deleted. The checkpoint's run is the last one in the
    file that starts at epoch 0."""
    path = os.path.join(log_dir, "train.csv")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(lines) <= 1:
        return
    header, rows = lines[0], lines[1:]

    def epoch_of(row):
        try:
            return int(row.split(",", 1)[0])
        except ValueError:
            return None

    epochs = [epoch_of(r) for r in rows]
    finished = _checkpoint_epochs(ckpt_dir)
    starts = [i for i, e in enumerate(epochs) if e == 0]
    run = starts[-1] if starts else len(rows)
    keep = [i for i in range(run, len(rows)) if epochs[i] is not None and epochs[i] < finished]
    if [epochs[i] for i in keep] != list(range(len(keep))):
        keep = []  # not one run's epochs 0, 1, ...: keep none rather than mix
    if len(keep) == len(rows):
        return
    k = 1
    while os.path.exists(os.path.join(log_dir, f"train.discarded.{k}.csv")):
        k += 1
    discarded = os.path.join(log_dir, f"train.discarded.{k}.csv")
    with open(discarded, "w", encoding="utf-8") as f:
        f.write("\n".join([header] + [r for i, r in enumerate(rows) if i not in keep]) + "\n")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join([header] + [rows[i] for i in keep]) + "\n")
    os.replace(path + ".tmp", path)
    logging.warning("%s: %d row(s) not of the run checkpoint %s continues (%d epochs) moved "
                    "to %s", path, len(rows) - len(keep), ckpt_dir, finished, discarded)


def build_optimizer(cfg: MemberConfig, steps_per_epoch: int, global_clipnorm: bool = True):
    """The member's optimizer and learning-rate schedule; `global_clipnorm=False` leaves
    gradient clipping to the trainer (the fused trainer clips each member on its own)."""
    common = dict(learning_rate=_learning_rate(cfg, steps_per_epoch),
                  weight_decay=cfg.weight_decay or None,
                  global_clipnorm=(cfg.clipnorm or None) if global_clipnorm else None)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(**common)
    return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)


def _train_and_export(cfg, splits, model_dir, teacher, resume, verbose, extra_callbacks,
                      strategy, allow_collapsed, collapse_patience) -> dict:
    keras.utils.set_random_seed(cfg.seed)
    x_train, y_train = splits.train
    steps = math.ceil(len(y_train) / cfg.batch_size)
    with (strategy or tf.distribute.get_strategy()).scope():
        trainer = build_trainer(cfg, splits.info, teacher)
        trainer.compile(optimizer=build_optimizer(cfg, steps))

    ckpt_dir = model_dir.rstrip("/") + ".ckpt"
    log_dir = model_dir.rstrip("/") + ".logs"
    _prepare_checkpoint(ckpt_dir, checkpoint_settings(cfg, splits, teacher), resume)
    os.makedirs(log_dir, exist_ok=True)
    align_train_log(log_dir, ckpt_dir)
    clock = trainers.TrainingClock(ckpt_dir, _checkpoint_epochs(ckpt_dir))
    callbacks = [
        # Kept after fit: deleted only once the member is exported, so a kill between the
        # last epoch and the end of export retrains nothing.
        keras.callbacks.BackupAndRestore(ckpt_dir, delete_checkpoint=False),
        clock,
        keras.callbacks.CSVLogger(os.path.join(log_dir, "train.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(log_dir, "tensorboard"), write_graph=False),
        trainers.CollapseGuard(model_dir, chance_accuracy(
            (splits.validation or splits.train)[1]), collapse_patience, factor=CHANCE_FACTOR,
            ckpt_dir=ckpt_dir, finished_epochs=_checkpoint_epochs(ckpt_dir)),
        *extra_callbacks,
    ]
    targets = _cached_teacher_logits(cfg, teacher, x_train)
    if cfg.fixed_noisy_copy and cfg.role != "teacher":
        # Each image travels with its one noisy copy: [N, 2, H, W, C].
        x_train = np.stack([x_train, trainers.fixed_noisy_copy(x_train, cfg.sigma, cfg.seed,
                                                               cfg.train_clip)], axis=1)
    remaining = _remaining_epochs(ckpt_dir, cfg.epochs)
    train_ds = datasets.make_pipeline(x_train, y_train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                  augment=cfg.augment, teacher_logits=targets, epochs=remaining)
    seconds, test = _fit_and_test(trainer, train_ds, cfg.epochs, steps, splits, callbacks,
                                  verbose)
    metadata = _member_metadata(
        cfg, splits, teacher, float(test["accuracy"]),
        float(test["noisy_accuracy"]) if cfg.role != "teacher" else None, seconds,
        trainer.sigma_range, earlier_seconds=clock.earlier)
    _refuse_collapsed(cfg, model_dir, metadata, splits, allow_collapsed, ckpt_dir)
    members.export_member(trainer.network, model_dir, metadata)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    logging.info("exported %s: clean test accuracy %.4f", model_dir, metadata["clean_test_accuracy"])
    return metadata


def teacher_logits(teacher, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """The frozen teacher's logits on `images` ([N, K] float32), in batches."""
    call = tf.function(lambda x: tf.cast(teacher(x), tf.float32))
    return np.concatenate([call(tf.constant(images[i:i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)])


def _cached_teacher_logits(cfg: MemberConfig, teacher, images: np.ndarray):
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


def _remaining_epochs(ckpt_dir: str, epochs: int) -> range:
    """The epochs a run still trains: from the checkpoint's (BackupAndRestore restores the
    same epoch) to the last. The pipeline starts there, so its batches are the ones the
    uninterrupted run would see (datasets.make_pipeline). With every epoch done, the last one
    stands in for the empty rest (fit trains nothing then)."""
    finished = min(_checkpoint_epochs(ckpt_dir), epochs)
    return range(min(finished, epochs - 1), epochs)


def _fit_and_test(trainer, train_ds, epochs, steps_per_epoch, splits, callbacks, verbose):
    """(training seconds, test metrics) of fitting `trainer` and evaluating it on the test
    split. `train_ds` yields the batches of the remaining epochs back to back, so one iterator
    serves every epoch (steps_per_epoch)."""
    start = time.time()
    trainer.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                validation_data=_validation_pipeline(splits), callbacks=callbacks,
                shuffle=False, verbose=verbose)
    seconds = time.time() - start
    test = trainer.evaluate(datasets.make_pipeline(*splits.test, batch_size=512, shuffle=False),
                            verbose=0, return_dict=True)
    return seconds, test


def _validation_pipeline(splits: Splits):
    if splits.validation is None:
        return None
    return datasets.make_pipeline(*splits.validation, batch_size=512, shuffle=False)


def _member_metadata(cfg: MemberConfig, splits: Splits, teacher, clean: float,
                     noisy: float | None, seconds: float, sigma_range=None, *,
                     earlier_seconds: float | None, **extra) -> dict:
    """The member's cear.json. `seconds` is the last run's training time and
    `earlier_seconds` what the runs it resumed took (None: unknown, and then train_seconds
    counts the last run only and train_seconds_complete says so)."""
    metadata = dataclasses.asdict(cfg)
    metadata.update(
        sigma=cfg.sigma if cfg.vga_mode == "per_model" or cfg.role == "teacher" else None,
        sigma_range=list(sigma_range) if sigma_range else None,
        vga_beta=(cfg.sigma - cfg.base_sigma) if cfg.vga and cfg.role != "teacher"
        and cfg.vga_mode == "per_model" else None,
        clean_test_accuracy=clean,
        noisy_test_accuracy=noisy,
        training_draws=trainers.TRAINING_DRAWS,
        teacher_dir=getattr(teacher, "path", None),
        train_examples=int(len(splits.train[1])),
        validation_size=splits.validation_size,
        split_seed=splits.split_seed,
        train_seconds=round(seconds + (earlier_seconds or 0.0), 1),
        train_seconds_complete=earlier_seconds is not None,
        **extra,
    )
    return metadata


def _refuse_collapsed(cfg, model_dir, metadata, splits, allow_collapsed, ckpt_dir=None):
    """Records whether the member is at chance level; raises CollapsedMemberError (after
    discarding a checkpoint that would only collapse again) unless allow_collapsed."""
    chance = chance_accuracy(splits.test[1])
    low = [f"{kind} test accuracy {100 * metadata[key]:.2f}%"
           for kind, key in (("clean", "clean_test_accuracy"), ("noisy", "noisy_test_accuracy"))
           if metadata[key] is not None and is_at_chance(metadata[key], chance)]
    metadata["collapsed"] = bool(low)
    if low and not allow_collapsed:
        if ckpt_dir:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        raise CollapsedMemberError(
            f"{model_dir}: {' and '.join(low)} is at chance level (the most frequent class is "
            f"{100 * chance:.2f}% of the test set); not exported. Lower --learning_rate (now "
            f"{cfg.learning_rate:g}), keep --clipnorm on (now {cfg.clipnorm:g}), or pass "
            f"--allow_collapsed to export it anyway")
    if low:
        logging.warning("%s: %s at chance level; exported because of --allow_collapsed",
                        model_dir, " and ".join(low))


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


def train_fused_members(configs: list[MemberConfig], splits: Splits, member_dirs: list[str],
                        teacher=None, resume: bool = True, verbose: int = 1,
                        allow_collapsed: bool = False, extra_callbacks=(),
                        collapse_patience: int = 3) -> list[dict]:
    """Trains the members as one fused network (models.fused, trainers.FusedEnsembleTrainer)
    and exports each as its own SavedModel + cear.json, exactly as separate training would:
    same initial weights (each built from its own seed), same batches (each shuffled by its
    own seed), its own noise, sigma_i, temperature and gradient clipping. Collapsed members
    are not exported (CollapsedMemberError after the others are), unless allow_collapsed."""
    from cear_tf.models.fused import FusedLeNet5
    problem = fusion_problem(configs)
    if problem:
        raise ValueError(f"these members cannot be trained fused: {problem}")
    first = configs[0]
    if first.role == "student":
        if teacher is None:
            raise ValueError("a student needs a teacher (--teacher_dir)")
        check_teacher(teacher, splits.info)
    locks = [OutputLock(d) for d in member_dirs]
    for lock in locks:
        os.makedirs(os.path.dirname(os.path.abspath(lock.path)), exist_ok=True)
        lock.acquire()
    try:
        return _train_fused(configs, splits, member_dirs, teacher, resume, verbose,
                            allow_collapsed, extra_callbacks, FusedLeNet5, collapse_patience)
    finally:
        for lock in locks:
            lock.release()


def build_fused_trainer(configs: list[MemberConfig], info: datasets.DatasetInfo, teacher=None,
                        fused_class=None) -> "trainers.FusedEnsembleTrainer":
    """The fused trainer of these members (uncompiled, built): each member's network from its
    own seed, as separate training would build it, fused into one network."""
    if fused_class is None:
        from cear_tf.models.fused import FusedLeNet5 as fused_class
    first = configs[0]
    normalization = (info.mean, info.std) if first.normalize else None
    networks = []
    for cfg in configs:  # the same initial weights as separate training
        keras.utils.set_random_seed(cfg.seed)
        networks.append(models.build_model(cfg.arch, info.image_shape, info.num_classes,
                                           normalization))
    keras.utils.set_random_seed(first.seed)
    network = fused_class.from_networks(networks)
    students = first.role == "student"
    trainer = trainers.FusedEnsembleTrainer(
        network, [cfg.sigma for cfg in configs],
        [cfg.temperature for cfg in configs] if students else None,
        teacher if students else None, clipnorm=first.clipnorm, seed=first.seed,
        clip=first.train_clip)
    h, w, c = info.image_shape
    trainer(np.zeros((1, h, w, c * len(configs)), np.float32))  # built, as checkpoints require
    return trainer


def stack_member_batches(*batches):
    """One fused batch from the members' own: images [B, M, H, W, C], labels [B, M], and
    with precomputed teacher logits ((images, logits [B, M, K]), labels)."""
    stack = lambda parts: tf.stack(parts, axis=1)  # noqa: E731
    labels = stack([b[1] for b in batches])
    if isinstance(batches[0][0], tuple):
        return ((stack([b[0][0] for b in batches]), stack([b[0][1] for b in batches])), labels)
    return stack([b[0] for b in batches]), labels


def fused_checkpoint_dir(member_dirs) -> str:
    """Where the fused run of exactly these members keeps its checkpoint."""
    parent = os.path.dirname(os.path.abspath(member_dirs[0]))
    tag = "fused_" + "_".join(os.path.basename(os.path.normpath(d)) for d in member_dirs)
    return os.path.join(parent, tag + ".ckpt")


def _train_fused(configs, splits, member_dirs, teacher, resume, verbose, allow_collapsed,
                 extra_callbacks, fused_class, collapse_patience) -> list[dict]:
    first = configs[0]
    info = splits.info
    normalization = (info.mean, info.std) if first.normalize else None
    trainer = build_fused_trainer(configs, info, teacher, fused_class)
    network = trainer.network
    x_train, y_train = splits.train
    steps = math.ceil(len(y_train) / first.batch_size)
    trainer.compile(optimizer=build_optimizer(first, steps, global_clipnorm=False))

    parent = os.path.dirname(os.path.abspath(member_dirs[0]))
    ckpt_dir = fused_checkpoint_dir(member_dirs)
    log_dir = ckpt_dir[:-len(".ckpt")] + ".logs"
    settings = {"members": [checkpoint_settings(cfg, splits, teacher) for cfg in configs]}
    _prepare_fused_checkpoint(ckpt_dir, settings, resume)
    os.makedirs(log_dir, exist_ok=True)
    align_train_log(log_dir, ckpt_dir)
    targets = _cached_teacher_logits(first, teacher, x_train)
    remaining = _remaining_epochs(ckpt_dir, first.epochs)
    member_batches = [datasets.make_pipeline(x_train, y_train, cfg.batch_size, shuffle=True,
                                         seed=cfg.seed, teacher_logits=targets,
                                         epochs=remaining)
                      for cfg in configs]
    train_ds = datasets.without_autotune(
        tf.data.Dataset.zip(tuple(member_batches)).map(stack_member_batches))
    clock = trainers.TrainingClock(ckpt_dir, _checkpoint_epochs(ckpt_dir))
    callbacks = [
        keras.callbacks.BackupAndRestore(ckpt_dir, delete_checkpoint=False),
        clock,
        keras.callbacks.CSVLogger(os.path.join(log_dir, "train.csv"), append=True),
        trainers.CollapseGuard(parent, chance_accuracy((splits.validation or splits.train)[1]),
                                collapse_patience, members=member_dirs, factor=CHANCE_FACTOR,
                                ckpt_dir=ckpt_dir, finished_epochs=_checkpoint_epochs(ckpt_dir)),
        *extra_callbacks,
    ]
    logging.info("training %d members as one fused network: %s", len(configs),
                 ", ".join(member_dirs))
    seconds, test = _fit_and_test(trainer, train_ds, first.epochs, steps, splits, callbacks,
                                  verbose)
    build = lambda: models.build_model(first.arch, info.image_shape, info.num_classes,  # noqa: E731
                                       normalization)
    exported, collapsed = [], []
    for i, (cfg, member_dir) in enumerate(zip(configs, member_dirs)):
        metadata = _member_metadata(
            cfg, splits, teacher, float(test[f"accuracy_{i}"]),
            float(test[f"noisy_accuracy_{i}"]), seconds, earlier_seconds=clock.earlier,
            fused_with=[os.path.basename(os.path.normpath(d)) for d in member_dirs],
            train_log=os.path.relpath(os.path.join(log_dir, "train.csv"),
                                      os.path.dirname(os.path.abspath(member_dir))))
        if members.is_complete_member(member_dir):
            # Exported before a kill cut this run's exports: the same weights, kept.
            logging.info("%s already exported by this run: kept", member_dir)
            continue
        try:
            _refuse_collapsed(cfg, member_dir, metadata, splits, allow_collapsed)
        except CollapsedMemberError as e:
            collapsed.append(str(e))
            continue
        members.export_member(network.member_network(i, build), member_dir, metadata)
        logging.info("exported %s: clean test accuracy %.4f", member_dir,
                     metadata["clean_test_accuracy"])
        exported.append(metadata)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    if collapsed:
        raise CollapsedMemberError(
            f"{len(collapsed)} of {len(configs)} members collapsed to chance level and were not "
            f"exported: " + " | ".join(collapsed))
    return exported


def _prepare_fused_checkpoint(ckpt_dir, settings, resume):
    path = os.path.join(ckpt_dir, CHECKPOINT_SETTINGS)
    if not resume and os.path.exists(ckpt_dir):
        shutil.rmtree(ckpt_dir)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            try:
                old = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e}); pass --noresume") from None
        if old != settings:
            raise ValueError(f"{ckpt_dir} was made with other settings; rerun with those "
                             f"settings, or pass --noresume to start the members over")
    os.makedirs(ckpt_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(settings, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


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

