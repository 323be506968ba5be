"""Trains CEAR members: the teacher, distilled VGA students, Gaussian baselines, ensembles.

  python -m cear_tf.cli.train --role=teacher --epochs=90 --model_dir=runs/teacher
  python -m cear_tf.cli.train --role=student --teacher_dir=runs/teacher --sigma=0.25 --temperature=3
  python -m cear_tf.cli.train --role=ensemble --teacher_dir=runs/teacher --temperatures=2,3,4,5,6

Every member is exported as a SavedModel + cear.json (see cear_tf.ensemble.members). A checkpoint
is written each epoch next to the member (`<model_dir>.ckpt`); a rerun resumes from it
(unless --noresume), and `ensemble` skips members that are already exported.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from cear_tf.cli import common_flags, launch
from cear_tf.common.lazy import lazy_module
from cear_tf.config import choices
from cear_tf.ensemble import files

# The library this entry point configures (no TensorFlow until a member trains).
from cear_tf.training.checkpoints import fused_checkpoint_dir
from cear_tf.training.loop import train_fused_members, train_member
from cear_tf.training.recipe import (
    DEFAULT_CLIPNORM,
    DEFAULT_LEARNING_RATE,
    ROLES,
    CollapsedMemberError,
    MemberConfig,
    check_teacher,
    ensemble_configs,
    fusion_problem,
    load_splits,
)

# Loaded when used, so --help answers without TensorFlow.
datasets = lazy_module("cear_tf.data.datasets")
distribute = lazy_module("cear_tf.common.distribute")
members = lazy_module("cear_tf.ensemble.members")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    common_flags.define_data()
    common_flags.define_sigma("Training noise std sigma_tr, in pixel units (students: the VGA "
                              "centre).")
    common_flags.define_seed("Random seed (initialisation, shuffling, noise).")
    common_flags.define_output_dir()
    common_flags.define_strategy()
    common_flags.define_fuse_members("--role=ensemble: train LeNet-5 members as one fused network "
                                     "(cear_tf.models.fused; each member its own batches, noise, "
                                     "sigma_i, temperature, seed and gradient clipping).")
    common_flags.define_resume("Resume training from its per-epoch checkpoint and skip exported "
                               "members; --noresume starts over.")
    # What is trained.
    flags.DEFINE_enum("role", "teacher", ROLES, "What to train.")
    flags.DEFINE_enum("arch", "lenet5", list(choices.MODEL_NAMES), "Network architecture.")
    flags.DEFINE_bool("normalize", True,
                      "Put per-channel (x - mean) / std of the data set inside the model.")
    flags.DEFINE_string("model_dir", None,
                        "Where the member (or, for --role=ensemble, member_<i> folders) is written. "
                        "Default: <output_dir>/<role>. '{output_dir}' is replaced by --output_dir.")
    flags.DEFINE_string("teacher_dir", None, "Teacher SavedModel, required for student/ensemble.")

    # Distillation and noise.
    flags.DEFINE_float("temperature", 3.0, "Distillation temperature T >= 1 (role=student).")
    flags.DEFINE_list("temperatures", ["2", "3", "4", "5", "6"],
                      "One temperature per ensemble member (role=ensemble).")
    flags.DEFINE_bool("vga", True, "Variable Gaussian Augmentation: sigma_i = sigma + beta_i, "
                      "beta_i ~ U(-sigma/2, sigma/2) from the member's seed. --novga gives CEAR-.")
    flags.DEFINE_enum("vga_mode", "per_model", list(choices.NOISE_MODES),
                      "per_model: one sigma_i per member; per_example: a fresh sigma per input in "
                      "[sigma/2, 3 sigma/2].")
    flags.DEFINE_enum("vga_rule", "uniform", list(choices.VGA_RULES),
                      "How VGA draws sigma_i: uniform (the paper: beta ~ U(-sigma/2, sigma/2)) or "
                      "the released code's sign-by-temperature rules (released_mnist: |beta| ~ "
                      "U(0, sigma/2); released_cifar: |beta| ~ U(0, sigma/3)); see "
                      "trainers.vga_sigma.")
    flags.DEFINE_enum("student_loss", "hinton", list(choices.STUDENT_LOSSES),
                      "hinton: CE(softmax(f_t/T), softmax(f_s/T)) * T^2 (default); released_mnist: "
                      "the released MNIST loss CE(softmax(f_t), softmax(softmax(f_s)/T)).")
    flags.DEFINE_bool("train_clip", False, "Clip noisy training inputs to [0, 1] (the released "
                      "code does; off by default).")
    flags.DEFINE_bool("fixed_noisy_copy", False, "Train on one noisy copy of the training set, "
                      "drawn once from the member's seed (clipped with --train_clip), as the "
                      "released code does; by default noise is drawn afresh for every batch.")
    flags.DEFINE_float("hard_label_weight", 0.0,
                       "Weight of hard-label cross-entropy mixed into the distillation loss.")
    flags.DEFINE_integer("num_members", 0, "Ensemble size (role=ensemble); 0 = one member per "
                         "--temperatures entry. Students need one temperature per member.")
    flags.DEFINE_enum("member_role", "student", ["student", "gaussian"],
                      "How ensemble members are trained (gaussian: SWEEN candidates).")

    # Optimisation.
    flags.DEFINE_integer("epochs", 10, "Training epochs.")
    flags.DEFINE_integer("batch_size", 128, "Training batch size (global).")
    # Defaults shared by every role, chosen so that no role collapses from its first step (see
    # DEFAULT_CLIPNORM); CEAR and CEAR- students get identical optimiser settings.
    flags.DEFINE_float("learning_rate", DEFAULT_LEARNING_RATE, "Initial SGD learning rate.")
    flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "sgd (with --momentum) or adam (the "
                      "released MNIST students: Adam, learning rate 1e-3).")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
    flags.DEFINE_bool("nesterov", False, "SGD with Nesterov momentum (the released teachers and "
                      "Gaussian networks).")
    flags.DEFINE_float("weight_decay", 1e-4, "Weight decay (Keras' decoupled form), 0 for none.")
    flags.DEFINE_float("clipnorm", DEFAULT_CLIPNORM,
                       "Clip the global gradient norm to this (0 = off). On by default: unclipped, "
                       "LeNet-5 died within its first epoch on real MNIST (Gaussian members at "
                       "sigma 1.0, lr 0.05, seeds 2 and 3; VGA students at sigma 0.5, lr 0.1), "
                       "and every one of them trained with 1.0.")
    flags.DEFINE_enum("lr_schedule", "cosine", ["constant", "step", "cosine"],
                      "Learning-rate schedule.")
    flags.DEFINE_integer("lr_step_epochs", 30, "step schedule: multiply by lr_gamma every N epochs.")
    flags.DEFINE_float("lr_gamma", 0.1, "step schedule: decay factor.")
    flags.DEFINE_enum("augment", "none", list(choices.AUGMENTATIONS), "Data augmentation.")
    flags.DEFINE_integer("train_subset", 0,
                         "Train on a random subset of N images of the train split (fixed by "
                         "--split_seed, the same for every member); 0 = all.")
    flags.DEFINE_integer("verbose", 1, "Keras fit verbosity: 0 silent, 1 progress bar, 2 per epoch.")
    flags.DEFINE_bool("allow_collapsed", False,
                      "Export a member even if its clean or noisy test accuracy is at chance level "
                      "(by default that is an error and the member is not exported).")
    flags.DEFINE_integer("collapse_patience", 3,
                         "Stop training a member whose validation accuracy has been at chance level "
                         "for this many consecutive epochs (0 = never stop early).")

    flags.register_validator("temperature", lambda v: v >= 1, message="--temperature must be >= 1")
    flags.register_validator(
        "temperatures", lambda v: len(v) > 0 and all(_is_number(t) and float(t) >= 1 for t in v),
        message="--temperatures must be a non-empty list of numbers >= 1")
    flags.register_validator("epochs", lambda v: v >= 1, message="--epochs must be >= 1")
    flags.register_validator("batch_size", lambda v: v >= 1, message="--batch_size must be >= 1")
    flags.register_validator("learning_rate", lambda v: v > 0, message="--learning_rate must be > 0")
    flags.register_validator("weight_decay", lambda v: v >= 0, message="--weight_decay must be >= 0")
    flags.register_validator("clipnorm", lambda v: v >= 0, message="--clipnorm must be >= 0")
    flags.register_validator("lr_step_epochs", lambda v: v >= 1,
                             message="--lr_step_epochs must be >= 1")
    flags.register_validator("hard_label_weight", lambda v: 0 <= v <= 1,
                             message="--hard_label_weight must be in [0, 1]")
    flags.register_validator("collapse_patience", lambda v: v >= 0,
                             message="--collapse_patience must be >= 0")
    flags.register_validator("num_members", lambda v: v >= 0, message="--num_members must be >= 0")
    flags.register_validator("train_subset", lambda v: v >= 0, message="--train_subset must be >= 0")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _config_from_flags(role: str) -> MemberConfig:
    return MemberConfig(
        role=role, arch=FLAGS.arch, dataset=FLAGS.dataset, seed=FLAGS.seed,
        base_sigma=FLAGS.sigma if role != "teacher" else 0.0,
        vga=FLAGS.vga and role == "student", vga_mode=FLAGS.vga_mode,
        temperature=FLAGS.temperature if role == "student" else None,
        hard_label_weight=FLAGS.hard_label_weight, normalize=FLAGS.normalize,
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        momentum=FLAGS.momentum, nesterov=FLAGS.nesterov, weight_decay=FLAGS.weight_decay, clipnorm=FLAGS.clipnorm,
        lr_schedule=FLAGS.lr_schedule, lr_step_epochs=FLAGS.lr_step_epochs,
        lr_gamma=FLAGS.lr_gamma, augment=FLAGS.augment, optimizer=FLAGS.optimizer,
        vga_rule=FLAGS.vga_rule, student_loss=FLAGS.student_loss, train_clip=FLAGS.train_clip,
        fixed_noisy_copy=FLAGS.fixed_noisy_copy)

def _member_dirs() -> list[str]:
    """The folders this run exports members to (main's jobs, without building configs)."""
    model_dir = common_flags.expand_path(FLAGS.model_dir) or os.path.join(FLAGS.output_dir,
                                                                       FLAGS.role)
    if FLAGS.role != "ensemble":
        return [model_dir]
    count = (len(FLAGS.temperatures) if FLAGS.member_role == "student"
             else FLAGS.num_members or len(FLAGS.temperatures))
    return [os.path.join(model_dir, f"member_{i}") for i in range(count)]


def is_done() -> bool:
    """Every member this run trains is exported (main would skip them all)."""
    return FLAGS.resume and all(files.is_complete_member(d) for d in _member_dirs())


def main(argv):
    launch.require(argv)
    role = FLAGS.role
    model_dir = common_flags.expand_path(FLAGS.model_dir) or os.path.join(FLAGS.output_dir, role)
    if role == "ensemble":
        configs = ensemble_configs(_config_from_flags("student"), FLAGS.temperatures,
                                   FLAGS.member_role, FLAGS.num_members)
        jobs = [(cfg, os.path.join(model_dir, f"member_{i}")) for i, cfg in enumerate(configs)]
    else:
        jobs = [(_config_from_flags(role), model_dir)]
    todo = []
    for cfg, member_dir in jobs:
        if FLAGS.resume and members.is_complete_member(member_dir):
            logging.info("%s already exported: skipped (--noresume retrains)", member_dir)
        else:
            todo.append((cfg, member_dir))
    if not todo:
        return
    if (role == "ensemble" and FLAGS.fuse_members and FLAGS.resume and len(todo) < len(jobs)
            and os.path.isdir(fused_checkpoint_dir([d for _, d in jobs]))):
        # A fused run of the whole group was cut while it exported its members: finish that
        # run from its checkpoint (its last epoch), which exports the rest as it would have,
        # rather than train the rest again as another group (other noise, other weights).
        logging.info("finishing the fused run of %d members that was cut during its exports",
                     len(jobs))
        todo = jobs
    strategy = distribute.make_strategy(FLAGS.strategy)
    teacher = None
    if any(cfg.role == "student" for cfg, _ in todo):
        teacher_dir = common_flags.expand_path(FLAGS.teacher_dir)
        if not teacher_dir:
            raise app.UsageError(f"--role={role} needs --teacher_dir (a trained teacher)")
        with strategy.scope():
            teacher = members.load_member(teacher_dir)
        check_teacher(teacher, datasets.dataset_info(FLAGS.dataset))
    splits = load_splits(FLAGS.dataset, FLAGS.data_dir, FLAGS.validation_size, FLAGS.split_seed,
                         FLAGS.train_subset)
    collapsed = []
    configs = [cfg for cfg, _ in todo]
    if role == "ensemble" and FLAGS.fuse_members:
        problem = fusion_problem(configs)
        if problem is None and FLAGS.strategy == "default":
            try:
                train_fused_members(configs, splits, [d for _, d in todo], teacher,
                                    FLAGS.resume, FLAGS.verbose, FLAGS.allow_collapsed,
                                    collapse_patience=FLAGS.collapse_patience)
            except CollapsedMemberError as e:
                raise SystemExit(f"cear_tf.cli.train: {e}") from None
            return
        logging.info("training the members one after another (not fused: %s)",
                     problem or f"--strategy={FLAGS.strategy}")
    for n, (cfg, member_dir) in enumerate(todo, start=1):
        logging.info("training %s %d/%d: %s (T=%s, seed=%d, sigma=%.4f)", cfg.role, n, len(todo),
                     member_dir, cfg.temperature, cfg.seed, cfg.sigma)
        try:
            train_member(cfg, splits, member_dir, teacher, FLAGS.resume, FLAGS.verbose,
                         strategy=strategy, allow_collapsed=FLAGS.allow_collapsed,
                         collapse_patience=FLAGS.collapse_patience)
        except CollapsedMemberError as e:  # the other members still train
            logging.error("%s", e)
            collapsed.append(str(e))
    if collapsed:
        raise SystemExit(f"cear_tf.cli.train: {len(collapsed)} of {len(todo)} members collapsed to "
                         f"chance level and were not exported: " + " | ".join(collapsed))


if __name__ == "__main__":
    launch.run(main, define_flags, is_done)
