"""Training checkpoints: one per member (`<model_dir>.ckpt`, or one per fused group), written
each epoch; resumed only under the settings it was made with, and the member's train.csv
kept to the epochs the checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from absl import logging

from cear_tf.common.lazy import lazy_module
from cear_tf.training.recipe import MemberConfig, Splits

trainers = lazy_module("cear_tf.training.trainers")


CHECKPOINT_SETTINGS = "cear_settings.json"


def checkpoint_settings(cfg: MemberConfig, splits: Splits, teacher=None) -> dict:
    """What a checkpoint's weights depend on: resuming under anything else is refused."""
    return dict(dataclasses.asdict(cfg), train_examples=int(len(splits.train[1])),
                validation_size=splits.validation_size, split_seed=splits.split_seed,
                teacher_dir=getattr(teacher, "path", None),
                training_draws=trainers.TRAINING_DRAWS)


def prepare_checkpoint(ckpt_dir: str, settings: dict, resume: bool) -> None:
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


def checkpoint_epochs(ckpt_dir: str) -> int:
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
    finished = checkpoint_epochs(ckpt_dir)
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


def remaining_epochs(ckpt_dir: str, epochs: int) -> range:
    """The epochs a run still trains: from the checkpoint's (BackupAndRestore restores the
    same epoch) to the last. The pipeline starts there, so its batches are the ones the
    uninterrupted run would see (datasets.make_pipeline). With every epoch done, the last one
    stands in for the empty rest (fit trains nothing then)."""
    finished = min(checkpoint_epochs(ckpt_dir), epochs)
    return range(min(finished, epochs - 1), epochs)


def fused_checkpoint_dir(member_dirs) -> str:
    """Where the fused run of exactly these members keeps its checkpoint."""
    parent = os.path.dirname(os.path.abspath(member_dirs[0]))
    tag = "fused_" + "_".join(os.path.basename(os.path.normpath(d)) for d in member_dirs)
    return os.path.join(parent, tag + ".ckpt")


def prepare_fused_checkpoint(ckpt_dir, settings, resume):
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
