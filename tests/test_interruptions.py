"""Nothing lost, nothing mixed: one writer per output, fingerprints that refuse another
classifier, checkpoints that outlive export and refuse other settings, numbered archives,
and bad input refused up front with one line (one test per point of the issue, numbered)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from cear_tf.cli import certify, weights
from cear_tf.common.locking import LockError, OutputLock
from cear_tf.ensemble import loading, members
from cear_tf.reporting import certified_accuracy
from cear_tf.reporting.log_files import CertifyLog, LogError, read_rows
from cear_tf.training import checkpoints
from tests import data_fakes as fakes
from tests.helpers import (
    Interrupt,
    certify_tiny,
    constant_member,
    epochs_logged,
    member_config,
    parse_flags,
    rows_without_time,
    tiny_splits,
    train_tiny,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("intr")
    data_dir = root / "mnist"
    fakes.write_mnist(data_dir, n_train=40, n_test=12)
    fakes.write_idx(data_dir / "t10k-labels-idx1-ubyte", np.full(12, 3, np.uint8))
    fakes.write_idx(data_dir / "train-labels-idx1-ubyte", np.full(40, 3, np.uint8))
    ens = root / "ens"
    for i, cls in enumerate((3, 3, 5)):
        constant_member(ens / f"member_{i}", cls)
    return dict(root=root, data_dir=str(data_dir), ens=str(ens))


# 1. One writer per log.
def test_1_a_second_writer_is_refused_naming_the_first(setup):
    path = str(setup["root"] / "locked.tsv")
    holder = OutputLock(path).acquire()
    try:
        with pytest.raises(LockError, match=rf"locked.tsv is being written by another process "
                                            rf"\(pid {os.getpid()}"):
            certify_tiny(setup, path, "--aggregation=mean", "--max=2")
        assert not os.path.exists(path)  # refused before anything was written
    finally:
        holder.release()
    certify_tiny(setup, path, "--aggregation=mean", "--max=2")  # free again
    assert len(read_rows(path)) == 2


def test_1_a_released_lock_leaves_no_file_and_a_stale_one_does_not_block(tmp_path):
    path = str(tmp_path / "out.tsv")
    with OutputLock(path):
        assert os.path.exists(path + ".lock")
    assert not os.path.exists(path + ".lock")
    with open(path + ".lock", "w") as f:  # left by a killed process
        f.write("pid 1: killed\n")
    with OutputLock(path):
        with pytest.raises(LockError, match=rf"pid {os.getpid()}"):
            OutputLock(path).acquire()
    assert not os.path.exists(path + ".lock")


def test_1_a_lock_on_a_deleted_file_is_taken_again_at_the_path(tmp_path, monkeypatch):
    import fcntl

    from cear_tf.common import locking
    path = str(tmp_path / "out.tsv")
    real_flock, calls = fcntl.flock, []

    def flock_after_a_release(f, op):
        # The first time: the holder releases between our open and our flock, deleting the
        # file, and a third process creates the next one at the path.
        calls.append(op)
        if len(calls) == 1:
            os.remove(path + ".lock")
            open(path + ".lock", "w").close()
        return real_flock(f, op)

    monkeypatch.setattr(locking.fcntl, "flock", flock_after_a_release)
    lock = OutputLock(path).acquire()
    try:
        assert len(calls) == 2  # the lock on the deleted file dropped, the path's taken
        assert os.fstat(lock._file.fileno()).st_ino == os.stat(path + ".lock").st_ino
        monkeypatch.setattr(locking.fcntl, "flock", real_flock)
        with pytest.raises(LockError):
            OutputLock(path).acquire()
    finally:
        lock.release()


def test_1_locks_guard_weights_merge_and_training(setup, tmp_path):
    out = tmp_path / "w.json"
    holder = OutputLock(str(out)).acquire()
    try:
        parse_flags([f"--data_dir={setup['data_dir']}", f"--models={setup['ens']}",
                     "--validation_size=10", "--aggregation=sween", f"--outfile={out}"], weights)
        with pytest.raises(LockError):
            weights.main(["prog"])
        model_dir = str(tmp_path / "member")
        with OutputLock(model_dir):
            with pytest.raises(LockError):
                train_tiny(member_config(), tiny_splits(), model_dir, verbose=0)
    finally:
        holder.release()


# 2. Fingerprints: another classifier in the same log is refused, naming what changed.
def test_2_replaced_member_or_edited_weights_refused(setup, tmp_path):
    ens = tmp_path / "ens"
    shutil.copytree(setup["ens"], ens)
    parse_flags([f"--data_dir={setup['data_dir']}", f"--models={ens}", "--sigma=0.25",
                 "--N0=20", "--N=200", "--batch=64", "--validation_size=10", "--aggregation=rw",
                 "--num_images=4"], weights)
    weights.main(["prog"])
    path = str(tmp_path / "rw.tsv")
    run = dict(setup, ens=str(ens))
    certify_tiny(run, path, "--aggregation=rw", "--max=2")
    # Edit the weights: the aggregator's weights are part of the fingerprint.
    w = ens / "weights_rw.json"
    record = json.loads(w.read_text())
    record["weights"] = [0.4, 0.4, 0.2]
    w.write_text(json.dumps(record))
    with pytest.raises(LogError, match=r"another classifier \(aggregator weights"):
        certify_tiny(run, path, "--aggregation=rw", "--max=4")
    # Replace member 0 by a member of other weights.
    shutil.rmtree(ens / "member_0")
    constant_member(ens / "member_0", 3, strength=2.0)
    mean_path = str(tmp_path / "mean.tsv")
    with pytest.raises(ValueError, match="computed for other weights of .*member_0"):
        certify_tiny(run, path, "--aggregation=rw", "--max=4")  # stale weights file refused too
    shutil.rmtree(ens / "member_0")
    shutil.copytree(setup["ens"] + "/member_0", ens / "member_0")
    certify_tiny(run, mean_path, "--aggregation=mean", "--max=2")
    shutil.rmtree(ens / "member_0")
    constant_member(ens / "member_0", 3, strength=2.0)
    with pytest.raises(LogError, match="member 0's weights differ"):
        certify_tiny(run, mean_path, "--aggregation=mean", "--max=4")
    assert len(read_rows(mean_path)) == 2  # nothing appended


def test_2_logs_without_fingerprint_adopt_it_once(setup, caplog):
    path = str(setup["root"] / "legacy.tsv")
    certify_tiny(setup, path, "--aggregation=mean", "--max=2")
    settings = json.load(open(path + ".json"))
    del settings["fingerprint"]
    json.dump(settings, open(path + ".json", "w"))
    certify_tiny(setup, path, "--aggregation=mean", "--max=4")
    assert "adopting that of the members it names now" in caplog.text
    assert "fingerprint" in json.load(open(path + ".json"))
    assert len(read_rows(path)) == 4


def test_2_image_order_recorded_adopted_once_and_binding(setup, caplog):
    # Rows index the test set; read in another order (an image-folder copy of the same data
    # set) index i is another image, so the log must not be continued.
    path = str(setup["root"] / "order.tsv")
    certify_tiny(setup, path, "--aggregation=mean", "--max=2")
    settings = json.load(open(path + ".json"))
    assert settings["image_order"] == "original"  # MNIST idx files
    del settings["image_order"]
    json.dump(settings, open(path + ".json", "w"))
    certify_tiny(setup, path, "--aggregation=mean", "--max=3")
    assert "no image order recorded" in caplog.text
    settings = json.load(open(path + ".json"))
    assert settings["image_order"] == "original" and len(read_rows(path)) == 3
    settings["image_order"] = "by_class"
    json.dump(settings, open(path + ".json", "w"))
    with pytest.raises(LogError, match="rows index test images in the 'by_class' order, the data read now "
                       r"\(--data_dir\) are in the 'original' order"):
        certify_tiny(setup, path, "--aggregation=mean", "--max=4")
    assert len(read_rows(path)) == 3


def test_2_batch_is_not_binding_and_old_noise_scheme_refused(setup):
    a, b = str(setup["root"] / "b64.tsv"), str(setup["root"] / "b_mixed.tsv")
    certify_tiny(setup, a, "--aggregation=gm", "--max=6")
    certify_tiny(setup, b, "--aggregation=gm", "--max=3", "--batch=64")
    certify_tiny(setup, b, "--aggregation=gm", "--max=6", "--batch=37")  # resume at another batch
    assert rows_without_time(a) == rows_without_time(b)
    settings = json.load(open(b + ".json"))
    del settings["noise"]
    json.dump(settings, open(b + ".json", "w"))
    with pytest.raises(LogError, match="older, batch-dependent one"):
        certify_tiny(setup, b, "--aggregation=gm", "--max=8")


# 3. Training resumes only the checkpoint of the same settings.
def _interrupted_member(tmp_path):
    """(model dir, config) of a Gaussian member stopped in its second epoch."""
    model_dir = str(tmp_path / "m")
    cfg = member_config(role="gaussian", base_sigma=0.25, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(cfg, tiny_splits(), model_dir, verbose=0,
                   extra_callbacks=[Interrupt(epoch=1, batch=0)])
    return model_dir, cfg


def test_3_checkpoint_of_other_settings_refused(tmp_path):
    model_dir, cfg = _interrupted_member(tmp_path)
    other = member_config(role="gaussian", base_sigma=1.0, epochs=2, learning_rate=0.01)
    with pytest.raises(ValueError, match=r"--base_sigma: checkpoint 0.25 vs now 1.0.*"
                                         r"--learning_rate: checkpoint 0.05 vs now 0.01"):
        train_tiny(other, tiny_splits(), model_dir, verbose=0)
    train_tiny(cfg, tiny_splits(), model_dir, verbose=0)  # the same settings resume
    assert epochs_logged(model_dir) == [0, 1]


def test_3_checkpoint_of_an_older_draw_scheme_refused(tmp_path):
    # A checkpoint from before batches and noise were keyed by (seed, epoch, step) cannot be
    # continued draw for draw: refused in one line that says how to start over.
    model_dir, cfg = _interrupted_member(tmp_path)
    settings = os.path.join(model_dir + ".ckpt", "cear_settings.json")
    recorded = json.load(open(settings))
    del recorded["training_draws"]
    json.dump(recorded, open(settings, "w"))
    with pytest.raises(ValueError, match="another way of drawing batches and noise.*--noresume"):
        train_tiny(cfg, tiny_splits(), model_dir, verbose=0)


# 4. The checkpoint outlives fit until the member is exported; a torn one is named.
def test_4_kill_before_export_retrains_nothing(tmp_path, monkeypatch):
    model_dir = str(tmp_path / "m")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed during export")

    monkeypatch.setattr(members, "export_member", killed)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(member_config(epochs=2), tiny_splits(), model_dir, verbose=0)
    monkeypatch.undo()
    assert os.path.isdir(model_dir + ".ckpt")
    train_tiny(member_config(epochs=2), tiny_splits(), model_dir, verbose=0)
    assert epochs_logged(model_dir) == [0, 1]  # no epoch trained (or logged) twice
    assert members.is_complete_member(model_dir) and not os.path.exists(model_dir + ".ckpt")


def test_4_torn_checkpoint_names_the_file(tmp_path):
    model_dir = str(tmp_path / "m")
    with pytest.raises(KeyboardInterrupt):
        train_tiny(member_config(epochs=3), tiny_splits(), model_dir, verbose=0,
                   extra_callbacks=[Interrupt(epoch=1, batch=0)])
    weights_file = os.path.join(model_dir + ".ckpt", "latest.weights.h5")
    with open(weights_file, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=r"latest.weights.h5: the checkpoint cannot be read.*"
                                         r"--noresume"):
        train_tiny(member_config(epochs=3), tiny_splits(), model_dir, verbose=0)
    train_tiny(member_config(epochs=3), tiny_splits(), model_dir, resume=False, verbose=0)
    assert members.is_complete_member(model_dir)


# 5. Every --noresume keeps the previous log and its settings, numbered.
def test_5_noresume_keeps_every_old_log(setup):
    path = str(setup["root"] / "again.tsv")
    certify_tiny(setup, path, "--aggregation=mean", "--max=1")
    certify_tiny(setup, path, "--aggregation=mean", "--max=2", "--noresume")
    certify_tiny(setup, path, "--aggregation=mean", "--max=3", "--noresume")
    assert len(read_rows(path + ".old1")) == 1 and len(read_rows(path + ".old2")) == 2
    assert json.load(open(path + ".old1.json"))["max"] == 1
    assert json.load(open(path + ".old2.json"))["max"] == 2
    assert len(read_rows(path)) == 3


# 6. No float flag takes nan or inf.
def test_6_every_float_flag_rejects_nan_and_inf():
    from tests.test_entry_points import ENTRY_POINTS
    seen = set()
    for module in ENTRY_POINTS:
        parse_flags([], module)
        names = [name for name, flag in flags.FLAGS._flags().items()
                 if flag.flag_type() == "float" and len(name) > 1]
        seen.update(names)
        for name in names:
            for bad in ("nan", "inf", "-inf"):
                with pytest.raises(flags.IllegalFlagValueError, match=name):
                    parse_flags([f"--{name}={bad}"], module)
    assert {"sigma", "alpha", "learning_rate", "clipnorm", "logit_noise"} <= seen


# 7. A leftover export folder is not a member.
def test_7_partial_export_folder_is_ignored(setup, tmp_path):
    ens = tmp_path / "ens"
    shutil.copytree(setup["ens"], ens)
    shutil.copytree(ens / "member_1", ens / "member_1.partial")
    dirs = loading.resolve_member_dirs([str(ens)])
    assert [os.path.basename(d) for d in dirs] == ["member_0", "member_1", "member_2"]


# 8. Damaged files are named, with the line, and never truncated before the check.
def test_8_damaged_logs_and_settings(setup, tmp_path):
    path = str(tmp_path / "log.tsv")
    certify_tiny(setup, path, "--aggregation=mean", "--max=3")
    good = open(path, "rb").read()
    lines = good.decode().split("\n")
    bad_idx = "\n".join([lines[0], lines[1], "x" + lines[2]] + lines[3:])
    open(path, "w").write(bad_idx + "half a row")
    with pytest.raises(LogError, match=r"log.tsv:3: idx 'x1' is not an integer"):
        certify_tiny(setup, path, "--aggregation=mean", "--max=5")
    assert open(path).read().endswith("half a row")  # not truncated
    second = len(lines[0]) + 1 + 3  # inside the first row
    open(path, "wb").write(good[:second] + b"\xff\xfe" + good[second + 2:])
    with pytest.raises(LogError, match=r"log.tsv:2: not UTF-8"):
        certify_tiny(setup, path, "--aggregation=mean", "--max=5")
    open(path, "wb").write(good)
    open(path + ".json", "w").write("{not json")
    with pytest.raises(LogError, match=r"log.tsv.json: not valid JSON"):
        certify_tiny(setup, path, "--aggregation=mean", "--max=5")


@pytest.mark.parametrize("column,value,match", [
    ("idx", "0", "image 0 again"), ("correct", "yes", "correct 'yes' is not 0 or 1"),
    ("radius", "nan", "radius nan is not a finite number"),
    ("radius", "-0.5", "radius -0.5 is not a finite number >= 0")])
def test_8_analyze_refuses_bad_rows(tmp_path, column, value, match):
    path = str(tmp_path / "a.tsv")
    log = CertifyLog(path, {"x": 1})
    for i in range(3):
        log.write(i, 1, 1, 0.5, True, 0.1, 90, 100, 0.9)
    log.close()
    lines = open(path).read().split("\n")
    header = lines[0].split("\t")
    fields = lines[3].split("\t")
    fields[header.index(column)] = value
    lines[3] = "\t".join(fields)
    open(path, "w").write("\n".join(lines))
    with pytest.raises(LogError, match=rf"a.tsv:4: {match}"):
        certified_accuracy.load_log(path)


# 9. weights checks its output before any work.
def test_9_weights_output_checked_first(setup, tmp_path, monkeypatch):
    from cear_tf.cli import ensemble_flags
    monkeypatch.setattr(ensemble_flags, "load_ensemble",
                        lambda *a: pytest.fail("members loaded before the output was checked"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    for out, match in ((tmp_path, "is a directory"),
                       (blocker / "w.json", "File exists|Not a directory")):
        parse_flags([f"--data_dir={setup['data_dir']}", f"--models={setup['ens']}",
                     "--validation_size=10", f"--outfile={out}", "--noresume"], weights)
        with pytest.raises((ValueError, OSError), match=match):
            weights.main(["prog"])


# 10. Accepted without a word before; refused now.
def test_10_odd_values_refused(setup, tmp_path):
    with pytest.raises(flags.IllegalFlagValueError, match="--max must be -1"):
        parse_flags(["--max=-2"], certify)
    with pytest.raises(ValueError, match="select no image"):
        certify_tiny(setup, str(tmp_path / "none.tsv"), "--max=0")
    with pytest.raises(ValueError, match=r"--N=9 cannot certify any image at --alpha=0.001.*"
                                         r"--N >= 10"):
        certify_tiny(setup, str(tmp_path / "n.tsv"), "--N=9", "--alpha=0.001")
    with pytest.raises(LogError, match="is a directory"):
        certify_tiny(setup, str(tmp_path), "--aggregation=mean")
    dirs = loading.resolve_member_dirs([setup["ens"]])
    for bad in ([True, 1, 1], ["0.5", 1, 1], "0.3"):
        w = tmp_path / "w.json"
        w.write_text(json.dumps({"method": "rw", "weights": bad}))
        with pytest.raises(ValueError, match="weights must be a list of numbers"):
            loading.load_weights(str(w), "rw", dirs)
    assert not os.path.exists(tmp_path / "none.tsv") and not os.path.exists(tmp_path / "n.tsv")


def test_bad_input_ends_in_one_line_without_traceback(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-m", "cear_tf.cli.certify", f"--models={tmp_path}",
                          f"--outfile={tmp_path / 'x.tsv'}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    last = out.stderr.strip().split("\n")[-1]
    assert last.startswith("cear_tf.cli.certify: error: --models:"), out.stderr[-500:]
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_soak_kill9_reruns_and_a_concurrent_writer(setup, tmp_path):
    """certify on tiny members, killed with SIGKILL at 20 random moments (a quarter of them
    while starting up, the rest just after a new row appears, so kills land between and
    inside row writes) and rerun, with a second writer started beside one run: the final logs
    equal an uninterrupted run's in every column but time."""
    import random
    import signal
    import time

    images = 120
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=20, n_test=images)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def command(out):
        return [sys.executable, "-m", "cear_tf.cli.certify", f"--data_dir={data_dir}",
                f"--models={setup['ens']}", "--sigma=0.5", "--N0=100", "--N=50000",
                "--batch=1000", "--aggregation=mean,gm", "--validation_size=0",
                f"--outfile={out}"]

    def rows_written(path):
        try:
            with open(path) as f:
                return max(f.read().count("\n") - 1, 0)
        except OSError:
            return 0

    def wait_for_new_row(proc, path, timeout=120):
        before = rows_written(path)
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            if rows_written(path) > before:
                return True
            time.sleep(0.05)
        return False

    reference = str(tmp_path / "ref_{aggregation}.tsv")
    subprocess.run(command(reference), cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=900)
    soak = str(tmp_path / "soak_{aggregation}.tsv")
    gm_log = soak.replace("{aggregation}", "gm")
    rng = random.Random(20)
    for attempt in range(20):
        proc = subprocess.Popen(command(soak), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if attempt % 4 == 1:  # during start-up, before any row
            time.sleep(rng.uniform(0.5, 4.0))
        else:
            assert wait_for_new_row(proc, gm_log), f"attempt {attempt} wrote no row"
            if attempt == 10:  # a second writer on the same logs while the first writes
                second = subprocess.run(command(soak), cwd=REPO, env=env, capture_output=True,
                                        text=True, timeout=300)
                assert second.returncode == 2, second.stderr[-500:]
                last = second.stderr.strip().split("\n")[-1]
                assert "is being written by another process (pid" in last, last
            time.sleep(rng.uniform(0.0, 0.4))
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert rows_written(gm_log) < images  # the kills interrupted real work
    finished = subprocess.run(command(soak), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=900)
    assert finished.returncode == 0, finished.stderr[-1000:]
    for name in ("mean", "gm"):
        ref = rows_without_time(reference.replace("{aggregation}", name))
        got = rows_without_time(soak.replace("{aggregation}", name))
        assert len(ref) == images and got == ref, name


def test_missing_required_flag_is_one_line_not_a_page_of_help(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-m", "cear_tf.cli.certify"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    mine = [line for line in out.stderr.strip().split("\n") if "cear_tf" in line or "--" in line]
    assert mine[-1] == ("cear_tf.cli.certify: error: --models and --outfile are required (see "
                        "--helpfull)"), mine
    assert "USAGE" not in out.stderr and "flags:" not in out.stderr


# 11. A training log holds one run: rows of a run whose checkpoint is gone move aside.
def test_11_train_log_never_mixes_runs(tmp_path):
    model_dir = str(tmp_path / "m")
    with pytest.raises(KeyboardInterrupt):
        train_tiny(member_config(epochs=3), tiny_splits(), model_dir, verbose=0,
                   extra_callbacks=[Interrupt(epoch=2, batch=0)])
    assert epochs_logged(model_dir) == [0, 1]
    shutil.rmtree(model_dir + ".ckpt")  # the checkpoint is lost: the next run starts over
    with pytest.raises(KeyboardInterrupt):
        train_tiny(member_config(epochs=3), tiny_splits(), model_dir, verbose=0,
                   extra_callbacks=[Interrupt(epoch=1, batch=0)])
    assert epochs_logged(model_dir) == [0]
    first = model_dir + ".logs/train.discarded.1.csv"
    with open(first) as f:
        assert [int(line.split(",")[0]) for line in f.read().splitlines()[1:]] == [0, 1]
    train_tiny(member_config(epochs=3), tiny_splits(), model_dir, verbose=0)  # resumes: nothing moved
    assert epochs_logged(model_dir) == [0, 1, 2]
    assert not os.path.exists(model_dir + ".logs/train.discarded.2.csv")
    shutil.rmtree(model_dir)
    train_tiny(member_config(epochs=1), tiny_splits(), model_dir, resume=False, verbose=0)
    assert epochs_logged(model_dir) == [0]
    with open(model_dir + ".logs/train.discarded.2.csv") as f:
        assert len(f.read().splitlines()) == 4  # the header and the finished run's 3 epochs


def test_11_a_log_the_checkpoint_outran_keeps_its_own_rows(tmp_path):
    log_dir, ckpt_dir = tmp_path / "m.logs", tmp_path / "m.ckpt"
    log_dir.mkdir()
    ckpt_dir.mkdir()
    (ckpt_dir / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    rows = ["epoch,loss"] + [f"{e},1.0" for e in (0, 1, 2, 3, 4, 0, 1)]
    (log_dir / "train.csv").write_text("\n".join(rows) + "\n")
    checkpoints.align_train_log(str(log_dir), str(ckpt_dir))
    assert (log_dir / "train.csv").read_text().splitlines() == ["epoch,loss", "0,1.0", "1,1.0"]
    assert len((log_dir / "train.discarded.1.csv").read_text().splitlines()) == 6
