"""Cold start: the handlers import only what their path needs (bench/cold_start.py times it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ENV = {
    "FLOWFORGE_TABLE": "flowforge-test",
    "FLOWFORGE_STEP_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/flowforge-test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Loaded by a handler's first message when it needs them, never by the import.
DEFERRED = ("engine.model", "engine.validate", "engine.runner")
#: Needed by no handler: Powertools loads them when pydantic is imported before its batch utility.
UNUSED = ("aws_lambda_powertools.utilities.parser.models",)


def loaded_after_import(module: str, candidates: tuple[str, ...]) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps([m for m in {candidates!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **ENV}, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)


def test_the_step_handler_imports_no_graph_model_runner_or_parser_models():
    # GIVEN a fresh interpreter with a function's environment
    # WHEN the step handler is imported
    loaded = loaded_after_import("functions.step.app", DEFERRED + UNUSED)

    # THEN the graph model waits for the first message, and unused event models never load
    assert loaded == []


def test_handlers_that_never_compile_a_graph_do_not_load_pydantic_models_for_it():
    for module in ("functions.sweeper.app", "functions.dlq.app"):
        assert loaded_after_import(module, DEFERRED + UNUSED) == [], module
