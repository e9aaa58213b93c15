"""The ``flowforge`` command line: exit codes, output, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine import default_registry
from flowforge import cli
from flowforge.cli import main

REPO = Path(__file__).resolve().parents[2]

TOOLS_MODULE = textwrap.dedent(
    '''
    """Tools a user keeps next to their graph."""
    from engine import condition, tool


    @tool
    def greet(state, ctx):
        """Say hello to state['name']."""
        return {"greeting": f"hello {state['name']}"}


    @tool
    def explode(state, ctx):
        raise ValueError("boom")


    @tool
    def flaky(state, ctx):
        if ctx.attempt == 1:
            raise ConnectionError("try again")
        return {"attempts": ctx.attempt}


    @condition
    def greeted(state):
        return "greeting" in state
    '''
)

HELLO = {
    "name": "hello",
    "start": "greet",
    "nodes": {
        "greet": {"fn": "greet", "branches": [{"when": "greeted", "next": "done"}]},
        "done": {"fn": "greet"},
    },
}
FAILING = {"start": "a", "nodes": {"a": {"fn": "greet", "next": "b"}, "b": {"fn": "explode"}}}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temporary current directory holding ``my_tools.py``; each test starts clean.

    Tools the test registers on the default registry, and modules it imports from
    ``tmp_path``, are forgotten afterwards, so the next test can define them again.
    """
    monkeypatch.setattr(sys, "path", list(sys.path))
    cli.import_tools()  # the default package's tools stay registered for everyone
    monkeypatch.setattr(default_registry, "_tools", dict(default_registry._tools))
    monkeypatch.setattr(default_registry, "_conditions", dict(default_registry._conditions))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_tools.py").write_text(TOOLS_MODULE)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", "")).startswith(str(tmp_path)):
            del sys.modules[name]


def write_json(path: Path, data: object) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def one_line_error(err: str) -> str:
    """The single stderr line a usage error produces (and no traceback)."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- validate -----------------------------------------------------------------------------


def test_validate_a_valid_graph(workdir, capsys):
    # GIVEN a valid graph using tools from a --tools module
    graph = write_json(workdir / "hello.json", HELLO)

    # WHEN it is validated
    code = main(["validate", graph, "--tools", "my_tools"])

    # THEN it says ok with the graph's name and node count
    out, err = capsys.readouterr()
    assert (code, out, err) == (0, "ok: hello (2 nodes)\n", "")


def test_validate_names_an_unnamed_graph_after_its_file(workdir, capsys):
    graph = write_json(workdir / "greeting.json", {"start": "a", "nodes": {"a": {"fn": "greet"}}})

    assert main(["validate", graph, "--tools", "my_tools"]) == 0
    assert capsys.readouterr().out == "ok: greeting (1 node)\n"


def test_validate_lists_every_problem_on_stderr(workdir, capsys):
    # GIVEN a graph with three mistakes
    broken = json.loads(json.dumps(HELLO))
    broken["start"] = "gret"
    broken["nodes"]["greet"]["fn"] = "greeet"
    broken["nodes"]["done"]["next"] = "nowhere"
    graph = write_json(workdir / "broken.json", broken)

    # WHEN it is validated
    code = main(["validate", graph, "--tools", "my_tools"])

    # THEN it exits 2 with one "path: message" line per problem
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        "start: unknown node 'gret' (did you mean 'greet'?)",
        "nodes.greet.fn: unknown tool 'greeet' (did you mean 'greet'?)",
        "nodes.done.next: unknown node 'nowhere'",
    ]


def test_validate_uses_the_workflows_package_by_default(workdir, capsys):
    # GIVEN the example graph, whose tools live in the workflows package
    graph = REPO / "workflows" / "graphs" / "summarization.json"
    if not graph.exists():
        pytest.skip("the example workflow is not in this checkout")

    # WHEN it is validated without --tools
    code = main(["validate", str(graph)])

    # THEN the default package's tools were loaded
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("ok: summarization (")


def test_a_graph_naming_tools_that_were_not_loaded_is_invalid(workdir, capsys):
    graph = write_json(workdir / "hello.json", HELLO)

    assert main(["validate", graph]) == 2
    assert "nodes.greet.fn: unknown tool 'greet'" in capsys.readouterr().err


# -- run-local ----------------------------------------------------------------------------


def test_run_local_prints_the_run_as_json_and_exits_0(workdir, capsys):
    # GIVEN a graph and an inline JSON state
    graph = write_json(workdir / "hello.json", HELLO)

    # WHEN it runs locally
    code = main(["run-local", graph, "--state", '{"name": "kim"}', "--tools", "my_tools"])

    # THEN the whole result is printed as JSON and the exit code says it completed
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert list(result) == ["status", "state", "logs", "error", "run_id"]
    assert result["status"] == "completed"
    assert result["state"] == {"name": "kim", "greeting": "hello kim"}
    assert [(log["seq"], log["node"], log["next"]) for log in result["logs"]] == [
        (0, "greet", "done"),
        (1, "done", None),
    ]
    assert result["error"] is None
    assert out.startswith('{\n  "status": "completed"')  # indented by 2


def test_run_local_reads_the_state_from_a_file(workdir, capsys):
    graph = write_json(workdir / "hello.json", HELLO)
    state = write_json(workdir / "state.json", {"name": "ana"})

    assert main(["run-local", graph, "--state", state, "--tools", "my_tools"]) == 0
    assert json.loads(capsys.readouterr().out)["state"]["greeting"] == "hello ana"


def test_run_local_exits_1_when_the_run_fails(workdir, capsys):
    # GIVEN a graph whose second node raises
    graph = write_json(workdir / "failing.json", FAILING)

    # WHEN it runs
    code = main(["run-local", graph, "--state", '{"name": "kim"}', "--tools", "my_tools"])

    # THEN the result says where and why, and the exit code is 1
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["status"] == "failed"
    assert result["error"] == {"node": "b", "type": "ValueError", "message": "boom"}
    assert result["state"] == {"name": "kim", "greeting": "hello kim"}


def test_run_local_pretty_prints_a_table_the_state_and_a_status_line(workdir, capsys):
    # GIVEN a graph that completes
    graph = write_json(workdir / "hello.json", HELLO)

    # WHEN it runs with --pretty
    code = main(["run-local", graph, "--state", '{"name": "zoë"}', "--tools", "my_tools", "--pretty"])

    # THEN a table of the log, the final state as JSON and a status line are printed
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["seq", "node", "attempt", "status", "duration_ms", "next"]
    assert lines[1].split()[:4] == ["0", "greet", "1", "ok"]
    assert lines[1].split()[-1] == "done"
    assert lines[2].split()[:4] == ["1", "done", "1", "ok"]
    assert lines[2].split()[-1] == "-"
    assert lines[4] == "state:"
    state_text = out[out.index("state:\n") + len("state:\n") : out.rindex("\n\n")]
    assert json.loads(state_text) == {"name": "zoë", "greeting": "hello zoë"}
    assert "zoë" in state_text  # readable, not \u-escaped
    assert lines[-1].startswith("completed (2 steps, run ")


def test_run_local_pretty_reports_the_failure(workdir, capsys):
    graph = write_json(workdir / "failing.json", FAILING)

    code = main(["run-local", graph, "--state", '{"name": "kim"}', "--tools", "my_tools", "--pretty"])

    last = capsys.readouterr().out.splitlines()[-1]
    assert code == 1
    assert last.startswith("failed at node 'b': ValueError: boom (2 steps, run ")


def test_run_local_without_state_starts_from_an_empty_object(workdir, capsys):
    graph = write_json(workdir / "failing.json", FAILING)

    assert main(["run-local", graph, "--tools", "my_tools"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["type"] == "KeyError"


def _retrying_graph(workdir: Path, interval_s: float) -> str:
    node = {"fn": "flaky", "retry": {"max_attempts": 2, "interval_s": interval_s}}
    return write_json(workdir / "retry.json", {"start": "a", "nodes": {"a": node}})


def test_run_local_waits_for_retry_delays_unless_no_sleep(workdir, capsys):
    # GIVEN a node that fails once and is retried after a delay
    # WHEN it runs without --no-sleep
    started = time.perf_counter()
    code = main(["run-local", _retrying_graph(workdir, 0.2), "--tools", "my_tools"])

    # THEN the delay is waited and the retry succeeds
    assert time.perf_counter() - started >= 0.2
    assert code == 0
    assert json.loads(capsys.readouterr().out)["state"] == {"attempts": 2}


def test_run_local_no_sleep_skips_retry_delays(workdir, capsys):
    # GIVEN a retry delay of ten minutes
    graph = _retrying_graph(workdir, 600)

    # WHEN it runs with --no-sleep
    started = time.perf_counter()
    code = main(["run-local", graph, "--tools", "my_tools", "--no-sleep"])

    # THEN it finishes at once
    assert time.perf_counter() - started < 60
    assert code == 0


def test_run_local_with_an_invalid_graph_lists_the_problems(workdir, capsys):
    graph = write_json(workdir / "bad.json", {"start": "a", "nodes": {"a": {"fn": "greet", "next": "b"}}})

    assert main(["run-local", graph, "--tools", "my_tools"]) == 2
    assert capsys.readouterr().err == "nodes.a.next: unknown node 'b'\n"


# -- usage errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["validate", "missing.json"], "flowforge validate: error: graph file 'missing.json': no such file"),
        (
            ["validate", "not_json.json"],
            "flowforge validate: error: graph file 'not_json.json': invalid JSON: "
            "Expecting property name enclosed in double quotes (line 1, column 3)",
        ),
        (["validate", "."], "flowforge validate: error: graph file '.': Is a directory"),
        (
            ["run-local", "hello.json", "--tools", "my_tools", "--state", "{name: 1}"],
            "flowforge run-local: error: --state: invalid JSON: "
            "Expecting property name enclosed in double quotes (line 1, column 2)",
        ),
        (
            ["run-local", "hello.json", "--tools", "my_tools", "--state", "nope.json"],
            "flowforge run-local: error: --state file 'nope.json': no such file",
        ),
        (
            ["run-local", "hello.json", "--tools", "my_tools", "--state", "[1, 2]"],
            "flowforge run-local: error: --state: must be a JSON object, not list",
        ),
        (
            ["run-local", "hello.json", "--tools", "my_tools", "--state", "not_json.json"],
            "flowforge run-local: error: --state file 'not_json.json': invalid JSON: "
            "Expecting property name enclosed in double quotes (line 1, column 3)",
        ),
        (
            ["run-local", "hello.json", "--tools", "my_tools", "--state", '{"name": {"first": "k\\ud800"}}'],
            "flowforge run-local: error: --state: name.first: not valid UTF-8 text "
            "(lone surrogate U+D800 at character 1)",
        ),
        (
            ["redrive", "r1", "--patch", "[1, 2]"],
            "flowforge redrive: error: --patch: must be a JSON object, not list",
        ),
        (
            ["redrive", "r1", "--patch", "nope.json"],
            "flowforge redrive: error: --patch file 'nope.json': no such file",
        ),
        (
            ["validate", "surrogate.json", "--tools", "my_tools"],
            "flowforge validate: error: graph file 'surrogate.json': nodes.\\udfff: "
            "key is not valid UTF-8 text (lone surrogate U+DFFF at character 0)",
        ),
        (
            ["validate", "hello.json", "--tools", "no_such_module"],
            "flowforge validate: error: no tools module 'no_such_module' in the current "
            "directory or on PYTHONPATH",
        ),
        (
            ["validate", "hello.json", "--tools", "broken_tools"],
            "flowforge validate: error: cannot import tools module 'broken_tools': "
            "ZeroDivisionError: division by zero",
        ),
        (
            ["validate", "hello.json", "--tools", "needs_dep"],
            "flowforge validate: error: cannot import tools module 'needs_dep': "
            "No module named 'some_missing_dependency'",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(workdir, capsys, argv, message):
    # GIVEN a directory with a valid graph, a file that is not JSON and broken modules
    write_json(workdir / "hello.json", HELLO)
    (workdir / "not_json.json").write_text("{ oops }")
    (workdir / "surrogate.json").write_text('{"start": "a", "nodes": {"\\udfff": {"fn": "greet"}}}')
    (workdir / "broken_tools.py").write_text("1 / 0\n")
    (workdir / "needs_dep.py").write_text("import some_missing_dependency\n")

    # WHEN the command is given bad input
    code = main(argv)

    # THEN it exits 2 with one line on stderr and nothing on stdout
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert one_line_error(err) == message


def test_an_initial_state_over_the_cap_is_a_usage_error(workdir, capsys):
    # GIVEN a state whose values each stay in it (under the 32 KiB offload threshold),
    # 300 KB together: the cap applies to what the state holds inline
    graph = write_json(workdir / "hello.json", HELLO)
    state = write_json(workdir / "big.json", {f"k{i}": "x" * 20_000 for i in range(15)})

    assert main(["run-local", graph, "--state", state, "--tools", "my_tools"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("flowforge run-local: error: --state: state is ")
    assert line.endswith("bytes serialized; the limit is 262144")


def test_a_tools_module_registering_a_taken_name_is_a_usage_error(workdir, capsys):
    # GIVEN a second module that registers "greet" again
    (workdir / "more_tools.py").write_text(TOOLS_MODULE)
    graph = write_json(workdir / "hello.json", HELLO)

    # WHEN both are loaded
    code = main(["validate", graph, "--tools", "my_tools", "--tools", "more_tools"])

    # THEN the clash is reported in one line
    assert code == 2
    assert "tool 'greet' is already registered" in one_line_error(capsys.readouterr().err)


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "usage: flowforge" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "run-local" in out
    assert "validate" in out


# -- the installed entry point ------------------------------------------------------------


def test_the_installed_flowforge_command(tmp_path):
    # GIVEN the console script installed into the virtualenv, and a user's directory
    flowforge = Path(sys.executable).parent / "flowforge"
    (tmp_path / "my_tools.py").write_text(TOOLS_MODULE)
    write_json(tmp_path / "hello.json", HELLO)
    write_json(tmp_path / "failing.json", FAILING)

    def flowforge_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(flowforge), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    # WHEN it validates and runs graphs there
    valid = flowforge_run("validate", "hello.json", "--tools", "my_tools")
    completed = flowforge_run("run-local", "hello.json", "--state", '{"name": "kim"}', "--tools", "my_tools")
    failed = flowforge_run("run-local", "failing.json", "--state", '{"name": "kim"}', "--tools", "my_tools")
    missing = flowforge_run("validate", "missing.json")

    # THEN it behaves like main(): exit codes 0, 0, 1 and 2
    assert (valid.returncode, valid.stdout) == (0, "ok: hello (2 nodes)\n"), valid.stderr
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["state"]["greeting"] == "hello kim"
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["message"] == "boom"
    assert missing.returncode == 2
    assert one_line_error(missing.stderr) == (
        "flowforge validate: error: graph file 'missing.json': no such file"
    )


def test_the_bin_flowforge_shim_runs_the_checkouts_cli_from_anywhere(tmp_path):
    # GIVEN the repository's bin/flowforge (what the README's examples call), and a
    # user's directory elsewhere
    shim = Path(__file__).resolve().parents[2] / "bin" / "flowforge"
    write_json(tmp_path / "hello.json", {"start": "a", "nodes": {"a": {"fn": "no_such_tool"}}})

    # WHEN it is run from there
    helped = subprocess.run([str(shim), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    checked = subprocess.run(
        [str(shim), "validate", "hello.json"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )

    # THEN it is the flowforge command, exit codes included
    assert helped.returncode == 0 and "run-local" in helped.stdout
    assert checked.returncode == 2 and "unknown tool 'no_such_tool'" in checked.stderr
