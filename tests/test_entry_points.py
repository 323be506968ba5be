"""Entry points define their flags when they run, never on import, and only flags they read."""

import ast
import inspect
import re
import subprocess
import sys

from absl import flags

from cear_tf.cli import (
    analyze,
    attack,
    bench,
    certify,
    common_flags,
    ensemble_flags,
    export,
    member_accuracy,
    merge,
    report,
    run,
    train,
    variance,
    weights,
)
from tests.conftest import REPO
from tests.helpers import cear_tf_flags, parse_flags

ENTRY_POINTS = (analyze, attack, bench, certify, export, member_accuracy, merge, report, run,
                train, variance, weights)


def test_importing_every_entry_point_defines_no_flag():
    # This module imported all of them at the top; the pytest process may have defined flags
    # since (parse_flags), so check in a fresh interpreter.
    script = ("from absl import flags\n"
              "from cear_tf.cli import " + ", ".join(m.__name__.split(".")[-1] for m in ENTRY_POINTS)
              + "\nours = [m for m in flags.FLAGS.flags_by_module_dict() if 'cear_tf' in m]"
              "\nassert not ours, ours\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_users_absl_program_imports_the_library():
    script = '''
from absl import app, flags
flags.DEFINE_string("model_dir", "mine", "the user's own flag")
flags.DEFINE_bool("xla", True, "the user's own flag")
from cear_tf.cli import certify
from cear_tf.cli import train
def main(argv):
    assert flags.FLAGS.model_dir == "x" and flags.FLAGS.xla is False
    print("ok")
app.run(main, argv=["prog", "--model_dir=x", "--noxla"])
'''
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def _reads(source: str) -> set[str]:
    """Flag names read in `source`: FLAGS.<name>, f.<name> (f = flags.FLAGS), FLAGS["name"],
    and the names cli.require(argv, ...) checks."""
    names = set(re.findall(r"\b(?:FLAGS|f)\.([A-Za-z_][A-Za-z0-9_]*)", source))
    names |= set(re.findall(r"FLAGS\[\"([A-Za-z0-9_]+)\"\]", source))
    for group in re.findall(r"cli\.require\(argv((?:, \"[A-Za-z0-9_]+\")*)\)", source):
        names |= set(re.findall(r"\"([A-Za-z0-9_]+)\"", group))
    return names


def _helper_reads() -> dict[str, set[str]]:
    """{qualified helper name: flags it reads} for the helpers of the flag-group modules."""
    out = {}
    for module in (common_flags, ensemble_flags):
        source = inspect.getsource(module)
        helpers = {node.name: ast.get_source_segment(source, node)
                   for node in ast.parse(source).body
                   if isinstance(node, ast.FunctionDef)
                   and not node.name.startswith(("define", "_define"))}
        reads = {name: _reads(text) for name, text in helpers.items()}
        changed = True
        while changed:  # a helper reads what the helpers it calls read
            changed = False
            for name, text in helpers.items():
                for other in helpers:
                    if other != name and re.search(rf"\b{other}\(", text) \
                            and not reads[other] <= reads[name]:
                        reads[name] |= reads[other]
                        changed = True
        prefix = module.__name__.split(".")[-1]
        out.update({f"{prefix}.{name}": names for name, names in reads.items()})
    return out


def test_every_entry_point_defines_only_flags_it_reads():
    helpers = _helper_reads()
    unread = {}
    for module in ENTRY_POINTS:
        parse_flags([], module)
        defined = {flags.FLAGS[n].name for n in cear_tf_flags()}  # long names only
        source = inspect.getsource(module)
        read = _reads(source)
        for helper, names in helpers.items():
            if re.search(rf"\b{re.escape(helper)}\(", source):
                read |= names
        if "cli.run" in source:  # every entry point's flags pass through cli
            read |= {"verbosity"}
        if defined - read:
            unread[module.__name__] = sorted(defined - read)
    assert not unread, unread


def test_help_lists_the_entry_points_flags_and_exits_zero():
    out = subprocess.run([sys.executable, "-m", "cear_tf.cli.analyze", "--helpfull"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0
    text = out.stdout + out.stderr
    assert "--logs" in text and "--outfile" in text
    short = subprocess.run([sys.executable, "-m", "cear_tf.cli.analyze", "--help"], capture_output=True,
                           text=True, timeout=300)
    assert short.returncode == 0 and "--output_dir" in short.stdout  # shared groups listed too
    assert "--sigma" not in text and "--models" not in text  # not analyze's


def test_flag_choices_match_the_library():
    from cear_tf import models
    from cear_tf.config import choices
    from cear_tf.data import datasets
    assert tuple(datasets.DATASETS) == choices.DATASET_NAMES
    assert tuple(models.MODEL_NAMES) == choices.MODEL_NAMES


def test_help_answers_without_tensorflow():
    """--help defines and lists the flags without loading TensorFlow (it took ~7 s when it
    did; a fraction of a second now)."""
    script = """
import runpy, sys
name = sys.argv[1]
sys.argv = [name, "--help"]
try:
    runpy.run_module(name, run_name="__main__", alter_sys=False)
except SystemExit as e:
    assert e.code in (0, None), (name, e.code)
assert "tensorflow.python" not in sys.modules, name + " loaded TensorFlow for --help"
print("ok")
"""
    for module in ENTRY_POINTS:
        out = subprocess.run([sys.executable, "-c", script, module.__name__],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip().endswith("ok"), \
            (module.__name__, out.stderr[-3000:])


def test_readme_flag_vocabulary_matches_the_entry_points():
    """docs/usage.md's table of flag names: each flag is defined by exactly the tools it
    lists."""
    import os
    defined = {}
    for module in ENTRY_POINTS:
        parse_flags([], module)
        defined[module.__name__.split(".")[-1]] = set(cear_tf_flags())
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs",
                               "usage.md")).read()
    rows = readme[readme.index("| flag | means | read by |"):].splitlines()[2:]
    checked = 0
    for line in rows:
        if not line.startswith("|"):
            break
        names_cell, _, tools_cell = (c.strip() for c in line.strip("|").split("|"))
        if tools_cell.startswith("every"):
            continue
        tools = {t.strip() for t in tools_cell.split(",")}
        for name in re.findall(r"`--([A-Za-z0-9_]+)`", names_cell):
            having = {tool for tool, names in defined.items() if name in names}
            assert having == tools, (name, sorted(having), sorted(tools))
            checked += 1
    assert checked >= 15


def test_importing_the_library_touches_no_file_descriptor_and_reads_no_argv():
    # A notebook or another program imports cear_tf: nothing may depend on its argv, and
    # stderr stays where it is (the quiet start-up belongs to the command-line runner).
    code = r"""
import os, sys
calls = []
real_dup2 = os.dup2
os.dup2 = lambda *a, **k: (calls.append(a), real_dup2(*a, **k))[1]
sys.argv = sys.argv[1:]
before = list(sys.argv)
import cear_tf, cear_tf.smoothing.core, cear_tf.training.recipe, cear_tf.cli.certify, cear_tf.cli.report
assert "tensorflow" in sys.modules  # the library modules did load TensorFlow
assert calls == [], calls
assert sys.argv == before, sys.argv
print("ok")
"""
    for argv in (["notebook"], ["notebook", "--help", "--verbosity=1"]):
        out = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
