"""The abstractive variant of the summarization example: LLM nodes write the summary.

``graphs/summarization_llm.json`` runs split → summarize (a ``map`` of the ``llm`` tool
over ``chunks``: one model call per chunk) → merge → refine (the ``llm`` tool again,
repeated until ``length_ok``). It reuses ``split_text`` and ``length_ok`` from
:mod:`workflows.summarization`, and takes the same state: ``text``, optionally
``chunk_size`` and ``target_length``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine import ToolContext, tool


@tool
async def merge_answers(state: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Join the map's answers (``chunk_summaries``: one text per chunk, in chunk order)
    into ``summary``, one paragraph each; empty answers are left out."""
    answers = state.get("chunk_summaries")
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise ValueError("chunk_summaries must be the list of texts the summarize map wrote")
    return {"summary": "\n\n".join(a.strip() for a in answers if a.strip())}
