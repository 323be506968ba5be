"""Every experiment and stage flagfile parses with the flags of the entry point run_all.sh
runs it with: no flag a stage does not define, no invalid value."""

import glob
import os
import re

import pytest
from absl import flags

from cear_tf import analyze, attack, certify, train, variance, weights
from tests.helpers import parse_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {"teacher": train, "students": train, "gaussian": train, "weights": weights,
           "certify": certify, "variance": variance, "attack": attack, "analyze": analyze}


def _experiment_keys():
    text = open(os.path.join(ROOT, "run_all.sh")).read()
    return re.search(r"^EXPERIMENT_KEYS=(\S+)$", text, re.M).group(1)


def _stage_files(experiment):
    name = os.path.basename(experiment)[:-4]
    folder = os.path.join(os.path.dirname(experiment), re.sub(r"_sigma[0-9]+", "", name))
    return sorted(glob.glob(os.path.join(folder, "*.cfg")))


EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "flags", "*.cfg")))


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=os.path.basename)
def test_stage_flagfiles_parse_with_their_entry_point(experiment, monkeypatch):
    monkeypatch.chdir(ROOT)  # flagfiles name paths relative to the repository
    stages = _stage_files(experiment)
    assert stages, f"no stage files for {experiment}"
    for stage in stages:
        kind = re.match(r"[a-z]+", os.path.basename(stage)).group(0)
        module = MODULES[kind]
        try:
            parse_flags([f"--flagfile={stage}", f"--flagfile={experiment}",
                         f"--undefok={_experiment_keys()}"], module)
        except flags.Error as e:
            pytest.fail(f"{os.path.relpath(stage, ROOT)} with {module.__name__}: {e}")
