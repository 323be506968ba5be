"""The ensemble as deployed: members, what each member sees (clipping, its own input noise)
and their outputs. One object serves certification (`smoothing.core.Smooth`, and through it
`cear_tf.cli.weights`, `cear_tf.cli.variance`, `cear_tf.cli.export` and the benchmark) and the attacks
(`cear_tf.cli.attack`), so the classifier attacked is the classifier certified.

Member i evaluates f_i(clip(x + eps_l * eta_i)) where eta_i is member i's own draw of the
noise stream `key` (stateless_fold_in(key, i + 1)), eps_l the logit noise (0: none) and clip
optional. With eps_l = 0 every member sees the same input and a fused network (one grouped
graph for all LeNet-5 members) may run them at once; the attacks also run it on the members'
own noisy inputs (grouped).
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from cear_tf.smoothing.noise import block_noise


class DeployedEnsemble:
    """Args:
      members: callables from float32 images [B, H, W, C] in [0, 1] to logits [B, K].
      logit_noise: eps_l, the std of each member's own input noise (0 = none).
      clip: clip each member's input to [0, 1] (part of the classifier, so still sound).
      fused: optional loading.FusedMembers, the same members as one network; used when
        all members see the same input (no logit noise).
    """

    def __init__(self, members: Sequence[Callable[[tf.Tensor], tf.Tensor]],
                 logit_noise: float = 0.0, clip: bool = False, fused=None):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if logit_noise < 0:
            raise ValueError(f"logit_noise must be >= 0, got {logit_noise}")
        if fused is not None and fused.num_members != len(members):
            raise ValueError(f"fused network has {fused.num_members} members, the ensemble "
                             f"{len(members)}")
        self.members = list(members)
        self.logit_noise = float(logit_noise)
        self.clip = bool(clip)
        self.fused = fused

    @property
    def num_members(self) -> int:
        return len(self.members)

    def member_input(self, images: tf.Tensor, key: tf.Tensor, first, i: int,
                     rows: tf.Tensor | None = None) -> tf.Tensor:
        """What member i sees of `images`: plus its own logit noise (draws [first, first + B)
        of its stream, or the draws first + rows of it), clipped if the ensemble clips."""
        inputs = images
        if self.logit_noise > 0:
            member_key = tf.random.experimental.stateless_fold_in(key, i + 1)
            if rows is None:
                eta = block_noise(member_key, first, tf.shape(images)[0], tf.shape(images)[1:])
            else:  # the whole batch's noise, then the rows this member sees
                span = tf.cast(tf.reduce_max(rows) + 1, tf.int32)
                eta = tf.gather(block_noise(member_key, first, span, tf.shape(images)[1:]),
                                rows)
            inputs = inputs + self.logit_noise * eta
        if self.clip:
            inputs = tf.clip_by_value(inputs, 0.0, 1.0)
        return inputs

    def member_logits(self, images: tf.Tensor, key: tf.Tensor, first=0, i: int = 0,
                      rows: tf.Tensor | None = None) -> tf.Tensor:
        """float32 logits [B, K] of member i on what it sees of `images`."""
        return tf.cast(self.members[i](self.member_input(images, key, first, i, rows)),
                       tf.float32)

    def all_member_logits(self, images: tf.Tensor, key: tf.Tensor, first=0,
                          grouped: bool = False) -> tf.Tensor:
        """float32 logits [M, B, K] of every member on what it sees of `images`: one pass of
        the fused network where one is loaded and the members see the same input (no logit
        noise), or, with `grouped`, their own inputs stacked along channels; else member by
        member. The same numbers either way up to float rounding."""
        m = self.num_members
        if self.fused is not None and self.logit_noise == 0:
            # One ordinary first convolution with 6 M outputs serves every member.
            return tf.cast(self.fused.shared(self.member_input(images, key, first, 0)),
                           tf.float32)
        if self.fused is not None and grouped:
            inputs = tf.concat([self.member_input(images, key, first, i) for i in range(m)],
                               axis=-1)
            return tf.cast(self.fused.grouped(inputs), tf.float32)
        return tf.stack([self.member_logits(images, key, first, i) for i in range(m)])

    def member_probabilities(self, images: tf.Tensor, key: tf.Tensor, first,
                             members: range | None = None,
                             rows: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """[M, B, K] softmax outputs and [M] finiteness flags of the members (or of the range
        `members`) on `images`."""
        if self.fused is not None and members is None and rows is None and self.logit_noise == 0:
            # With logit noise the grouped first convolution was slower than separate
            # members in certification (0.84x), so only the shared input runs fused here.
            logits = self.all_member_logits(images, key, first)
            return tf.nn.softmax(logits, axis=-1), tf.reduce_all(tf.math.is_finite(logits),
                                                                 axis=[1, 2])
        probs, finite = [], []
        for i in members if members is not None else range(self.num_members):
            logits = self.member_logits(images, key, first, i, rows)
            finite.append(tf.reduce_all(tf.math.is_finite(logits)))
            probs.append(tf.nn.softmax(logits, axis=-1))
        return tf.stack(probs), tf.stack(finite)
