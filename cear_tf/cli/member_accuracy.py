"""Each member's test accuracy under the certification noise, beside its clean accuracy.

  python -m cear_tf.cli.member_accuracy --models=runs/cear --dataset=cifar10 --sigma=0.25 \
      --draws=4 --outfile=runs/cear/member_accuracy_sigma0.25.json

A member's cear.json records its accuracy clean and under the noise it trained at, which
for a VGA student is its own sigma_i, not the sigma_v its ensemble is certified at. The
accuracy of the base classifier under N(0, sigma_v^2 I) bounds what the smoothed
classifier can certify (an image whose noisy predictions are mostly wrong cannot get a
correct certificate), so this measures it for every member at the same sigma_v.

Noisy accuracy = mean over test images of the fraction of --draws noise draws (unclipped,
as cear_tf.cli.certify draws them) that the member classifies correctly; its 95% interval is
the mean +- 1.96 standard errors of the per-image fractions (draws of one image are
correlated, so the images, not the draws, are the independent samples). Clean accuracy has
a 95% Wilson interval. The draws of image i come from its own stream (seed, image i), so
they do not depend on --batch and every member sees the same noisy images.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from absl import flags, logging

from cear_tf.cli import common_flags, launch
from cear_tf.common.lazy import lazy_module
from cear_tf.ensemble import files

# Loaded when used, so --help answers without TensorFlow.
datasets = lazy_module("cear_tf.data.datasets")
loading = lazy_module("cear_tf.ensemble.loading")
members_lib = lazy_module("cear_tf.ensemble.members")
accuracy = lazy_module("cear_tf.ensemble.accuracy")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    common_flags.define_data(validation=False)
    common_flags.define_sigma("Noise std the noisy accuracy is measured at (the "
                              "certification sigma_v), in pixel units.")
    common_flags.define_seed("Seed of the noise streams.")
    common_flags.define_output_dir()
    common_flags.define_resume("Keep an --outfile made with these members and settings; "
                               "--noresume measures again.")
    flags.DEFINE_list("models", None, "Member SavedModel directories, or ensemble directories "
                      "of member_<i>/.")
    flags.DEFINE_integer("draws", 4, "Noise draws per test image.")
    flags.DEFINE_integer("num_images", 0, "Measure on the first num_images test images; "
                         "0 = all.")
    flags.DEFINE_integer("batch", 2000, "Noise draws per forward pass (a speed knob: draws "
                         "do not depend on it); a pass holds batch // draws images.")
    flags.DEFINE_string("outfile", None, "Where the accuracies go (JSON); required. "
                        "'{output_dir}' is replaced by --output_dir.")
    flags.register_validator("draws", lambda v: v >= 1, message="--draws must be >= 1")
    flags.register_validator("num_images", lambda v: v >= 0,
                             message="--num_images must be >= 0 (0 = all test images)")
    flags.register_validator("batch", lambda v: v >= 1, message="--batch must be >= 1")


def _fmt(acc: "accuracy.Accuracy") -> str:
    return f"{100 * acc.value:6.2f}% [{100 * acc.low:.2f}, {100 * acc.high:.2f}]"


def _made_with(path: str, settings: dict) -> bool:
    """Whether the JSON at `path` was measured on these members with these settings."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(old, dict) and all(old.get(k) == v for k, v in settings.items())


def _settings(member_dirs, count: int | None) -> dict:
    """What a measurement depends on (recorded in the file); `count` None leaves the number
    of images out (every test image, whose count only the data tell)."""
    settings = dict(dataset=FLAGS.dataset, split="test", sigma=FLAGS.sigma, draws=FLAGS.draws,
                    seed=FLAGS.seed, clip=False, noise="member_accuracy/per_image_stream",
                    member_digests=[files.content_digest(d) for d in member_dirs])
    if count is not None:
        settings["images"] = count
    return settings


def is_done() -> bool:
    """The file holds these members' accuracy under these settings (main keeps it)."""
    member_dirs = files.resolve_member_dirs([common_flags.expand_path(p)
                                                   for p in FLAGS.models])
    out = common_flags.expand_path(FLAGS.outfile)
    return FLAGS.resume and _made_with(out, _settings(member_dirs, FLAGS.num_images or None))


def main(argv):
    launch.require(argv, "models", "outfile")
    out = common_flags.expand_path(FLAGS.outfile)
    member_dirs = loading.resolve_member_dirs([common_flags.expand_path(p)
                                                for p in FLAGS.models])
    loaded = loading.load_ensemble(member_dirs)
    images, labels = datasets.load_split(FLAGS.dataset, "test", FLAGS.data_dir)
    if loaded[0].input_shape != tuple(images.shape[1:]):
        raise ValueError(f"--models: members take {loaded[0].input_shape} images, "
                         f"--dataset={FLAGS.dataset} has {tuple(images.shape[1:])}")
    count = len(labels) if FLAGS.num_images == 0 else min(FLAGS.num_images, len(labels))
    indices = np.arange(count)
    settings = _settings(member_dirs, count)
    if FLAGS.resume and _made_with(out, settings):
        logging.info("%s exists with these members and settings: kept (--noresume measures "
                     "again)", out)
        return
    rows = []
    print(f"test accuracy (95% interval) on {count} images; noisy: sigma {FLAGS.sigma:g}, "
          f"{FLAGS.draws} draws per image")
    for d, member in zip(member_dirs, loaded):
        clean, noisy = accuracy.measure(member, images, labels, indices, FLAGS.sigma, FLAGS.draws,
                               FLAGS.seed, max(1, FLAGS.batch // FLAGS.draws))
        meta = members_lib.read_metadata(d)
        trained = meta.get("sigma")
        rows.append(dict(member=os.path.relpath(os.path.abspath(d)),
                         trained_sigma=trained, temperature=meta.get("temperature"),
                         clean=dataclasses.asdict(clean), noisy=dataclasses.asdict(noisy)))
        print(f"  {rows[-1]['member']}: clean {_fmt(clean)}, noisy {_fmt(noisy)}"
              + (f" (trained at sigma {trained:.3f})" if trained is not None else ""))
        logging.info("%s measured", d)
    record = dict(settings, members=rows)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(out + ".tmp", out)
    print(f"wrote {out}")


if __name__ == "__main__":
    launch.run(main, define_flags, is_done)
