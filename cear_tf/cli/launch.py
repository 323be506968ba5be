"""Running an entry point: bad input ends in one line that says what was wrong.

Errors that come from what the user gave (a flag, a file, a log, a model) are raised as
ValueError, OSError or one of cear_tf's own error types; `run` prints their message as the
last line, `<program>: error: <message>`, and exits with status 2. Tracebacks are for bugs:
any other exception propagates. `--verbosity=1` (absl's debug level) shows the traceback of
bad-input errors too.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import sys
import threading

from absl import app, flags, logging

from cear_tf.common.locking import LockError


def require_finite_floats() -> None:
    """Registers a validator on every float flag defined so far: nan and inf are refused at
    parse time, with the flag named. Call once after an entry point defines its flags."""
    for flag in list(flags.FLAGS._flags().values()):
        # Marked on the flag object: a flag deleted and defined again (tests) needs its own.
        if flag.flag_type() != "float" or getattr(flag, "_cear_tf_finite", False):
            continue
        flag._cear_tf_finite = True
        flags.register_validator(
            flag.name, lambda v: v is None or math.isfinite(v),
            message=f"--{flag.name} must be a finite number (not nan or inf)")


# TensorFlow's C++ INFO and WARNING lines ("I0000 00:00:<seconds> <thread> file.cc:<line>]"):
# its logging is never initialised from Python, so every such line carries that date, which
# no Python (absl) log line does.
_NATIVE_LOG = re.compile(rb"^[IW]0000 00:00:\d+\.\d+ +\d+ [^ ]+:\d+\] ")
_NATIVE_BANNER = (b"WARNING: All log messages before absl::InitializeLog()",
                  b"To enable the following instructions:")


def _forward_stderr(source: int, target: int) -> None:
    pending = b""
    while True:
        chunk = os.read(source, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = [line for line in lines
                if not _NATIVE_LOG.match(line) and not line.startswith(_NATIVE_BANNER)]
        out = b"".join(line + b"\n" for line in kept)
        if b"\r" in pending:  # a progress bar redraws its line: show it now
            cut = pending.rindex(b"\r") + 1
            out, pending = out + pending[:cut], pending[cut:]
        if out:
            os.write(target, out)
    if pending:
        os.write(target, pending)


def quiet_native_logs() -> None:
    """Drops TensorFlow's C++ INFO/WARNING lines from this process's stderr (TF 2.19+ ignores
    TF_CPP_MIN_LOG_LEVEL for them); errors and everything Python writes pass unchanged.
    `--verbosity` (any value) keeps them. stderr then runs through a pipe read by a thread,
    which is drained and joined at exit."""
    if any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_forward_stderr, args=(read_end, original), daemon=True)
    thread.start()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes the pipe's last write end: the thread reads EOF
        thread.join(timeout=5)

    atexit.register(restore)


def _show_in_short_help() -> None:
    """Makes every flag cear_tf defined a key flag of the program, so --help lists the
    shared groups (--sigma, --models, ...) beside the entry point's own flags."""
    values = flags.FLAGS
    main_module = sys.argv[0]
    for module, defined in list(values.flags_by_module_dict().items()):
        if module.startswith("cear_tf") and module != main_module:
            for flag in defined:
                values.register_key_flag_for_module(main_module, flag)


def require(argv, *names: str) -> None:
    """Refuses positional arguments and unset required flags, in one UsageError that names
    them (flags only: every entry point takes its input as flags)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    missing = [f"--{n}" for n in names if not flags.FLAGS[n].value]
    if missing:
        raise app.UsageError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                             f"required")


# Set to "1" in a program's environment: it parses its flags (unknown names and invalid
# values end it with status 1, as always), prints the names of the flags it defines, one a
# line, then DONE_MARK when its `is_done` says its work is already on disk, and exits 0
# without running. cear_tf.cli.run checks every stage of an experiment this way before it starts
# the first, and skips the finished ones without starting them (no TensorFlow start-up).
CHECK_FLAGS_ONLY = "CEAR_TF_CHECK_FLAGS"
DONE_MARK = "--stage-finished--"


def run(main, define_flags=None, is_done=None) -> None:
    """Defines the entry point's flags (`define_flags()`, so importing an entry point defines
    none), then app.run(main), with bad-input errors reported in one line. `is_done()` (no
    TensorFlow; read files only) says whether running main would find nothing to do; it must
    err on the side of False."""
    quiet_native_logs()
    if define_flags is not None:
        define_flags()
        _show_in_short_help()
    require_finite_floats()
    def guarded(argv):
        program = sys.argv[0].rsplit("/", 1)[-1]
        if program.endswith(".py"):  # python -m cear_tf.cli.<name>
            program = f"cear_tf.cli.{program[:-3]}"
        if os.environ.get(CHECK_FLAGS_ONLY) == "1":
            sys.stdout.write("".join(f"{name}\n" for name in flags.FLAGS))
            if is_done is not None and _finished(is_done):
                sys.stdout.write(DONE_MARK + "\n")
            return 0
        try:
            return main(argv)
        except app.UsageError as e:  # a missing or contradictory flag: no page of help
            sys.stderr.write(f"{program}: error: {e} (see --helpfull)\n")
            sys.exit(2)
        except (ValueError, OSError, LockError) as e:
            if logging.get_verbosity() >= logging.DEBUG:
                raise
            sys.stderr.write(f"{program}: error: {e}\n")
            sys.exit(2)
    try:
        app.run(guarded)
    except SystemExit as e:
        # absl ends --help with status 1; asking for help is not an error.
        if e.code == 1 and any(a in _HELP for a in sys.argv[1:]):
            sys.exit(0)
        raise


def _finished(is_done) -> bool:
    try:
        return bool(is_done())
    except (ValueError, OSError, KeyError, TypeError):  # anything unreadable: run the stage
        return False


_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")
