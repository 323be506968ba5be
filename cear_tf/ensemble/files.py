"""What is on disk for a member or an ensemble, read without TensorFlow: which folders are
members, whether a member's export is complete, the digest of its weights, where an
ensemble's aggregation weights live and what they are. (cear_tf.cli.run asks finished stages
about their work through these, without paying a TensorFlow start-up per stage.)"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Sequence

METADATA_FILE = "cear.json"
WEIGHTS_FILE = "weights_{method}.json"
_MEMBER = re.compile(r"member_(\d+)")


def resolve_member_dirs(paths: Sequence[str]) -> list[str]:
    """Member directories from --models: SavedModel dirs, or ensemble dirs of member_<i>/."""
    dirs = []
    for path in paths:
        if not os.path.isdir(path):
            raise ValueError(f"--models: {path} is not a directory")
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            dirs.append(path)
            continue
        # member_<i> only: a leftover member_<i>.partial (an export cut short) is not a member.
        subs = sorted((d for d in os.listdir(path) if _MEMBER.fullmatch(d)
                       and os.path.isfile(os.path.join(path, d, "saved_model.pb"))),
                      key=lambda d: int(_MEMBER.fullmatch(d).group(1)))
        if not subs:
            raise ValueError(f"--models: {path} is neither a SavedModel (no saved_model.pb) nor "
                             f"an ensemble directory with member_<i>/ SavedModels")
        dirs.extend(os.path.join(path, d) for d in subs)
    if not dirs:
        raise ValueError("--models: no member given")
    return dirs


def content_digest(directory: str) -> str:
    """SHA-256 of what defines a member's function: saved_model.pb and every file under
    variables/ (names and bytes), not cear.json, whose metadata does not change a logit."""
    digest = hashlib.sha256()
    files = ["saved_model.pb"]
    variables = os.path.join(directory, "variables")
    if os.path.isdir(variables):
        files += sorted(os.path.join("variables", f) for f in os.listdir(variables))
    for name in files:
        digest.update(name.encode() + b"\0")
        with open(os.path.join(directory, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def is_complete_member(directory: str) -> bool:
    return (os.path.isfile(os.path.join(directory, "saved_model.pb"))
            and os.path.isfile(os.path.join(directory, METADATA_FILE)))


def default_weights_path(member_dirs: Sequence[str], method: str) -> str:
    """weights_<method>.json in the folder holding the first member."""
    parent = os.path.dirname(os.path.abspath(member_dirs[0]))
    return os.path.join(parent, WEIGHTS_FILE.format(method=method))


def _relative(member_dirs, weights_path):
    # Relative to the weights file, so an ensemble folder can be moved or copied whole.
    base = os.path.dirname(os.path.abspath(weights_path))
    return [os.path.relpath(os.path.abspath(d), base) for d in member_dirs]


def save_weights(path: str, method: str, member_dirs: Sequence[str], weights: Sequence[float],
                 details: dict) -> None:
    record = {"method": method, "members": _relative(member_dirs, path),
              "weights": [float(w) for w in weights], **details}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def load_weights(path: str, method: str, member_dirs: Sequence[str]) -> list[float]:
    """Weights for `method` from `path`, checked against the ensemble's members."""
    if not os.path.exists(path):
        raise ValueError(f"no {method} weights at {path}: run python -m cear_tf.cli.weights "
                         f"--aggregation={method} first, or pass --{method}_weights")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        raw = record["weights"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a weights file ({e})") from e
    bad = [w for w in raw if isinstance(w, bool) or not isinstance(w, (int, float))] \
        if isinstance(raw, list) else [raw]
    if bad:
        raise ValueError(f"{path}: weights must be a list of numbers, found {bad[0]!r}")
    weights = [float(w) for w in raw]
    if record.get("method", method) != method:
        raise ValueError(f"{path} holds {record.get('method')} weights, not {method}")
    if len(weights) != len(member_dirs):
        raise ValueError(f"{path} has {len(weights)} weights but the ensemble has "
                         f"{len(member_dirs)} members")
    saved = record.get("members")
    if saved and _relative(member_dirs, path) != saved:
        raise ValueError(f"{path} was computed for members {saved}, not for {list(member_dirs)}")
    digests = record.get("member_digests")
    if digests:
        changed = [d for d, old in zip(member_dirs, digests)
                   if content_digest(d) != old]
        if changed:
            raise ValueError(f"{path} was computed for other weights of {', '.join(changed)} "
                             f"(the member changed since); recompute it with cear_tf.cli.weights "
                             f"--noresume")
    return weights
