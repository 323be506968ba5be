"""Flag groups of the (smoothed) ensemble, for the entry points that build one (certify,
weights, variance, attack, export): members, aggregation and its weights, noise, sampling,
image selection; and the helpers that turn those flags into library objects. Nothing is
defined at import (see common_flags)."""

from absl import flags

from cear_tf.cli import common_flags
from cear_tf.common.lazy import lazy_module
from cear_tf.config import choices, specs

loading = lazy_module("cear_tf.ensemble.loading")


def define_ensemble(aggregation: bool = True, fuse: bool = True) -> None:
    """The smoothed ensemble: --models, --logit_noise, --clip, --freeze_members, --precision;
    --aggregation, --rw_weights/--sween_weights and the GM settings (when `aggregation`);
    --fuse_members (when `fuse`)."""
    flags.DEFINE_list("models", None, "Member SavedModel directories, or ensemble directories "
                      "holding member_<i>/ folders ('{output_dir}' is replaced by --output_dir).")
    flags.DEFINE_float("logit_noise", 0.0, "Per-member input noise eps_l added on top of the "
                       "smoothing noise (0 = Algorithm 1 as printed).")
    flags.DEFINE_bool("clip", False, "Clip noisy inputs to [0, 1] (the released code does).")
    flags.DEFINE_bool("freeze_members", True, "Bake member weights into the graph as "
                      "constants (faster: batch norm folds into the convolutions; same logits).")
    flags.DEFINE_enum("precision", "float32", list(choices.PRECISIONS),
                      "Member inference precision: float32, mixed_bfloat16 (oneDNN CPU "
                      "rewrite; fast only on CPUs with AVX512_BF16/AMX) or mixed_float16 "
                      "(GPU).")
    flags.register_validator("logit_noise", lambda v: v >= 0,
                             message="--logit_noise must be >= 0")
    if fuse:
        common_flags.define_fuse_members(
            "Run cear_tf LeNet-5 members as one fused network (cear_tf.models.fused: grouped "
            "convolutions; same counts up to float rounding). Members that cannot be fused "
            "run one after another.")
    if aggregation:
        _define_aggregation()


def _define_aggregation() -> None:
    flags.DEFINE_list("aggregation", ["mean"],
                      f"Aggregations, any of {', '.join(choices.AGGREGATIONS)}, or "
                      f"<{'|'.join(choices.PREFIXABLE)}>_first<k>: that aggregation over the "
                      f"first k members only (same member passes).")
    flags.DEFINE_string("rw_weights", None, "RW weights JSON (default: weights_rw.json "
                        "beside the members, written by cear_tf.cli.weights).")
    flags.DEFINE_string("sween_weights", None, "SWEEN weights JSON (default: "
                        "weights_sween.json).")
    flags.DEFINE_float("gm_tolerance", 1e-6, "Geometric median: stop when no row moves more "
                       "than this.")
    flags.DEFINE_integer("gm_max_iterations", 100, "Geometric median: maximum Weiszfeld "
                         "iterations.")
    flags.register_validator(
        "aggregation",
        lambda v: bool(v) and all(choices.parse_aggregation(a) for a in v)
        and len(set(v)) == len(v),
        message=f"--aggregation must be distinct names from "
                f"{', '.join(choices.AGGREGATIONS)} or "
                f"<{'|'.join(choices.PREFIXABLE)}>_first<k>")
    flags.register_validator("gm_tolerance", lambda v: v > 0,
                             message="--gm_tolerance must be > 0")
    flags.register_validator("gm_max_iterations", lambda v: v >= 1,
                             message="--gm_max_iterations must be >= 1")


def define_smoothing_run(resume_help: str) -> None:
    """What every tool that smooths an ensemble on a data set reads (certify, weights,
    variance): --dataset/--data_dir/--validation_size/--split_seed, --sigma (sigma_v),
    --seed (the noise streams), --output_dir and --resume."""
    common_flags.define_data()
    common_flags.define_sigma("Smoothing noise std sigma_v, in pixel units.")
    common_flags.define_seed("Seed of the noise streams.")
    common_flags.define_output_dir()
    common_flags.define_resume(resume_help)


def define_sampling(selection: bool = True, estimation: bool = True) -> None:
    """--N0 (when `selection`), --N and --alpha (when `estimation`), --batch."""
    if selection:
        flags.DEFINE_integer("N0", 100, "Selection draws.")
        flags.register_validator("N0", lambda v: v >= 1, message="--N0 must be >= 1")
    if estimation:
        flags.DEFINE_integer("N", 100000, "Estimation draws.")
        flags.DEFINE_float("alpha", 0.001, "Failure probability of each certificate.")
        flags.register_validator("N", lambda v: v >= 1, message="--N must be >= 1")
        flags.register_validator("alpha", lambda v: 0 < v < 1,
                                 message="--alpha must be in (0, 1)")
    flags.DEFINE_integer("batch", 1000, "Noise draws per forward pass (a speed knob: the "
                         "draws of an image do not depend on it).")
    flags.register_validator("batch", lambda v: v >= 1, message="--batch must be >= 1")


def define_images() -> None:
    """--skip, --start, --max: which test images (Cohen's every skip-th)."""
    flags.DEFINE_integer("skip", 1, "Every skip-th image (Cohen: 20 for CIFAR-10/ImageNet).")
    flags.DEFINE_integer("start", 0, "First image index; a multiple of --skip keeps the "
                         "images inside Cohen's every-skip-th set (the authors' certify "
                         "script: --start=2160 --max=3500 --skip=20, 67 images).")
    flags.DEFINE_integer("max", -1, "Stop at image index max (exclusive); -1 = all.")
    flags.register_validator("skip", lambda v: v >= 1, message="--skip must be >= 1")
    flags.register_validator("max", lambda v: v >= -1,
                             message="--max must be -1 (all images) or an index >= 0")
    flags.register_validator("start", lambda v: v >= 0, message="--start must be >= 0")


def ensemble_spec(aggregations=None) -> specs.EnsembleSpec:
    """The EnsembleSpec the ensemble flags describe, paths expanded. `aggregations` replaces
    --aggregation; a tool without it (the weight fits) gets none."""
    f = flags.FLAGS
    has_aggregation = "gm_tolerance" in f  # the aggregation group (define_ensemble)
    if aggregations is None:
        aggregations = f.aggregation if has_aggregation else ()
    optional = {}
    if has_aggregation:
        optional.update(rw_weights=common_flags.expand_path(f.rw_weights),
                        sween_weights=common_flags.expand_path(f.sween_weights),
                        gm_tolerance=f.gm_tolerance, gm_max_iterations=f.gm_max_iterations)
    return specs.EnsembleSpec(
        models=tuple(common_flags.expand_path(p) for p in f.models),
        aggregations=tuple(aggregations), logit_noise=f.logit_noise, clip=f.clip,
        freeze=f.freeze_members, fuse=f.fuse_members if "fuse_members" in f else False,
        precision=f.precision, **optional)


def sampling_spec() -> specs.SamplingSpec:
    """The SamplingSpec of --N0 (where defined), --N, --alpha and --batch."""
    f = flags.FLAGS
    return specs.SamplingSpec(**({"n0": f.N0} if "N0" in f else {}), n=f.N, alpha=f.alpha,
                              batch_size=f.batch)


def load_ensemble(aggregations=None):
    """loading.load(ensemble_spec(aggregations)), saying whether the members run fused."""
    from absl import logging
    loaded = loading.load(ensemble_spec(aggregations))
    if loaded.fused is not None:
        logging.info("%d members run as one fused network", loaded.fused.num_members)
    elif loaded.spec.fuse:
        logging.info("members run one after another (not fused: %s)", loaded.why_not_fused)
    return loaded


def selected_images(total: int) -> list[int]:
    """The image indices --start, --max and --skip select (before sharding)."""
    f = flags.FLAGS
    stop = total if f.max < 0 else min(total, f.max)
    indices = list(range(f.start, stop, f.skip))
    if not indices:
        raise ValueError(f"--start={f.start} --max={f.max} --skip={f.skip} select no image of "
                         f"the {total}")
    return indices
