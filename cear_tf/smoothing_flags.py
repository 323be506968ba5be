"""Flags of the smoothed ensemble, shared by cear_tf.certify and cear_tf.weights."""

from absl import flags

from cear_tf import common_flags
from cear_tf import ensemble

flags.DEFINE_list("models", None, "Member SavedModel directories, or ensemble directories "
                  "holding member_<i>/ folders ('{output_dir}' is replaced by --output_dir).")
flags.DEFINE_float("logit_noise", 0.0, "Per-member input noise eps_l added on top of the "
                   "smoothing noise (0 = Algorithm 1 as printed).")
flags.DEFINE_bool("clip", False, "Clip noisy inputs to [0, 1] (the released code does).")
flags.DEFINE_integer("N0", 100, "Selection draws.")
flags.DEFINE_integer("N", 100000, "Estimation draws.")
flags.DEFINE_float("alpha", 0.001, "Failure probability of each certificate.")
flags.DEFINE_integer("batch", 1000, "Noise draws per forward pass.")

flags.register_validator("logit_noise", lambda v: v >= 0, message="--logit_noise must be >= 0")
flags.register_validator("N0", lambda v: v >= 1, message="--N0 must be >= 1")
flags.register_validator("N", lambda v: v >= 1, message="--N must be >= 1")
flags.register_validator("alpha", lambda v: 0 < v < 1, message="--alpha must be in (0, 1)")
flags.register_validator("batch", lambda v: v >= 1, message="--batch must be >= 1")


def member_dirs():
    """The member directories --models names, placeholders expanded."""
    return ensemble.resolve_member_dirs([common_flags.expand_path(p) for p in flags.FLAGS.models])
