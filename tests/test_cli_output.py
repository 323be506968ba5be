"""What an entry point prints: no TensorFlow C++ log lines unless --verbosity is given,
help that exits 0, Python's own lines untouched."""

import os
import re
import subprocess
import sys
import threading

from cear_tf.cli import launch
from tests.helpers import halves_member

NATIVE = re.compile(r"^[IW]0000 00:00:|oneDNN custom operations|absl::InitializeLog", re.M)


def test_forward_stderr_drops_native_info_and_keeps_the_rest():
    source_r, source_w = os.pipe()
    target_r, target_w = os.pipe()
    thread = threading.Thread(target=launch._forward_stderr, args=(source_r, target_w))
    thread.start()
    text = (b"WARNING: All log messages before absl::InitializeLog() is called are written\n"
            b"I0000 00:00:1795473286.990760    3569 devices.cc:76] Number of eligible GPUs\n"
            b"W0000 00:00:1795473286.990760    3569 grappler.cc:7] something\n"
            b"E0000 00:00:1795473286.990760    3569 op.cc:9] a real error\n"
            b"I1123 22:34:47.175186 140005725051776 certify.py:75] a Python log line\n"
            b"progress 1/3\rprogress 2/3\r")
    for i in range(0, len(text), 17):  # lines split across reads
        os.write(source_w, text[i:i + 17])
    os.close(source_w)
    thread.join(timeout=10)
    os.close(target_w)
    out = os.read(target_r, 1 << 16).decode()
    assert out == ("E0000 00:00:1795473286.990760    3569 op.cc:9] a real error\n"
                   "I1123 22:34:47.175186 140005725051776 certify.py:75] a Python log line\n"
                   "progress 1/3\rprogress 2/3\r")


def test_entry_point_output_has_no_tensorflow_log_lines(tmp_path):
    ens = tmp_path / "ens"
    for i in range(2):
        halves_member(ens / f"member_{i}", 1.0 + i)
    command = [sys.executable, "-m", "cear_tf.cli.export", f"--models={ens}", "--N=50",
               "--alpha=0.01", f"--export_dir={tmp_path / 'smoothed'}"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert not NATIVE.search(quiet.stderr), quiet.stderr
    assert "export.py" in quiet.stderr  # our own INFO lines stay
    assert quiet.stdout.strip().splitlines()[-1] == str(tmp_path / "smoothed")
    # The same run with --verbosity shows TensorFlow's lines: the check above is not vacuous.
    loud = subprocess.run(command + ["--verbosity=0"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert loud.returncode == 0 and NATIVE.search(loud.stderr), loud.stderr[-2000:]


def test_help_exits_zero():
    out = subprocess.run([sys.executable, "-m", "cear_tf.cli.export", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--export_dir" in out.stdout + out.stderr
    assert not NATIVE.search(out.stderr)
