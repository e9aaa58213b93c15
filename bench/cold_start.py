"""Cold start: how long importing each Lambda handler takes in a fresh interpreter,
next to ``import boto3`` alone, plus the heaviest imports of the step handler.

Each sample is one new ``python -c`` process timing its own ``import``, so interpreter
start-up is left out and only the handler's import is counted. Figures are the CPU time
the import took (on a small shared machine wall-clock time measures the neighbours too);
the wall-clock median is in each note. Processes run in a rotating order within each
repetition and ratios pair the samples of one repetition. Handlers that do not import
(yet) are reported as not available and picked up as soon as they do.

A cold start also pays for what the first message needs besides the imports, and code
deferred to first use moves cost there rather than removing it. So the step handler is
also timed through its first message without I/O (imports, boto3 clients, the service,
parsing a step message, loading the stored summarization graph as ``RunService.compiled``
does), next to boto3 with the same two clients; and the API handler through its first
request, a background ``POST /graph/run`` (imports, the service, request validation, the
run's first step message) with in-memory storage.

Modules are imported from compiled bytecode, as a deployed function's are: its package
ships each source with its ``.pyc`` (``make build-<Function>``), while a Lambda's code
directory is read-only, so without them every cold start would compile the sources again.
The interpreters here write their ``.pyc`` files under a cache directory of the
benchmark's own (:data:`PYCACHE`, as ``PYTHONPYCACHEPREFIX``), whatever
``PYTHONDONTWRITEBYTECODE`` says, and every subject is imported once before anything is
timed.

The heaviest imports come from ``-X importtime``, which reports wall-clock times: read
them relative to each other.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from bench.figure import Figure, Target, format_number, ratios

NAME = "coldstart"
ROOT = Path(__file__).resolve().parents[1]
STEP = "functions.step.app"
API = "functions.api.app"
HANDLERS = (
    STEP,
    API,
    "functions.dlq.app",
    "functions.sweeper.app",
    "functions.ws.app",
    "functions.broadcast.app",
)
BASELINE = "boto3"
RUNS, QUICK_RUNS = 12, 5
IMPORTTIME_RUNS, QUICK_IMPORTTIME_RUNS = 5, 2
TOP = 10
RATIO_TARGET = Target("<=", 1.5)
#: What a deployed function has in its environment; imports must not need more.
ENV = {
    "FLOWFORGE_TABLE": "flowforge-bench",
    "FLOWFORGE_STEP_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/flowforge-bench",
    "FLOWFORGE_WS_ENDPOINT": "https://abc123.execute-api.us-east-1.amazonaws.com/bench",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_TIMER = (
    "import time\nw, c = time.perf_counter(), time.process_time()\n{}\n"
    "print(time.perf_counter() - w, time.process_time() - c)"
)
#: What a cold boto3 user pays before its first request: the import and its clients.
BOTO3_CLIENTS = "boto3 + clients"
_BOTO3_CLIENTS = "import boto3; s = boto3.session.Session(); s.client('dynamodb'); s.client('sqs')"
#: The step handler through its first message, minus the AWS round trips.
STEP_FIRST = "functions.step.app first message (no I/O)"
_STEP_FIRST = (
    "import json, functions.step.app; from functions import runtime; "
    "from engine.service import load_stored_graph; "
    "from engine.stepmessage import StepMessage; app = runtime.current_app(); service = app.service; "
    "app.clients('dynamodb'); app.clients('sqs'); "
    'StepMessage.from_json(\'{"run_id": "r1", "step": 0}\'); '
    "load_stored_graph(json.load(open('workflows/graphs/summarization.json')), service.registry)"
)
#: The API handler through its first request: a background ``POST /graph/run`` of a stored
#: graph, with the deployed wiring but in-memory storage (``response`` is its answer).
API_FIRST_REQUEST = textwrap.dedent(
    """
    import json, types
    import functions.api.app as api
    from engine.memory import InMemoryRunStore, InMemoryStepQueue
    from engine.ports import GraphRecord
    from functions import runtime

    service = runtime.current_app().service
    service.store, service.queue = InMemoryRunStore(), InMemoryStepQueue()
    graph = json.load(open("workflows/graphs/summarization.json"))
    service.store.put_graph(GraphRecord("g1", graph, "2025-01-01T00:00:00.000Z", graph.get("name")))
    event = json.load(open("tests/events/api_http_v2.json"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/graph/run"
    event["requestContext"]["http"]["method"] = "POST"
    event["body"] = json.dumps({"graph_id": "g1", "state": {"text": "Hello."}, "background": True})
    context = types.SimpleNamespace(
        function_name="ApiFunction", memory_limit_in_mb=512, aws_request_id="req-1",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:ApiFunction",
    )
    response = api.handler(event, context)
    """
)
API_FIRST = "functions.api.app first request (no I/O)"
SNIPPETS = {BOTO3_CLIENTS: _BOTO3_CLIENTS, STEP_FIRST: _STEP_FIRST, API_FIRST: API_FIRST_REQUEST}


class NotImportable(Exception):
    """The module fails to import in a fresh interpreter (absent or still being written)."""


#: Where the timed interpreters keep their compiled bytecode (checked against the sources'
#: timestamps as usual, so it may outlive a run).
PYCACHE = Path(tempfile.gettempdir()) / "flowforge-bench-pycache"


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def import_seconds(modules: str) -> tuple[float, float]:
    """(wall-clock, CPU) seconds a fresh interpreter spends on ``import <modules>``, or on
    one of the :data:`SNIPPETS` when ``modules`` names it."""
    done = _python("-c", _TIMER.format(SNIPPETS.get(modules, f"import {modules}")))
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise NotImportable(lines[-1])
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def handlers() -> list[str]:
    """The known handlers, then any other ``functions/<name>/app.py`` that appeared."""
    found = sorted(f"functions.{p.parent.name}.app" for p in (ROOT / "functions").glob("*/app.py"))
    return [*HANDLERS, *(m for m in found if m not in HANDLERS)]


def parse_importtime(stderr: str) -> list[tuple[str, int, int, int]]:
    """``-X importtime`` lines as (module, depth, self µs, cumulative µs)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((name.strip(), depth, int(self_us), int(cumulative_us)))
    return rows


def heaviest_imports(module: str, runs: int) -> dict[str, Any]:
    """The ``TOP`` imports of ``module`` by cumulative and by self time (medians, ms)."""
    per_module: dict[str, dict[str, list[float]]] = {}
    depth_of: dict[str, int] = {}
    # -X importtime also reports what the interpreter imports at start-up (site, ...).
    startup = {row[0] for row in parse_importtime(_python("-X", "importtime", "-c", "pass").stderr)}
    for _ in range(runs):
        done = _python("-X", "importtime", "-c", f"import {module}")
        if done.returncode != 0:
            raise NotImportable(done.stderr.strip().splitlines()[-1])
        for name, depth, self_us, cumulative_us in parse_importtime(done.stderr):
            if name in startup:
                continue
            times = per_module.setdefault(name, {"self": [], "cumulative": []})
            times["self"].append(self_us / 1000)
            times["cumulative"].append(cumulative_us / 1000)
            depth_of[name] = depth
    medians = {
        name: {key: statistics.median(values) for key, values in times.items()}
        for name, times in per_module.items()
        if name != module
    }

    def top(key: str) -> list[dict[str, Any]]:
        ranked = sorted(medians.items(), key=lambda item: item[1][key], reverse=True)[:TOP]
        return [
            {
                "module": name,
                "depth": depth_of[name],
                "cumulative_ms": round(t["cumulative"], 2),
                "self_ms": round(t["self"], 2),
            }
            for name, t in ranked
        ]

    return {
        "importtime_runs": runs,
        "imports_boto3": BASELINE in per_module,
        "top_imports_cumulative": top("cumulative"),
        "top_imports_self": top("self"),
    }


def run(quick: bool) -> list[Figure]:
    subjects: list[str] = [BASELINE]
    missing: dict[str, str] = {}
    for module in handlers():
        try:
            import_seconds(module)
        except NotImportable as exc:
            missing[module] = str(exc)
            print(f"   {module}: not available ({exc})")
            continue
        subjects.append(module)
    step_with_boto3 = f"{STEP}, {BASELINE}"
    if STEP in subjects:
        subjects += [step_with_boto3, BOTO3_CLIENTS, STEP_FIRST]
    if API in subjects:
        subjects.append(API_FIRST)
    for subject in subjects:
        import_seconds(subject)  # writes the .pyc files before anything is timed

    cpu: dict[str, list[float]] = {s: [] for s in subjects}
    wall: dict[str, list[float]] = {s: [] for s in subjects}
    for rep in range(QUICK_RUNS if quick else RUNS):
        shift = rep % len(subjects)
        for subject in subjects[shift:] + subjects[:shift]:
            wall_s, cpu_s = import_seconds(subject)
            cpu[subject].append(cpu_s * 1000)
            wall[subject].append(wall_s * 1000)

    def imported(subject: str, details: dict[str, Any] | None = None) -> Figure:
        name = subject if subject in SNIPPETS else f"import {subject.replace(', ', ' + ')}"
        note = f"wall-clock {format_number(statistics.median(wall[subject]))} ms"
        return Figure(NAME, name, "ms", cpu[subject], note=note, details=details or {})

    def ratio(top: str, bottom: str, target: Target | None = None, note: str = "") -> Figure:
        shown = f"({top.replace(', ', ' + ')})" if ", " in top else top
        return Figure(NAME, f"{shown} ÷ {bottom}", "x", ratios(cpu[top], cpu[bottom]), target, note)

    figures = [imported(BASELINE)]
    for module in handlers():
        if module in missing:
            figures.append(Figure(NAME, f"import {module}", "ms", (), note="not available"))
        elif module in (STEP, API):
            runs = QUICK_IMPORTTIME_RUNS if quick else IMPORTTIME_RUNS
            figures.append(imported(module, heaviest_imports(module, runs)))
        else:
            figures.append(imported(module))
    if STEP in cpu:
        figures += [
            imported(step_with_boto3),
            ratio(STEP, BASELINE, RATIO_TARGET),
            ratio(
                step_with_boto3,
                BASELINE,
                RATIO_TARGET,
                "boto3 is imported on the first request, so a cold start pays both",
            ),
            imported(BOTO3_CLIENTS),
            imported(STEP_FIRST),
            ratio(
                STEP_FIRST,
                BOTO3_CLIENTS,
                note="the whole cold start but the round trips: imports deferred to first use count here",
            ),
        ]
    if API in cpu:
        figures += [
            ratio(API, BASELINE, RATIO_TARGET),
            imported(API_FIRST),
            ratio(
                API_FIRST,
                BASELINE,
                note="what a cold background POST /graph/run costs but its round trips (it builds no client)",
            ),
        ]
    return figures
