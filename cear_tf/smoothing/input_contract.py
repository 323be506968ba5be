"""The input contract of every boundary that certifies or predicts: what an image must be.

  images [B, H, W, C] with (H, W, C) the members' input shape, float32, every pixel finite
  and in [0, 1].

The guarantee of randomized smoothing speaks about the smoothed classifier at the point x it
is asked about; the members were trained, and the noise scale sigma chosen, for pixels in
[0, 1]. A NaN image is no point at all, and a 0-255 image (pixels up to 255) is a point the
members never saw, at which sigma is 255 times too small to mean what it says. The members
cannot be relied on to refuse such inputs (max-pooling turns a window of NaNs into -3.4e38, a
finite logit), so the check sits on the input, before any member runs: `Smooth`'s public
methods, both signatures of the smoothed SavedModel (cear_tf.cli.export) and the data the
command-line tools read apply it. `Smooth(check_inputs=False)` and `export --nocheck_inputs`
turn it off for members made for another range.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

RULE = ("images [B, H, W, C] of the members' input shape, float32, every pixel finite and "
        "in [0, 1]")


class InputContractError(ValueError):
    """Images that break the input contract (RULE)."""


def _broken(what: str) -> InputContractError:
    return InputContractError(f"input contract ({RULE}) broken: {what}")


def check_images(images, image_shape: Sequence[int] | None = None,
                 ids: Sequence[int] | None = None, where: str = "images") -> np.ndarray:
    """Returns `images` as a float32 array [B, H, W, C] after checking the contract, or
    raises InputContractError naming the rule, the first offending image (its id from `ids`
    where given, else its position) and the value. `image_shape` (H, W, C) is the members'
    (None: any)."""
    if isinstance(images, tf.Tensor):
        images = images.numpy()
    array = np.asarray(images)
    if array.dtype != np.float32:
        raise _broken(f"{where} are {array.dtype}, not float32 (cast with "
                      f".astype(np.float32){', after dividing by 255' if array.dtype.kind in 'ui' else ''})")
    if array.ndim != 4:
        raise _broken(f"{where} have shape {tuple(array.shape)}, not [B, H, W, C]")
    if image_shape is not None and tuple(array.shape[1:]) != tuple(image_shape):
        raise _broken(f"{where} have shape {tuple(array.shape)}, the members take "
                      f"[B, {', '.join(str(d) for d in image_shape)}]")
    finite = np.isfinite(array)
    bad = ~finite | (array < 0) | (array > 1)
    if bad.any():
        flat = int(np.argmax(bad.reshape(-1)))
        position = np.unravel_index(flat, array.shape)
        value = float(array[position])
        name = f"image {ids[position[0]]}" if ids is not None else f"image {position[0]}"
        if not np.isfinite(value):
            why = "not finite"
        elif array[finite].max(initial=0.0) > 1.5:
            why = "outside [0, 1]: a 0-255 image? divide by 255"
        else:
            why = "outside [0, 1]"
        raise _broken(f"{where}: {name} has pixel {value:g} at {tuple(int(p) for p in position[1:])} "
                      f"({why})")
    return array


def check_image(x, image_shape: Sequence[int] | None = None, idx: int | None = None,
                where: str = "x") -> np.ndarray:
    """One image [H, W, C] (the single-image methods): as check_images on a batch of one."""
    array = np.asarray(x.numpy() if isinstance(x, tf.Tensor) else x)
    if array.ndim != 3:
        raise _broken(f"{where} has shape {tuple(array.shape)}, not one image [H, W, C]")
    return check_images(array[None], image_shape, None if idx is None else [idx], where)[0]


def graph_check(images: tf.Tensor, image_shape: Sequence[int]) -> tf.Tensor:
    """The contract inside a graph (the smoothed SavedModel): `images` [B, ...] float32 with
    their static shape set to [B, H, W, C], after assertions that fail with an
    InvalidArgumentError naming the rule, the offending image's index and the value (TF
    Serving passes the message to its client)."""
    expected = tf.constant(list(image_shape), tf.int32)
    shape = tf.shape(images)
    rank_ok = tf.equal(tf.rank(images), 4)
    shape_ok = tf.logical_and(rank_ok, tf.reduce_all(tf.equal(
        tf.concat([shape, tf.zeros([tf.maximum(4 - tf.size(shape), 0)], tf.int32)], 0)[1:4],
        expected)))
    check_shape = tf.debugging.Assert(
        shape_ok, [f"input contract ({RULE}) broken: images have shape", shape,
                   "the members take [B, H, W, C] =", expected], summarize=8)
    with tf.control_dependencies([check_shape]):
        images = tf.ensure_shape(tf.identity(images), [None, *image_shape])
    flat = tf.reshape(images, [tf.shape(images)[0], -1])
    bad = tf.logical_or(tf.logical_not(tf.math.is_finite(flat)),
                        tf.logical_or(flat < 0.0, flat > 1.0))
    per_image = tf.reduce_any(bad, axis=1)
    first = tf.argmax(tf.cast(per_image, tf.int32), output_type=tf.int32)
    pixel = tf.argmax(tf.cast(tf.gather(bad, first), tf.int32), output_type=tf.int32)
    value = tf.cond(tf.size(flat) > 0, lambda: flat[first, pixel], lambda: tf.constant(0.0))
    check_pixels = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(per_image)),
        [f"input contract ({RULE}) broken: image", first, "has pixel", value,
         "at flat index", pixel, "(not finite, or outside [0, 1]: a 0-255 image? divide by 255)"])
    with tf.control_dependencies([check_pixels]):
        return tf.identity(images)
