"""The training loop of CEAR members: fit (one member, or several fused into one network),
checkpoint each epoch, test, refuse a member that collapsed to chance, export it as a
SavedModel + cear.json (cear_tf.ensemble.members). The command line is cear_tf.cli.train.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time

import numpy as np
from absl import logging

from cear_tf.common.lazy import lazy_module
from cear_tf.common.locking import OutputLock
from cear_tf.training.checkpoints import (
    align_train_log,
    checkpoint_epochs,
    checkpoint_settings,
    fused_checkpoint_dir,
    prepare_checkpoint,
    prepare_fused_checkpoint,
    remaining_epochs,
)
from cear_tf.training.recipe import (
    CHANCE_FACTOR,
    CollapsedMemberError,
    MemberConfig,
    Splits,
    build_optimizer,
    build_trainer,
    cached_teacher_logits,
    chance_accuracy,
    check_teacher,
    fusion_problem,
    is_at_chance,
)

keras = lazy_module("keras")
tf = lazy_module("tensorflow")
datasets = lazy_module("cear_tf.data.datasets")
members = lazy_module("cear_tf.ensemble.members")
models = lazy_module("cear_tf.models")
trainers = lazy_module("cear_tf.training.trainers")


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
    prepare_checkpoint(ckpt_dir, checkpoint_settings(cfg, splits, teacher), resume)
    os.makedirs(log_dir, exist_ok=True)
    align_train_log(log_dir, ckpt_dir)
    clock = trainers.TrainingClock(ckpt_dir, checkpoint_epochs(ckpt_dir))
    callbacks = [
        # Kept after fit: deleted only once the member is exported, so a kill between the
        # last epoch and the end of export retrains nothing.
        keras.callbacks.BackupAndRestore(ckpt_dir, delete_checkpoint=False),
        clock,
        keras.callbacks.CSVLogger(os.path.join(log_dir, "train.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(log_dir, "tensorboard"), write_graph=False),
        trainers.CollapseGuard(model_dir, chance_accuracy(
            (splits.validation or splits.train)[1]), collapse_patience, factor=CHANCE_FACTOR,
            ckpt_dir=ckpt_dir, finished_epochs=checkpoint_epochs(ckpt_dir)),
        *extra_callbacks,
    ]
    targets = cached_teacher_logits(cfg, teacher, x_train)
    if cfg.fixed_noisy_copy and cfg.role != "teacher":
        # Each image travels with its one noisy copy: [N, 2, H, W, C].
        x_train = np.stack([x_train, trainers.fixed_noisy_copy(x_train, cfg.sigma, cfg.seed,
                                                               cfg.train_clip)], axis=1)
    remaining = remaining_epochs(ckpt_dir, cfg.epochs)
    train_ds = datasets.make_pipeline(x_train, y_train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                  augment=cfg.augment, teacher_logits=targets, epochs=remaining)
    seconds, test = fit_and_test(trainer, train_ds, cfg.epochs, steps, splits, callbacks,
                                  verbose)
    metadata = member_metadata(
        cfg, splits, teacher, float(test["accuracy"]),
        float(test["noisy_accuracy"]) if cfg.role != "teacher" else None, seconds,
        trainer.sigma_range, earlier_seconds=clock.earlier)
    refuse_collapsed(cfg, model_dir, metadata, splits, allow_collapsed, ckpt_dir)
    members.export_member(trainer.network, model_dir, metadata)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    logging.info("exported %s: clean test accuracy %.4f", model_dir, metadata["clean_test_accuracy"])
    return metadata


def fit_and_test(trainer, train_ds, epochs, steps_per_epoch, splits, callbacks, verbose):
    """(training seconds, test metrics) of fitting `trainer` and evaluating it on the test
    split. `train_ds` yields the batches of the remaining epochs back to back, so one iterator
    serves every epoch (steps_per_epoch)."""
    start = time.time()
    trainer.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                validation_data=validation_pipeline(splits), callbacks=callbacks,
                shuffle=False, verbose=verbose)
    seconds = time.time() - start
    test = trainer.evaluate(datasets.make_pipeline(*splits.test, batch_size=512, shuffle=False),
                            verbose=0, return_dict=True)
    return seconds, test


def validation_pipeline(splits: Splits):
    if splits.validation is None:
        return None
    return datasets.make_pipeline(*splits.validation, batch_size=512, shuffle=False)


def member_metadata(cfg: MemberConfig, splits: Splits, teacher, clean: float,
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


def refuse_collapsed(cfg, model_dir, metadata, splits, allow_collapsed, ckpt_dir=None):
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


def train_fused_members(configs: list[MemberConfig], splits: Splits, member_dirs: list[str],
                        teacher=None, resume: bool = True, verbose: int = 1,
                        allow_collapsed: bool = False, extra_callbacks=(),
                        collapse_patience: int = 3) -> list[dict]:
    """Trains the members as one fused network (models.fused, trainers.FusedEnsembleTrainer)
    and exports each as its own SavedModel + cear.json, exactly as separate training would:
    same initial weights (each built from its own seed), same batches (each shuffled by its
    own seed), its own noise, sigma_i, temperature and gradient clipping. Collapsed members
    are not exported (CollapsedMemberError after the others are), unless allow_collapsed."""
    # Imported here: cear_tf.models loads Keras, and this module is imported by --help.
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
    prepare_fused_checkpoint(ckpt_dir, settings, resume)
    os.makedirs(log_dir, exist_ok=True)
    align_train_log(log_dir, ckpt_dir)
    targets = cached_teacher_logits(first, teacher, x_train)
    remaining = remaining_epochs(ckpt_dir, first.epochs)
    member_batches = [datasets.make_pipeline(x_train, y_train, cfg.batch_size, shuffle=True,
                                         seed=cfg.seed, teacher_logits=targets,
                                         epochs=remaining)
                      for cfg in configs]
    train_ds = datasets.without_autotune(
        tf.data.Dataset.zip(tuple(member_batches)).map(stack_member_batches))
    clock = trainers.TrainingClock(ckpt_dir, checkpoint_epochs(ckpt_dir))
    callbacks = [
        keras.callbacks.BackupAndRestore(ckpt_dir, delete_checkpoint=False),
        clock,
        keras.callbacks.CSVLogger(os.path.join(log_dir, "train.csv"), append=True),
        trainers.CollapseGuard(parent, chance_accuracy((splits.validation or splits.train)[1]),
                                collapse_patience, members=member_dirs, factor=CHANCE_FACTOR,
                                ckpt_dir=ckpt_dir, finished_epochs=checkpoint_epochs(ckpt_dir)),
        *extra_callbacks,
    ]
    logging.info("training %d members as one fused network: %s", len(configs),
                 ", ".join(member_dirs))
    seconds, test = fit_and_test(trainer, train_ds, first.epochs, steps, splits, callbacks,
                                  verbose)
    build = lambda: models.build_model(first.arch, info.image_shape, info.num_classes,  # noqa: E731
                                       normalization)
    exported, collapsed = [], []
    for i, (cfg, member_dir) in enumerate(zip(configs, member_dirs)):
        metadata = member_metadata(
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
            refuse_collapsed(cfg, member_dir, metadata, splits, allow_collapsed)
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
