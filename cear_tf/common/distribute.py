"""tf.distribute strategies chosen by flag, for training and certification.

  --strategy=default      one device (TensorFlow's default placement)
  --strategy=mirrored     all local GPUs (or logical CPUs), synchronous data parallelism
  --strategy=multiworker  several machines, each listed in TF_CONFIG (MultiWorkerMirrored)

Nothing here schedules work by hand: the strategy splits batches, all-reduces gradients
and reduces certification counts.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from cear_tf.config.choices import STRATEGIES


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        config = os.environ.get("TF_CONFIG")
        if config:
            try:
                json.loads(config)
            except json.JSONDecodeError as e:
                raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")


def replica_seed(seed: tf.Tensor) -> tf.Tensor:
    """`seed` folded with the replica id, so every replica draws its own noise."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return seed
    return tf.random.experimental.stateless_fold_in(seed, ctx.replica_id_in_sync_group)


def scale_for_replicas(loss: tf.Tensor) -> tf.Tensor:
    """Per-replica mean loss -> its share of the global-batch mean (gradients are summed)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return loss
    return loss / tf.cast(ctx.num_replicas_in_sync, loss.dtype)
