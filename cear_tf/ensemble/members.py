"""Member files: export a Keras network as a SavedModel + cear.json, and load any member.

Contract (docs/method.md, section 5): a member is a SavedModel directory whose `serving_default`
signature takes one float32 tensor [B, H, W, C] of pixels in [0, 1] and returns logits
[B, K]. `cear.json` beside `saved_model.pb` records how it was made; it is optional when
loading, so SavedModels made by other tools certify too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import keras
import tensorflow as tf
from absl import logging

# No public TF2 API freezes a ConcreteFunction; this is the converter tf.lite uses.
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

import cear_tf
from cear_tf.ensemble.files import METADATA_FILE, content_digest, is_complete_member  # noqa: F401

KERAS_FILE = "model.keras"
SIGNATURE = "serving_default"


def export_member(network: keras.Model, directory: str, metadata: dict[str, Any]) -> str:
    """Writes `network` as a SavedModel with a serving_default signature, plus cear.json.

    The SavedModel is written to a temporary sibling and renamed into place, so a
    directory that exists with cear.json is always a complete member (what `ensemble`
    training uses to skip finished members).
    """
    shape = tuple(network.input_shape[1:])
    tmp = directory.rstrip("/") + ".partial"
    if tf.io.gfile.exists(tmp):
        tf.io.gfile.rmtree(tmp)
    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=lambda images: {"logits": network(images, training=False)},
        input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="images")],
    )
    # So that the loaded object is callable: tf.saved_model.load(member)(images) -> logits.
    archive.add_endpoint(
        name="__call__",
        fn=lambda images: network(images, training=False),
        input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="images")],
    )
    # TensorFlow logs a line per asset and variable file at INFO while writing: quiet it.
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)
    try:
        archive.write_out(tmp, verbose=False)
    finally:
        logging.set_verbosity(verbosity)
    # The Keras model too, so a member can be reloaded with keras.saving.load_model and
    # fine-tuned (the SavedModel is for serving and certification).
    network.save(os.path.join(tmp, KERAS_FILE))
    meta = dict(metadata)
    meta.setdefault("package_version", cear_tf.__version__)
    meta.setdefault("input_shape", list(shape))
    meta.setdefault("num_classes", int(network.output_shape[-1]))
    return place_export(tmp, directory, METADATA_FILE, meta)


def place_export(tmp: str, directory: str, json_name: str, record: dict) -> str:
    """Writes `record` as tmp/json_name, then renames the finished export `tmp` into place:
    a directory that exists is always complete."""
    with open(os.path.join(tmp, json_name), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
    if tf.io.gfile.exists(directory):
        tf.io.gfile.rmtree(directory)
    os.replace(tmp, directory)
    return directory


@dataclasses.dataclass
class Member:
    """A loaded member: `logits(images)` plus what is known of its shapes and origin."""

    path: str
    logits: Callable[[tf.Tensor], tf.Tensor]
    input_shape: tuple[int, int, int]
    num_classes: int
    metadata: dict[str, Any]
    saved_model: Any = dataclasses.field(default=None, repr=False)  # keeps `logits` alive

    def __call__(self, images):
        return self.logits(images)


def freeze(concrete_fn) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """The function with its variables baked in as constants, as a callable returning its
    single output; None where conversion fails (e.g. a SavedModel holding lookup tables).

    Constant weights let the graph optimizer fold batch-norm scales and shifts into the
    convolutions and fuse conv + bias + residual + ReLU: on the 2-core CPU a ResNet-20
    member ran ~1.2-1.4x faster, same logits up to ~5e-7 relative.
    """
    try:
        frozen = convert_variables_to_constants_v2(concrete_fn)
    except Exception as e:  # noqa: BLE001 - the converter raises many types.
        logging.warning("cannot freeze %s (%s): running it with variables", concrete_fn.name, e)
        return None
    return lambda images: frozen(images)[0]


def freeze_fn(network: keras.Model, shape) -> Callable[[tf.Tensor], tf.Tensor]:
    """`freeze` for an in-memory Keras network (inference mode) on inputs of `shape`."""
    spec = tf.TensorSpec(shape, tf.float32)
    concrete = tf.function(lambda images: network(images, training=False)).get_concrete_function(spec)
    return freeze(concrete) or (lambda images: network(images, training=False))


def freeze_keras(network: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """`freeze` for an in-memory Keras network (inference mode)."""
    return freeze_fn(network, (None, *network.input_shape[1:]))


def read_metadata(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return meta


def load_member(directory: str, frozen: bool = True) -> Member:
    """Loads a SavedModel member and checks its serving_default signature.

    With `frozen` (the default) the signature's variables are baked in as constants
    (`freeze`), which is faster for inference and gives the same logits; pass False to
    keep variables (e.g. to fine-tune).

    Raises ValueError naming the directory when it is not a SavedModel, lacks the
    signature, or the signature is not one float32 [B, H, W, C] input -> [B, K] output.
    """
    if not os.path.isfile(os.path.join(directory, "saved_model.pb")):
        raise ValueError(f"{directory}: not a SavedModel directory (no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(directory)
    except Exception as e:  # noqa: BLE001 - TF raises many types for a bad SavedModel.
        raise ValueError(f"{directory}: cannot load SavedModel: {e}") from e
    if SIGNATURE not in loaded.signatures:
        raise ValueError(f"{directory}: SavedModel has no '{SIGNATURE}' signature "
                         f"(has: {', '.join(loaded.signatures) or 'none'})")
    fn = loaded.signatures[SIGNATURE]
    args = fn.structured_input_signature[1]
    if len(args) != 1:
        raise ValueError(f"{directory}: '{SIGNATURE}' must take exactly one input, "
                         f"takes {sorted(args)}")
    (input_name, spec), = args.items()
    if spec.dtype != tf.float32 or spec.shape.rank != 4 or None in spec.shape[1:]:
        raise ValueError(f"{directory}: '{SIGNATURE}' input must be float32 [B, H, W, C], "
                         f"got {spec.dtype.name} {spec.shape}")
    outputs = fn.structured_outputs
    if len(outputs) != 1:
        raise ValueError(f"{directory}: '{SIGNATURE}' must return one tensor of logits, "
                         f"returns {sorted(outputs)}")
    (output_name, out_spec), = outputs.items()
    if out_spec.shape.rank != 2 or out_spec.shape[-1] is None or out_spec.shape[-1] < 2:
        raise ValueError(f"{directory}: '{SIGNATURE}' output must be logits [B, K] with K >= 2, "
                         f"got {out_spec.shape}")

    def logits(images):
        return fn(**{input_name: images})[output_name]

    if frozen:
        logits = freeze(fn) or logits

    member = Member(
        path=directory,
        logits=logits,
        input_shape=tuple(int(d) for d in spec.shape[1:]),
        num_classes=int(out_spec.shape[-1]),
        metadata=read_metadata(directory),
        saved_model=loaded,
    )
    return member
