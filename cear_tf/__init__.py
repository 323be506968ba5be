"""cear_tf: Certified Ensemble Adversarial Robustness (CEAR) in TensorFlow/Keras."""

import os
import sys

__version__ = "0.1.0"


def _wants_tensorflow_logs() -> bool:
    """--verbosity/-v on the command line, or TF_CPP_MIN_LOG_LEVEL=0 set by the user."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return True
    return any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:])


def _wants_help() -> bool:
    """An entry point asked only for its help: it answers without TensorFlow."""
    return any(a in ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")
               for a in sys.argv[1:])


def _runs_without_tensorflow() -> bool:
    """The program is cear_tf.run, which only starts other entry points."""
    argv = getattr(sys, "orig_argv", [])  # during `python -m`, sys.argv[0] is still '-m'
    return any(a == "-m" and b == "cear_tf.run" for a, b in zip(argv, argv[1:]))


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with the process's stderr pointed at /dev/null.

    TensorFlow >= 2.19 prints its oneDNN and CPU-feature banners from C++ before its logging
    is initialised, so TF_CPP_MIN_LOG_LEVEL does not hold them back (tensorflow/tensorflow
    #100442); nothing is printed by C++ after the import. Python errors of the import are
    raised after stderr is restored, so they are still seen.
    """
    if ("tensorflow" in sys.modules or _wants_tensorflow_logs() or _wants_help()
            or _runs_without_tensorflow() or os.environ.get("CEAR_TF_CHECK_FLAGS") == "1"):
        return
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no file descriptor 2 to redirect (embedded interpreters)
        return
    try:
        sys.stderr.flush()
        os.dup2(null, 2)
        import tensorflow  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "tensorflow":
            raise
        raise ImportError("cear_tf needs TensorFlow, which is not installed: pip install -e "
                          "'.[cpu]' (CPU) or '.[gpu]' (NVIDIA GPU, tensorflow[and-cuda])") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


_import_tensorflow_quietly()
