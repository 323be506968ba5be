"""What is on disk for a member or an ensemble, read without TensorFlow: which folders are
members, whether a member's export is complete, the digest of its weights, where an
ensemble's aggregation weights live. (cear_tf.run asks finished stages about their work
through these, without paying a TensorFlow start-up per stage.)"""

from __future__ import annotations

import hashlib
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
