"""Certifies a smoothed ensemble on test images: one Cohen-format log per aggregation.

  python -m cear_tf.cli.certify --dataset=mnist --data_dir=../shared/datasets \
      --models=runs/ensemble --aggregation=mean,mv,rw,gm --sigma=0.25 \
      --N0=100 --N=100000 --alpha=0.001 --skip=20 --outfile='runs/certify_{aggregation}.tsv'

All aggregations are computed from the same member forward passes. Rows are appended and
flushed per image; rerunning the same command resumes after the last complete row.
"""

from __future__ import annotations

import os
import time

from absl import app, flags, logging

from cear_tf.cli import common_flags, ensemble_flags, launch
from cear_tf.common.lazy import lazy_module
from cear_tf.common.progress import Progress
from cear_tf.config import choices, specs
from cear_tf.ensemble import files
from cear_tf.reporting import log_files
from cear_tf.reporting.log_files import CertifyLog

# Loaded when main runs, so --help answers without TensorFlow.
datasets = lazy_module("cear_tf.data.datasets")
distribute = lazy_module("cear_tf.common.distribute")
core = lazy_module("cear_tf.smoothing.core")
decisions = lazy_module("cear_tf.smoothing.decisions")
noise = lazy_module("cear_tf.smoothing.noise")
input_contract = lazy_module("cear_tf.smoothing.input_contract")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    ensemble_flags.define_smoothing_run("Resume each log after its last complete row (checked "
                                         "against the log's settings); --noresume starts over.")
    common_flags.define_outfile("Log path; '{aggregation}' is replaced by each aggregation's name, "
                                "or the name is added before the suffix when several are given.")
    common_flags.define_strategy()
    ensemble_flags.define_ensemble()
    ensemble_flags.define_sampling()
    ensemble_flags.define_images()
    # Faster certification (Horvath et al. 2022).
    flags.DEFINE_integer("consensus_k", 0, "K-consensus: run the first K members on every draw and "
                         "the rest only where those K disagree (0 = off).")
    flags.DEFINE_float("target_radius", -1.0, "Adaptive sampling: decide only whether each image is "
                       "certified at this radius, with staged sample sizes --adaptive_stages (< 0 = off: "
                       "plain CERTIFY with --N).")
    flags.DEFINE_bool("xla", False, "Compile the sampling step with XLA (measure first: on the "
                      "2-core CPU it did not help, see cear_tf.cli.bench).")
    flags.DEFINE_enum("votes", "sound", ["sound", "pooled"],
                      "sound: one vote per noise draw, the aggregated ensemble's (Cohen's CERTIFY, "
                      "the certificate). pooled: ALSO log the released code's pooled count of the "
                      "members' own votes (N*M 'trials', alpha/2) in pooled_* columns, from the "
                      "same member passes: NOT a valid certificate (the members' votes on one "
                      "draw are dependent), kept to measure what the released counting does.")
    flags.DEFINE_list("adaptive_stages", ["1000", "10000", "100000"], "Adaptive sampling: cumulative "
                      "estimation draws at which to decide (alpha is split equally).")

    # Which images.
    flags.DEFINE_enum("split", "test", list(choices.SPLITS), "Split to certify.")
    flags.DEFINE_string("shard", "0/1", "i/n: certify only the i-th of n disjoint interleaved parts "
                        "of the selected images (merge the logs with python -m cear_tf.cli.merge).")

    flags.register_validator("shard", lambda v: parse_shard(v) is not None,
                             message="--shard must be i/n with 0 <= i < n")
    flags.register_validator("consensus_k", lambda v: v >= 0, message="--consensus_k must be >= 0")
    flags.register_validator(
        "adaptive_stages", lambda v: len(v) > 0 and all(x.isdigit() and int(x) >= 1 for x in v)
        and all(int(b) > int(a) for a, b in zip(v, v[1:])),
        message="--adaptive_stages must be increasing integers >= 1")



def parse_shard(text: str) -> tuple[int, int] | None:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        return None
    return (i, n) if 0 <= i < n else None


def outfile_for(template: str, name: str, several: bool) -> str:
    if "{aggregation}" in template:
        return template.replace("{aggregation}", name)
    if not several:
        return template
    root, ext = os.path.splitext(template)
    return f"{root}_{name}{ext}"


def image_indices(total: int, skip: int, max_index: int, shard: str = "0/1",
                  start: int = 0) -> list[int]:
    """Cohen's selection: every skip-th index from `start`, below max_index (-1 = no bound);
    then the shard's interleaved part of it."""
    stop = total if max_index < 0 else min(total, max_index)
    i, n = parse_shard(shard)
    return list(range(start, stop, skip))[i::n]


def _row_settings(name: str) -> dict:
    """The flag-derived settings of aggregation `name`'s log that decide what a row holds
    (main records them with the rest; is_done compares them without loading anything)."""
    settings = dict(
        dataset=FLAGS.dataset, split=FLAGS.split, aggregation=name,
        sigma=FLAGS.sigma, logit_noise=FLAGS.logit_noise, N0=FLAGS.N0, N=FLAGS.N,
        alpha=FLAGS.alpha, clip=FLAGS.clip, seed=FLAGS.seed,
        validation_size=FLAGS.validation_size if FLAGS.split != "test" else None,
        split_seed=FLAGS.split_seed if FLAGS.split != "test" else None,
        consensus_k=FLAGS.consensus_k,
        target_radius=FLAGS.target_radius if FLAGS.target_radius >= 0 else None,
        stages=[int(v) for v in FLAGS.adaptive_stages] if FLAGS.target_radius >= 0 else None,
        # Recorded only when reduced, so float32 logs made before the flag resume.
        precision=FLAGS.precision if FLAGS.precision != "float32" else None)
    if choices.parse_aggregation(name)[0] == "gm":
        settings.update(gm_tolerance=FLAGS.gm_tolerance,
                        gm_max_iterations=FLAGS.gm_max_iterations)
    return settings


def _log_covers(path: str, settings: dict, fingerprint: dict) -> bool:
    """Whether the log at `path` holds a row for every image selected now, made with these
    row settings and this fingerprint (members' digests, aggregator weights)."""
    import json
    if not (os.path.exists(path) and os.path.exists(path + ".json")):
        return False
    with open(path + ".json", encoding="utf-8") as f:
        recorded = json.load(f)
    if recorded.get("fingerprint") != fingerprint or recorded.get("num_images") is None:
        return False
    if any(recorded.get(k) != v for k, v in settings.items()):
        return False
    wanted = image_indices(int(recorded["num_images"]), FLAGS.skip, FLAGS.max, FLAGS.shard,
                           FLAGS.start)
    done = {int(r["idx"]) for r in log_files.read_rows(path)}
    return bool(wanted) and set(wanted) <= done


def is_done() -> bool:
    """Every log this run writes already covers the images selected now, for these members,
    weights and row-deciding settings (main would certify nothing)."""
    if not FLAGS.resume:
        return False
    member_dirs = files.resolve_member_dirs([common_flags.expand_path(p)
                                                   for p in FLAGS.models])
    digests = [files.content_digest(d) for d in member_dirs]
    several = len(FLAGS.aggregation) > 1
    for name in FLAGS.aggregation:
        kind = choices.parse_aggregation(name)[0]
        weights = None
        if kind in ("rw", "sween"):
            path = common_flags.expand_path({"rw": FLAGS.rw_weights,
                                             "sween": FLAGS.sween_weights}[kind]) \
                or files.default_weights_path(member_dirs, kind)
            weights = files.load_weights(path, kind, member_dirs)
        settings = dict(_row_settings(name),
                        votes="pooled" if FLAGS.votes == "pooled" else None)
        log = outfile_for(common_flags.expand_path(FLAGS.outfile), name, several)
        if not _log_covers(log, settings, {"members": digests, "aggregator_weights": weights}):
            return False
    return True


def run_certification(smooth: "core.Smooth", images, labels, indices, logs: dict[str, CertifyLog],
                      sampling: specs.SamplingSpec, target_radius=None, stages=()) -> None:
    """Certifies images[indices], writing each image's row to every log that lacks it.

    With a target_radius, each row is the adaptive decision (Smooth.certify_radius): its
    `num` column holds the estimation draws used and `count` is -1.
    """
    todo = [i for i in indices if any(i not in log.done for log in logs.values())]
    logging.info("%d images to certify (%d already in the logs)", len(todo), len(indices) - len(todo))
    last_report = [time.time()]
    # On a terminal a progress bar over images that also moves inside an image (the N
    # estimation draws); in a log, one line per image and one a minute inside long images.
    bar = Progress(len(todo), "certify")
    finished = [0]

    def progress(drawn, asked):
        if bar.terminal:
            if asked == sampling.n:
                bar.update(finished[0] + drawn / asked)
        elif time.time() - last_report[0] >= 60:
            last_report[0] = time.time()
            logging.info("  ... %d of %d draws of this pass", drawn, asked)

    smooth.progress = progress
    start, timed = time.time(), 0
    for done, idx in enumerate(todo, start=1):
        finished[0] = done - 1
        t0 = time.time()
        if target_radius is None:
            certificates = smooth.certify(images[idx], sampling.n0, sampling.n, sampling.alpha,
                                          sampling.batch_size, idx=idx)
        else:
            at_radius = smooth.certify_radius(images[idx], target_radius, sampling.n0, stages,
                                              sampling.alpha, sampling.batch_size, idx=idx)
            certificates = {name: decisions.Certificate(d.prediction, d.radius, -1, d.samples,
                                                        float("nan"))
                            for name, d in at_radius.items()}
        seconds = time.time() - t0
        label = int(labels[idx])
        for name, log in logs.items():
            if idx in log.done:
                continue
            c = certificates[name]
            log.write(idx, label, c.prediction, c.radius, c.prediction == label, seconds,
                      c.count, c.num, c.p_lower, pooled=c.pooled if log.pooled else None)
        if bar.terminal:
            bar.update(done)
            continue
        if done == 1:
            # The first image also pays for tracing the graphs: the rate starts after it.
            start, timed = time.time(), 0
            logging.info("image %d (1/%d): %.2fs (includes tracing)", idx, len(todo), seconds)
            continue
        timed += 1
        rate = timed / max(time.time() - start, 1e-9)
        logging.info("image %d (%d/%d): %.2fs, %.2f images/s, ETA %.0fs", idx, done, len(todo),
                     seconds, rate, (len(todo) - done) / rate)

def main(argv):
    launch.require(argv, "models", "outfile")
    pooled = FLAGS.votes == "pooled"
    if pooled and (FLAGS.target_radius >= 0 or FLAGS.consensus_k):
        raise app.UsageError("--votes=pooled needs plain CERTIFY with every member on every "
                             "draw: not with --target_radius or --consensus_k")
    decisions.check_sample_size(FLAGS.adaptive_stages[-1] if FLAGS.target_radius >= 0 else FLAGS.N, FLAGS.alpha)
    strategy = distribute.make_strategy(FLAGS.strategy)
    with strategy.scope():  # members' variables are placed (mirrored) by the strategy
        loaded = ensemble_flags.load_ensemble()
    members, member_dirs, aggregators = loaded.members, loaded.member_dirs, loaded.aggregators
    info = datasets.dataset_info(FLAGS.dataset)
    if members[0].input_shape != info.image_shape or members[0].num_classes != info.num_classes:
        raise ValueError(f"members take {members[0].input_shape} -> {members[0].num_classes} "
                         f"classes but {info.name} is {info.image_shape} -> {info.num_classes}")
    if "single" in FLAGS.aggregation and len(members) > 1:
        logging.warning("--aggregation=single certifies only the first member, %s", member_dirs[0])
    images, labels = datasets.load_split(FLAGS.dataset, FLAGS.split, FLAGS.data_dir,
                                     FLAGS.validation_size, FLAGS.split_seed)
    input_contract.check_images(images, members[0].input_shape,
                                where=f"the {FLAGS.dataset} {FLAGS.split} images read from "
                                      f"--data_dir={FLAGS.data_dir}")
    smooth = core.Smooth(members, info.num_classes, FLAGS.sigma, aggregators,
                    logit_noise=FLAGS.logit_noise, clip=FLAGS.clip, seed=FLAGS.seed,
                    strategy=strategy, consensus_k=FLAGS.consensus_k, jit_compile=FLAGS.xla,
                    fused=loaded.fused, pooled_votes=pooled)
    if pooled:
        logging.warning("--votes=pooled: %s", log_files.POOLED_WARNING)
    several = len(aggregators) > 1
    indices = image_indices(len(labels), FLAGS.skip, FLAGS.max, FLAGS.shard, FLAGS.start)
    if not indices:
        raise ValueError(f"--start={FLAGS.start} --max={FLAGS.max} --skip={FLAGS.skip} "
                         f"--shard={FLAGS.shard} select no image of the {len(labels)}")
    fingerprint = loaded.fingerprint()
    logs = {}
    try:
        for a in aggregators:
            settings = dict(
                _row_settings(a.name),
                models=[os.path.relpath(os.path.abspath(d)) for d in member_dirs],
                noise=noise.NOISE_SCHEME,
                fingerprint=dict(fingerprint, aggregator_weights=fingerprint.get(
                    "aggregator_weights", {}).get(a.name)),
                skip=FLAGS.skip, start=FLAGS.start, max=FLAGS.max, shard=FLAGS.shard,
                num_images=len(labels),
                # Index i is the official test image i only in the original order.
                image_order=(datasets.image_order(FLAGS.dataset, FLAGS.data_dir)
                             if FLAGS.split == "test" else None),
                strategy=FLAGS.strategy)
            if pooled:  # recorded only when asked, so logs made before the flag resume
                settings.update(votes="pooled", pooled_votes=dict(
                    valid_certificate=False, warning=log_files.POOLED_WARNING,
                    trials="N * number of members", level=decisions.POOLED_LEVEL,
                    abstains="when pooled_p_lower < 0.5"))
            path = outfile_for(common_flags.expand_path(FLAGS.outfile), a.name, several)
            logs[a.name] = CertifyLog(path, settings, resume=FLAGS.resume)
        target = FLAGS.target_radius if FLAGS.target_radius >= 0 else None
        run_certification(smooth, images, labels, indices, logs, ensemble_flags.sampling_spec(),
                          target, [int(v) for v in FLAGS.adaptive_stages])
        logging.info("member forward passes: %d (%.0f per image)", smooth.member_passes,
                     smooth.member_passes / max(len(indices), 1))
    finally:
        for log in logs.values():
            log.close()
    for name, log in logs.items():
        logging.info("%s: %s", name, log.path)


if __name__ == "__main__":
    launch.run(main, define_flags, is_done)
