"""Warm pytest modules and `imports:` tests: the same results as their wrappers give.

The zygote does pytest's start-up that is the same for every module once
(nixtest.driver.warm_up) and each child uses its copy once; `imports:` tests
spawn the profile's python3 straight from the driver.  Nothing of it may show:
the steps, outcome, message and output of a warm run are those of the
wrapper's path (`Context(warm=False)`), the wrapper run by hand exits the
same, and nothing one module does reaches the next.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_e2e_core import junit_outcomes
from test_loop import run
from test_zygote_run import _comparable as comparable_run_result

from conftest import Suite
from nixtest.definitions import load_package
from nixtest.results import TestResult
from nixtest.runner import Context, Prepared, execute, prepare

pytestmark = pytest.mark.dpkg

MODULES = {
    "test_mixed.py": """
        import logging
        import os
        import sys

        import pytest


        @pytest.fixture
        def broken():
            raise RuntimeError("the fixture broke")


        def test_passes(capsys):
            print("to stdout")
            print("to stderr", file=sys.stderr)
            logging.getLogger("mod").warning("a log line")


        def test_fails(workdir, package):
            value = {"a": 1, "b": [1, 2]}
            assert value == {"a": 1, "b": [1, 3]}


        def test_skipped():
            pytest.skip("not on this machine")


        def test_errors(broken):
            pass


        @pytest.mark.parametrize("n", [1, 2])
        def test_param(n, tmp_path, monkeypatch):
            monkeypatch.setenv("SOME", str(n))
            assert os.environ["SOME"] == str(n) and tmp_path.is_dir()
    """,
    "test_passing.py": """
        import warnings


        def test_warns():
            warnings.warn("deprecated here", DeprecationWarning)


        def test_ok(profile, local):
            assert (profile / "bin").is_dir()
    """,
    "test_empty.py": "X = 1\n",
}

TESTS = """
tests:
  mixed: {script: test_mixed.py, profile: [python3]}
  passing: {script: test_passing.py, profile: [python3]}
  empty: {script: test_empty.py, profile: [python3]}
  imports: {imports: [zlib, json], profile: [python3]}
  imports-missing: {imports: [zlib, no_such_module_nixtest, json], profile: [python3]}
"""


def _comparable(r: TestResult) -> dict[str, Any]:
    """As a `run:` test's (test_zygote_run), and pytest's durations and the run's folder left out."""
    data = comparable_run_result(r)
    for item in (*data["steps"], data):
        item["output"] = [(stream, _no_times(text)) for stream, text in item["output"]]
    return data


def _no_times(text: str) -> str:
    """pytest's summary line says how long the session took; each run has a scratch folder of its own."""
    return re.sub(r"/nixtest-run-[^/]+/", "/SCRATCH/", re.sub(r" in \d+\.\d+s", " in Ts", text))


def _results(defs: dict[str, Any], out: Path, state: Path, warm: bool) -> dict[str, dict[str, Any]]:
    """Each test's result, comparable between runs (paths of the run replaced)."""
    ctx = Context(out=out, state=state, warm=warm)
    found = {}
    try:
        for name, defn in defs.items():
            prepared = prepare(defn, ctx)
            assert isinstance(prepared, Prepared), prepared
            assert (ctx.zygote_for(prepared) is not None) == warm, f"{name}: warm={warm} not honoured"
            result = execute(prepared, ctx)
            found[name] = {
                **_comparable(result),
                "wrapper": result.wrapper.replace(str(out), "OUT"),
                "command": [c.replace(str(out), "OUT") for c in result.command],
            }
    finally:
        ctx.close()
    return found


def test_a_warm_pytest_module_or_imports_result_is_the_wrappers(tmp_path: Path, nixtest_state: Path) -> None:
    folder = tmp_path / "pt" / "python3"
    folder.mkdir(parents=True)
    (folder / "tests.yaml").write_text(textwrap.dedent(TESTS))
    for name, text in MODULES.items():
        (folder / name).write_text(textwrap.dedent(text))
    defs = {d.name: d for d in load_package(folder)}
    results = {warm: _results(defs, tmp_path / f"out-{warm}", nixtest_state, warm) for warm in (True, False)}
    for name in defs:
        warm_text, cold_text = (json.dumps(results[w][name], indent=1) for w in (True, False))
        diff = "\n".join(difflib.unified_diff(cold_text.splitlines(), warm_text.splitlines(), "cold", "warm"))
        assert warm_text == cold_text, f"{name}:\n{diff}"
    warm = results[True]
    assert {name: r["outcome"] for name, r in warm.items()} == {
        "mixed": "failed",
        "passing": "passed",
        "empty": "error",
        "imports": "passed",
        "imports-missing": "failed",
    }
    mixed = warm["mixed"]
    assert [(s["message"], s["outcome"]) for s in mixed["steps"]] == [
        ("test_passes", "passed"),
        ("test_fails", "failed"),
        ("test_skipped", "skipped"),
        ("test_errors (setup)", "error"),
        ("test_param[1]", "passed"),
        ("test_param[2]", "passed"),
    ]
    # the assertion was rewritten: its message shows the differing item
    failed = "".join(text for _, text in mixed["steps"][1]["output"])
    assert "{'b': [1, 2]} != {'b': [1, 3]}" in failed, failed
    passed = dict(mixed["steps"][0]["output"])
    assert passed["stdout"] == "to stdout\n" and "to stderr" in passed["stderr"], passed
    summary = "".join(text for _, text in warm["passing"]["output"])
    assert "DeprecationWarning: deprecated here" in summary, summary
    assert [s["outcome"] for s in warm["imports-missing"]["steps"]] == ["passed", "failed", "passed"]

    # the wrapper run by hand: the same exit status
    for name, code in (("mixed", 1), ("passing", 0), ("empty", 3), ("imports", 0), ("imports-missing", 1)):
        by_hand = subprocess.run(
            [str(tmp_path / "out-True" / "rerun" / "python3" / name)],
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert by_hand.returncode == code, (name, by_hand.stdout, by_hand.stderr)


#: (what a module does, what the next module checks); each check also runs first, on a fresh child
PYTEST_LEAKS = {
    "os.environ": ("os.environ['NIXTEST_LEAK'] = '1'", "assert 'NIXTEST_LEAK' not in os.environ"),
    "sys.path": ("sys.path.insert(0, '/nixtest-leak')", "assert '/nixtest-leak' not in sys.path"),
    "the test's own module": (
        "sys.path.insert(0, os.path.dirname(__file__)); import leaky_helper; leaky_helper.COUNT += 1",
        "assert 'leaky_helper' not in sys.modules",
    ),
    "logging handlers": (
        "handler = logging.NullHandler(); handler.set_name('nixtest-leak'); "
        "logging.getLogger().addHandler(handler); logging.getLogger('x').setLevel(5)",
        "assert 'nixtest-leak' not in [h.get_name() for h in logging.getLogger().handlers]; "
        "assert logging.getLogger('x').level == 0",
    ),
    "cwd": ("os.chdir('/')", "assert os.getcwd() == os.environ['HOME']"),
    "module globals": ("json.LEAK = 1", "assert not hasattr(json, 'LEAK')"),
    "pytest's configuration": (
        "request.config.pluginmanager.register(object(), 'nixtest-leak'); request.config.option.leak = 1",
        "assert not request.config.pluginmanager.has_plugin('nixtest-leak'); "
        "assert not hasattr(request.config.option, 'leak')",
    ),
    "pytest's plugins": (
        "import _pytest.config; _pytest.config.default_plugins += ('nixtest_leak',)",
        "import _pytest.config; assert 'nixtest_leak' not in _pytest.config.default_plugins",
    ),
}


def test_nothing_one_pytest_module_does_reaches_the_next(suite: Suite) -> None:
    files: dict[str, str] = {"leaky_helper.py": "COUNT = 0\n"}
    tests = []
    for n, (what, (change, check)) in enumerate(PYTEST_LEAKS.items()):
        for role, body in (("check-before", check), ("change", change), ("check", check)):
            name = f"test_{n}_{role.replace('-', '_')}"
            files[f"{name}.py"] = (
                f"# {what}\nimport json, logging, os, sys\n\n\ndef test_it(request):\n    {body}\n"
            )
            tests.append(f"  {n}-{role}: {{script: {name}.py, profile: [python3]}}\n")
    suite.package("python3", "tests:\n" + "".join(tests), files)
    code, output, pid = run(suite, "-j", "1")
    assert code == 0, output
    outcomes = junit_outcomes(suite.out)
    assert len(outcomes) == 3 * len(PYTEST_LEAKS) and set(outcomes.values()) == {"passed"}, outcomes


WARM_CHILD = """
import json, os, sys
from nixtest import driver
import _pytest.config

real = _pytest.config.get_config
driver.warm_up()
os.environ["WARM_ID"] = str(id(driver._WARM["pytest"]))
code = driver.main(["--spec", json.dumps(SPEC), "--result", sys.argv[1]])
assert _pytest.config.get_config is real, "pytest's get_config was left patched"
assert "pytest" not in driver._WARM, "the warm configuration is for one use"
sys.exit(code)
"""


def test_a_module_runs_on_the_zygotes_configuration_and_only_once(tmp_path: Path) -> None:
    module = tmp_path / "test_warm.py"
    module.write_text(
        textwrap.dedent(
            """
            import os
            import pytest


            def test_uses_the_warm_configuration(request):
                assert id(request.config) == int(os.environ["WARM_ID"])


            def test_a_nested_pytest_main_starts_from_nothing(request, tmp_path):
                (tmp_path / "test_inner.py").write_text("def test_inner(request):\\n    assert True\\n")
                seen = []

                class Spy:
                    def pytest_configure(self, config):
                        seen.append(id(config))

                args = [str(tmp_path / "test_inner.py"), "-p", "no:cacheprovider", "-q"]
                code = pytest.main(args, plugins=[Spy()])
                assert code == 0 and seen and seen[0] != id(request.config)
            """
        )
    )
    spec = {"package": "pkg", "test": "t", "kind": "pytest", "script": str(module), "secrets": []}
    result = tmp_path / "result.jsonl"
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"SPEC = {spec!r}\n{WARM_CHILD}", str(result)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    steps = [json.loads(line) for line in result.read_text().splitlines() if '"step"' in line]
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(s["message"], s["outcome"]) for s in steps] == [
        ("test_uses_the_warm_configuration", "passed"),
        ("test_a_nested_pytest_main_starts_from_nothing", "passed"),
    ]


def test_the_warm_up_holds_with_a_plugin_imported_before_it(tmp_path: Path) -> None:
    """As nixtest's own plugin is when nixtest is installed as a wheel: pytest would mark it
    for rewriting and warn that it is imported already; the zygote's warm-up must not fail."""
    site = tmp_path / "site"
    info = site / "fakeplug-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytest11]\nfakeplug = fakeplug\n")
    (info / "RECORD").write_text("fakeplug.py,,\nfakeplug-1.0.dist-info/METADATA,,\n")
    (site / "fakeplug.py").write_text("X = 1\n")
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "import fakeplug\n"
        "from nixtest import driver\n"
        "driver.warm_up()\n"
        "assert 'pytest' in driver._WARM, 'the warm-up fell back'\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_zygote_warms_pytest_up_and_freezes_its_heap(tmp_path: Path) -> None:
    """What each child inherits: pytest's first configuration, and a heap its collections skip."""
    code = (
        "import gc\n"
        "from nixtest import driver\n"
        "from nixtest.child import zygote\n"
        "zygote.warm_up()\n"
        "assert 'pytest' in driver._WARM, 'no warm configuration'\n"
        "assert gc.get_freeze_count() > 10000, gc.get_freeze_count()\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, env={}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
