"""Experiments as data: every experiment file derives stages its entry points accept, files
that extend others never repeat what they inherit, and the loader, the record the report
reads and the runner behave as documented."""

import glob
import json
import os
import re
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
from absl import flags

from cear_tf.cli import analyze, attack, certify, member_accuracy, train, variance, weights
from cear_tf.config import experiment, stages
from tests import data_fakes as fakes
from tests.helpers import parse_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "flags", "*.toml")))
ALL_FILES = sorted(glob.glob(os.path.join(ROOT, "flags", "**", "*.toml"), recursive=True))
MODULES = {m.__name__: m for m in (train, member_accuracy, weights, certify, variance, attack,
                                    analyze)}


def test_every_experiment_is_one_file_and_nothing_else_configures_a_stage():
    assert len(EXPERIMENTS) >= 30
    # The design card's layout: the experiment files are flags/ (their keys are the entry
    # points' flag names); no second folder of configuration beside it.
    assert not os.path.exists(os.path.join(ROOT, "experiments")), "experiments/ moved to flags/"
    for entry in ("setup.cfg", "cear_tf", "models", "flags", "tests", "run_all.sh", "README.md"):
        assert os.path.exists(os.path.join(ROOT, entry)), entry


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_every_stage_parses_with_its_entry_point(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    exp = experiment.load(os.path.relpath(path, ROOT))
    derived = stages.stages(exp)
    assert derived
    for stage in derived:
        try:  # no --undefok: a stage gets only flags its entry point defines
            parse_flags(list(stage.args), MODULES[stage.module])
        except flags.Error as e:
            pytest.fail(f"{stage.what} ({stage.module}): {e}")


def _own_and_inherited(path):
    with open(path, "rb") as f:
        own = tomllib.load(f)
    parents = own.pop("extends", [])
    inherited = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        inherited = experiment._merge(inherited, experiment._read(
            os.path.join(os.path.dirname(path), parent)))
    return own, inherited


def _repeats(own, inherited, prefix=""):
    out = []
    for key, value in own.items():
        if key == "title" or key not in inherited:
            continue
        if isinstance(value, dict) and isinstance(inherited[key], dict):
            out += _repeats(value, inherited[key], f"{prefix}{key}.")
        elif value == inherited[key]:
            out.append(f"{prefix}{key} = {value!r}")
    return out


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_no_file_repeats_a_setting_it_inherits(path):
    own, inherited = _own_and_inherited(path)
    assert not _repeats(own, inherited), f"{os.path.relpath(path, ROOT)} repeats inherited settings"


def test_paper_and_cpu_scales_differ_by_a_few_keys():
    own, _ = _own_and_inherited(os.path.join(ROOT, "flags", "mnist_sigma100_cpu.toml"))
    assert set(own) == {"title", "sigma", "output_dir"}
    cpu, paper = (experiment.load(os.path.join(ROOT, "flags", f"mnist_sigma025{s}.toml"))
                  for s in ("_cpu", ""))
    assert dict(cpu.tables["certify"])["N"] == 10000 and dict(paper.tables["certify"])["N"] == 100000
    # The paper scale adds only the literature's LeNet baseline (a 90-epoch network).
    assert [m.label for m in cpu.methods] == [m.label for m in paper.methods
                                              if m.label != "RandSmooth (literature LeNet)"]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BASE = """
title = "base"
dataset = "mnist"
sigma = 0.5
output_dir = "{out}"
[train]
epochs = 2
arch = "lenet5"
[members.teacher]
role = "teacher"
[members.cear]
role = "ensemble"
member_role = "student"
teacher = "teacher"
[members.rs]
role = "gaussian"
[certify]
N = 100
[methods.cear_mv]
label = "CEAR(MV)"
members = "cear"
aggregation = "mv"
[methods.cear_rw]
label = "CEAR(RW)"
members = "cear"
aggregation = "rw"
[methods.rs]
label = "RandSmooth"
members = "rs"
aggregation = "single"
"""


def test_extends_merges_tables_and_disables(tmp_path):
    out = str(tmp_path / "out")
    _write(tmp_path, "base.toml", BASE.format(out=out))
    child = _write(tmp_path, "child.toml", """
extends = "base.toml"
sigma = 1.0
methods.rs.enabled = false
[members.cear]
epochs = 5
""")
    exp = experiment.load(child)
    assert exp.sigma == 1.0 and exp.title == "child.toml"  # a title is never inherited
    assert [m.key for m in exp.methods] == ["cear_mv", "cear_rw"]
    settings = dict(exp.group("cear").settings)
    assert settings["epochs"] == 5 and settings["arch"] == "lenet5"
    assert dict(exp.group("teacher").settings)["epochs"] == 2
    kinds = [(s.kind, s.what) for s in stages.stages(exp)]
    assert kinds[0] == ("train", "train teacher")  # teachers first
    certify_stages = [s for s in stages.stages(exp) if s.kind == "certify"]
    assert len(certify_stages) == 1  # both aggregations from one set of member passes
    args = certify_stages[0].args
    assert "--aggregation=mv,rw" in args
    assert f"--outfile={os.path.join(out, 'certify', 'cear_{aggregation}.tsv')}" in args
    assert f"--rw_weights={os.path.join(out, 'cear', 'weights_rw.json')}" in args
    weights_stage = [s for s in stages.stages(exp) if s.kind == "weights"]
    assert len(weights_stage) == 1 and "--aggregation=rw" in weights_stage[0].args



def test_stages_run_member_group_by_member_group(tmp_path):
    """Each group's weights and certification come right after it trains (its rows are
    finished before the next group's training starts); teachers first, the table last."""
    out = str(tmp_path / "out")
    exp = experiment.load(_write(tmp_path, "base.toml", BASE.format(out=out)))
    assert [s.what for s in stages.stages(exp)] == [
        "train teacher", "train rs", "certify RandSmooth",  # groups without a teacher first
        "train cear", "rw weights of cear", "certify CEAR(MV), CEAR(RW)", "table"]
    # a kind filter keeps the same order
    assert [s.what for s in stages.stages(exp, ["certify", "weights"])] == [
        "certify RandSmooth", "rw weights of cear", "certify CEAR(MV), CEAR(RW)"]
    # a reused group is trained elsewhere: its stages come first
    child = _write(tmp_path, "child.toml", """
extends = "base.toml"
members.rs.reuse = true
members.rs.model_dir = "elsewhere/rs"
""")
    whats = [s.what for s in stages.stages(experiment.load(child))]
    assert whats[0] == "certify RandSmooth" and "train rs" not in whats


def test_member_accuracy_follows_each_certified_group_and_is_recorded(tmp_path):
    out = str(tmp_path / "out")
    _write(tmp_path, "base.toml", BASE.format(out=out))
    child = _write(tmp_path, "child.toml", 'extends = "base.toml"\n[member_accuracy]\ndraws = 3\n')
    exp = experiment.load(child)
    assert [s.what for s in stages.stages(exp)] == [
        "train teacher", "train rs", "member accuracy of rs", "certify RandSmooth",
        "train cear", "member accuracy of cear", "rw weights of cear",
        "certify CEAR(MV), CEAR(RW)", "table"]  # the teacher is certified by no method
    stage = stages.stages(exp, ["member_accuracy"])[1]
    assert "--draws=3" in stage.args and f"--models={out}/cear" in stage.args
    assert f"--outfile={out}/member_accuracy/cear.json" in stage.args
    experiment.write_record(exp)
    assert experiment.read_record(out)["member_accuracy"] == {
        "rs": os.path.join(out, "member_accuracy", "rs.json"),
        "cear": os.path.join(out, "member_accuracy", "cear.json")}
    with open(os.path.join(out, "experiment.json")) as f:
        assert json.load(f)["member_accuracy"]["cear"] == "member_accuracy/cear.json"
    # Without the table there is no such stage (and the record names no file).
    assert not stages.stages(experiment.load(tmp_path / "base.toml"), ["member_accuracy"])

def test_logs_that_share_no_template_are_certified_separately(tmp_path):
    out = str(tmp_path / "out")
    _write(tmp_path, "base.toml", BASE.format(out=out))
    child = _write(tmp_path, "child.toml", """
extends = ["base.toml"]
methods.cear_mv.log = "elsewhere/first.tsv"
""")
    exp = experiment.load(child)
    outfiles = [a for s in stages.stages(exp, ["certify"]) for a in s.args
                if a.startswith("--outfile=")]
    assert sorted(outfiles) == sorted([f"--outfile={out}/elsewhere/first.tsv",
                                       f"--outfile={out}/certify/cear_rw.tsv",
                                       f"--outfile={out}/certify/rs.tsv"])


def test_reused_members_are_not_trained_and_keep_their_weights_apart(tmp_path):
    out = str(tmp_path / "variant")
    _write(tmp_path, "base.toml", BASE.format(out=str(tmp_path / "base")))
    child = _write(tmp_path, "child.toml", f"""
extends = "base.toml"
output_dir = "{out}"
members.cear.reuse = true
members.cear.model_dir = "{{output_dir}}/../base/cear"
[ensemble]
clip = true
""")
    exp = experiment.load(child)
    assert exp.group("cear").model_dir == str(tmp_path / "base" / "cear")
    whats = [s.what for s in stages.stages(exp, ["train"])]
    assert "train cear" not in whats and "train rs" in whats
    weights_stage = stages.stages(exp, ["weights"])[0]
    assert f"--outfile={out}/weights/cear_rw.json" in weights_stage.args
    assert "--clip" in weights_stage.args


@pytest.mark.parametrize("text, message", [
    ('extends = "missing.toml"', "missing.toml: experiment file not found"),
    ('extends = "loop.toml"', "makes a cycle"),
    ('bogus = 1', "unknown key(s) bogus"),
    ('methods.rs.members = "nobody"', "members = 'nobody' names no member group"),
    ('methods.rs.label = "CEAR(MV)"', "two methods share a label"),
    ('members.cear.teacher = "nobody"', "teacher = 'nobody' names no member group"),
    ('sigma = "high"', "'sigma' must be float"),
    ('extends = "."', ": cannot read the experiment file (Is a directory, extended by "),
    ('variance.draws = 3', "[variance] 'members' is missing"),
    ('variance.members = "nobody"', "[variance] members = 'nobody' names no member group"),
    ('attacks.targets = ["rs"]', "[attacks] has targets but no norms"),
    ('member_accuracy.outfile = "x.json"', "[member_accuracy] sets outfile, which the runner"),
])
def test_bad_files_name_the_file_and_key(tmp_path, text, message):
    _write(tmp_path, "base.toml", BASE.format(out=str(tmp_path / "out")))
    _write(tmp_path, "loop.toml", 'extends = "loop.toml"\n')
    bad = _write(tmp_path, "bad.toml", 'extends = ["base.toml"]\n' + text + "\n"
                 if not text.startswith("extends") else text + "\n")
    with pytest.raises(experiment.ExperimentError, match=re.escape(message)) as e:
        experiment.load(bad)
    assert str(e.value).startswith(os.path.dirname(bad))


def test_overrides_take_dotted_keys_and_toml_values(tmp_path):
    path = _write(tmp_path, "base.toml", BASE.format(out=str(tmp_path / "out")))
    exp = experiment.load(path, overrides=["certify.N=1000", "members.rs.epochs=7",
                                           'members.teacher.model_dir="/elsewhere/t"',
                                           "train.arch=resnet20"])
    assert dict(exp.tables["certify"])["N"] == 1000
    assert dict(exp.group("rs").settings)["epochs"] == 7
    assert dict(exp.group("rs").settings)["arch"] == "resnet20"  # a bare word is a string
    assert exp.group("teacher").model_dir == "/elsewhere/t"
    with pytest.raises(experiment.ExperimentError, match="expected KEY=VALUE"):
        experiment.load(path, overrides=["certify.N"])
    with pytest.raises(experiment.ExperimentError, match="unknown key 'certfy'"):
        experiment.load(path, overrides=["certfy.N=3"])


def test_record_is_shared_by_experiments_of_one_folder_and_refuses_another_sigma(tmp_path):
    out = str(tmp_path / "out")
    base = _write(tmp_path, "base.toml", BASE.format(out=out))
    attacks = _write(tmp_path, "attacks.toml", """
extends = "base.toml"
[attacks]
targets = ["rs"]
norms = {l2 = 1.0}
[attacks.modes.transfer]
source = "members"
""")
    experiment.write_record(experiment.load(base))
    experiment.write_record(experiment.load(attacks))
    rec = experiment.read_record(out)
    assert rec["experiment"] == "base"
    assert [m["label"] for m in rec["methods"]] == ["CEAR(MV)", "CEAR(RW)", "RandSmooth"]
    assert rec["methods"][2]["log"] == os.path.join(out, "certify", "rs.tsv")
    assert rec["attacks"] == [{"target": "RandSmooth", "norm": "l2", "mode": "transfer",
                               "log": os.path.join(out, "attack", "rs_l2.tsv")}]
    stage = stages.stages(experiment.load(attacks), ["attack"])[0]
    assert "--source=member:0" in stage.args  # one member: transfer from it
    with open(os.path.join(out, "experiment.json")) as f:
        assert not any(os.path.isabs(m["log"]) for m in json.load(f)["methods"])
    other = _write(tmp_path, "other.toml", 'extends = "base.toml"\nsigma = 0.25\n')
    with pytest.raises(experiment.ExperimentError, match="give it its own output_dir"):
        experiment.write_record(experiment.load(other))
    with pytest.raises(experiment.ExperimentError, match="no experiment.json"):
        experiment.read_record(str(tmp_path))


def _run(args, cwd=ROOT, **kw):
    return subprocess.run([sys.executable, "-m", "cear_tf.cli.run", *args], cwd=cwd,
                          capture_output=True, text=True, **kw)


def test_runner_dry_run_and_bad_input():
    out = _run(["--experiment=flags/mnist_sigma100.toml", "--dry_run",
                "--stages=certify", "--", "--start=2160", "--max=3500"])
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("python")]
    assert len(lines) == 5 and all("cear_tf.cli.certify" in line for line in lines)
    assert all(line.endswith("--start=2160 --max=3500 --undefok=max,start") for line in lines)
    bad = _run(["--experiment=flags/nope.toml"])
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "cear_tf.cli.run: error: flags/nope.toml: experiment file not found")
    bad = _run(["--experiment=flags/mnist_quick.toml", "--stages=tran"])
    assert bad.returncode != 0 and "--stages must name stage kinds" in bad.stderr
    bad = _run(["--experiment=flags/mnist_quick.toml", "--dry_run", "--", "start=1"])
    assert bad.returncode == 2 and "stage flags go after '--'" in bad.stderr
    # undefok lets a stage skip a flag meant for another (here --epochs, for training, which
    # --stages leaves out); a flag no stage kind defines is a typo
    bad = _run(["--experiment=flags/mnist_quick.toml", "--stages=certify", "--",
                "--strat=5", "--nofuse_members", "--epochs=2"])
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith(
        "cear_tf.cli.run: error: flags/mnist_quick.toml: no stage kind defines --strat (")


# A Gaussian network on fake MNIST, certified on a few images: the smallest whole run.
TINY_RS = """
title = "tiny"
dataset = "mnist"
sigma = 0.25
output_dir = "{out}"
validation_size = 20
[train]
epochs = 1
batch_size = 32
allow_collapsed = true
[members.rs]
role = "gaussian"
[certify]
N0 = 10
N = 50
batch = 50
[methods.rs]
label = "RandSmooth"
members = "rs"
aggregation = "single"
[table]
radii = [0, 0.25]
"""


def test_runner_runs_a_tiny_experiment_and_resumes(tmp_path):
    data = tmp_path / "mnist"
    fakes.write_mnist(data, n_train=120, n_test=8)
    path = _write(tmp_path, "tiny.toml", TINY_RS.format(out=tmp_path / "out"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    first = _run([f"--experiment={path}", f"--data_dir={data}", "--", "--max=4"], env=env,
                 timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "== " in first.stderr and "train rs" in first.stderr
    log = tmp_path / "out" / "certify" / "rs.tsv"
    assert len(log.read_text().splitlines()) == 1 + 4
    rec = experiment.read_record(str(tmp_path / "out"))
    assert rec["methods"][0]["log"] == str(log)
    again = _run([f"--experiment={path}", f"--data_dir={data}"], env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(log.read_text().splitlines()) == 1 + 8  # the 4 rows kept, 4 added
    assert "| RandSmooth" in again.stdout
    assert "train rs: finished (its output is on disk; skipped)" in again.stderr
    # A third run finds every stage but the table finished and starts none of them: no
    # TensorFlow start-up per finished stage.
    third = _run([f"--experiment={path}", f"--data_dir={data}"], env=env, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    for what in ("train rs", "member accuracy of rs", "certify RandSmooth"):
        if what in third.stderr:
            assert f"{what}: finished (its output is on disk; skipped)" in third.stderr, what
    assert "python -m cear_tf.cli.certify" not in third.stderr
    assert "| RandSmooth" in third.stdout


def test_runner_checks_every_stage_before_the_first_runs(tmp_path):
    out_dir = tmp_path / "out"
    path = _write(tmp_path, "base.toml", BASE.format(out=out_dir))
    bad = _run([f"--experiment={path}", "--set=certify.N00=5"], timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith(
        f"cear_tf.cli.run: error: {path}: stage 'certify RandSmooth' (cear_tf.cli.certify) "
        f"refuses its flags: FATAL Flags parsing error: Unknown command line flag 'N00'")
    assert not out_dir.exists()  # nothing ran, nothing was written
    bad = _run([f"--experiment={path}", "--set=train.epochs=-3"], timeout=120)
    assert bad.returncode == 2 and "stage 'train teacher'" in bad.stderr
    assert "--epochs must be >= 1" in bad.stderr and not out_dir.exists()


def test_a_stage_runs_alone_from_the_flagfile_the_runner_writes(tmp_path):
    data = tmp_path / "mnist"
    fakes.write_mnist(data, n_train=60, n_test=8)
    path = _write(tmp_path, "alone.toml", TINY_RS.format(out=tmp_path / "out"))
    folder = tmp_path / "flagfiles"
    out = _run([f"--experiment={path}", f"--data_dir={data}",
                f"--write_flagfiles={folder}"])
    assert out.returncode == 0, out.stderr[-3000:]
    files = sorted(os.listdir(folder))
    assert files[0] == "01_train_rs.flags" and any("certify" in f for f in files)
    assert f"python -m cear_tf.cli.train --flagfile={folder / files[0]}" in out.stdout
    assert not (tmp_path / "out" / "rs").exists()  # nothing ran
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    train = subprocess.run([sys.executable, "-m", "cear_tf.cli.train",
                            f"--flagfile={folder / files[0]}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert os.path.exists(tmp_path / "out" / "rs" / "cear.json")


def test_a_label_with_a_comma_reaches_the_table_as_one_name(tmp_path, monkeypatch):
    """absl parses list flags as CSV: the table stage quotes a label holding a comma (it used
    to split it into a name and a bad path), and analyze reads the log under that label."""
    from cear_tf.reporting.log_files import CertifyLog  # noqa: PLC0415
    out = str(tmp_path / "out")
    _write(tmp_path, "base.toml", BASE.format(out=out))
    child = _write(tmp_path, "child.toml", 'extends = "base.toml"\n'
                   'methods.cear_rw.label = "CEAR(RW), 80 epochs"\n')
    table = [s for s in stages.stages(experiment.load(child)) if s.kind == "table"][0]
    logs_arg = next(a for a in table.args if a.startswith("--logs="))
    assert f'"CEAR(RW), 80 epochs={out}/certify/cear_rw.tsv"' in logs_arg
    for stem in ("cear_mv", "cear_rw", "rs"):
        log = CertifyLog(os.path.join(out, "certify", f"{stem}.tsv"),
                         dict(dataset="mnist", sigma=0.5, N0=100, N=100, alpha=0.001,
                              logit_noise=0.0, models=["m"], aggregation=stem))
        log.write(0, 1, 1, 0.3, True, 0.1, 99, 100, 0.95)
        log.close()
    parse_flags(list(table.args), analyze)
    analyze.main(["analyze"])
    with open(os.path.join(out, "certified_accuracy.md")) as f:
        assert "| CEAR(RW), 80 epochs | 1 |" in f.read()
