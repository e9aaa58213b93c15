"""LLM nodes on the local stack: the summarization_llm example answered by its Bedrock
stand-in, through the real handlers, queue and table."""

from __future__ import annotations

import json

import aiohttp

from tests.e2e.test_local_stack import ROOT, SUMMARIZATION_STATE, call, create, run

SUMMARIZATION_LLM = json.loads((ROOT / "workflows" / "graphs" / "summarization_llm.json").read_text())


def test_the_llm_summarization_runs_on_the_stand_in_and_logs_usage(stack):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            # GIVEN the abstractive example, its llm nodes answered by the local Bedrock stand-in
            graph_id = await create(session, stack, SUMMARIZATION_LLM)

            # WHEN it runs on the example's text
            status, result = await call(
                session,
                "POST",
                f"{stack.url}/graph/run",
                {"graph_id": graph_id, "state": SUMMARIZATION_STATE},
            )
        return status, result

    status, result = run(scenario(), timeout=60)

    # THEN the summary fits, each chunk got one model answer, the refine loop shortened it
    assert status == 200, result
    assert result["status"] == "completed", result.get("error")
    state = result["state"]
    assert 0 < len(state["summary"]) <= SUMMARIZATION_STATE["target_length"]
    assert len(state["chunk_summaries"]) == len(state["chunks"])
    assert all(isinstance(answer, str) and answer for answer in state["chunk_summaries"])
    logs = result["logs"]
    calls = [e for e in logs if e["node"] == "refine" or "index" in e]
    assert [e["node"] for e in logs if "index" not in e][:3] == ["split", "summarize", "merge"]
    # and every model call's log entry says what it used and why it stopped
    for entry in calls:
        notes = entry["notes"]
        assert notes["model_id"] == "anthropic.claude-3-haiku-20240307-v1:0"
        usage = notes["usage"]
        assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0
        assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
        assert notes["stopReason"] in ("end_turn", "max_tokens")
