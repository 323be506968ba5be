"""Running an entry point: bad input ends in one line that says what was wrong.

Errors that come from what the user gave (a flag, a file, a log, a model) are raised as
ValueError, OSError or one of cear_tf's own error types; `run` prints their message as the
last line, `<program>: error: <message>`, and exits with status 2. Tracebacks are for bugs:
any other exception propagates. `--verbosity=1` (absl's debug level) shows the traceback of
bad-input errors too.
"""

from __future__ import annotations

import math
import sys

from absl import app, flags, logging

from cear_tf.locking import LockError

_checked_floats: set[str] = set()


def require_finite_floats() -> None:
    """Registers a validator on every float flag defined so far: nan and inf are refused at
    parse time, with the flag named. Call once after an entry point defines its flags."""
    for name, flag in list(flags.FLAGS._flags().items()):
        if flag.flag_type() != "float" or flag.name in _checked_floats:
            continue
        _checked_floats.add(flag.name)
        flags.register_validator(
            flag.name, lambda v: v is None or math.isfinite(v),
            message=f"--{flag.name} must be a finite number (not nan or inf)")


def run(main) -> None:
    """app.run(main), with bad-input errors reported in one line."""
    def guarded(argv):
        program = sys.argv[0].rsplit("/", 1)[-1]
        if program.endswith(".py"):  # python -m cear_tf.<name>
            program = f"cear_tf.{program[:-3]}"
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
    app.run(guarded)
