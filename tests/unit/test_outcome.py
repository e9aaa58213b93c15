"""What the CLI prints about a run: the outcome and the keys the run changed, not the whole state."""

from __future__ import annotations

from flowforge.outcome import SHOWN_KEYS, changed_keys, cost_line, dollars, outcome_line, run_summary

TEXT = "A long document. " * 500


def view(**changes):
    run = {
        "run_id": "r1",
        "status": "completed",
        "step": 3,
        "error": None,
        "current_node": None,
        "state": {"text": TEXT, "chunk_size": 500, "chunks": ["a", "b"], "summary": "Short.", "n": 2},
        "logs": [
            {"seq": 0, "node": "split", "result": {"chunks": ["a", "b"]}},
            {"seq": 1, "node": "merge", "result": {"summary": "Longer summary.", "n": 1}},
            {"seq": 2, "node": "refine", "result": {"summary": "Short.", "n": 2}},
        ],
    }
    return {**run, **changes}


def test_the_summary_is_the_outcome_and_the_changed_keys_not_the_input():
    # GIVEN a finished run whose state holds a long input text
    # WHEN it is summarized
    lines = run_summary(view()).splitlines()

    # THEN the outcome comes first, then the keys the steps wrote (latest first), and the
    # input is counted, not printed
    assert lines[0] == "completed (3 steps)  [run r1]"
    assert lines[1:4] == ['  summary = "Short."', "  n = 2", '  chunks = ["a","b"]']
    assert lines[4] == "  (2 unchanged input keys; --full prints the whole run)"
    assert TEXT[:40] not in "\n".join(lines)


def test_a_failed_run_shows_where_and_why():
    error = {"node": "refine", "type": "ValueError", "message": "bad"}
    assert run_summary(view(status="failed", error=error)).splitlines()[0] == (
        "failed at node 'refine': ValueError: bad (3 steps)  [run r1]"
    )


def test_a_cancelled_run_names_no_node():
    error = {"node": None, "type": "Cancelled", "message": "run cancelled by request"}
    assert (
        outcome_line({"status": "cancelled", "error": error}, 2)
        == "cancelled: run cancelled by request (2 steps)"
    )


def test_a_running_run_shows_its_node():
    assert (
        outcome_line({"status": "running", "current_node": "refine"}, 4)
        == "running at node 'refine' (4 steps)"
    )


def test_keys_of_an_oversized_update_come_from_its_marker_and_long_lists_are_cut():
    logs = [{"result": {"_truncated": True, "bytes": 99_999, "keys": ["big"]}}]
    logs += [{"result": {f"k{i}": i}} for i in range(SHOWN_KEYS + 2)]
    state = {"big": "x" * 1000, **{f"k{i}": i for i in range(SHOWN_KEYS + 2)}}
    assert changed_keys(logs)[-1] == "big"
    lines = run_summary(view(state=state, logs=logs)).splitlines()
    assert len(lines) == 1 + SHOWN_KEYS + 1
    assert lines[-1] == "  (3 more changed keys; --full prints the whole run)"


def test_the_summary_ends_with_the_runs_cost_estimate():
    # GIVEN a run whose view carries its cost (GET /graph/state)
    cost = {
        "usd": 1.12e-05,
        "estimate": True,
        "breakdown": {
            "lambda": {"requests": 1.0, "gb_seconds": 0.0015, "usd": 1.3e-06},
            "sqs": {"requests": 5.0, "usd": 2e-06},
            "dynamodb": {"read_units": 1, "write_units": 12, "usd": 7.9e-06},
            "s3": {"put_requests": 0, "get_requests": 0, "bytes": 0, "usd": 0.0},
            "bedrock": {"models": {}, "usd": 0.0},
        },
    }
    # WHEN it is summarized, THEN the last line says what it cost, that it is an estimate,
    # and the services that cost something
    assert run_summary({**view(), "cost": cost}).splitlines()[-1] == (
        "  cost ≈ $0.0000112, an estimate (Lambda $0.0000013, SQS $0.000002, DynamoDB $0.0000079)"
    )
    assert cost_line({"usd": 0, "breakdown": {}}) == "cost ≈ $0, an estimate"
    assert [dollars(x) for x in (1.25, 0.0123, 123.4)] == ["$1.25", "$0.0123", "$123.40"]
