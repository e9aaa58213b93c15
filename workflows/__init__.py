"""Example workflows: importing this package registers their tools and conditions.

``workflows/graphs/`` holds each workflow's graph definition and an example initial state.
"""

from workflows import llm, summarization, summarization_llm

__all__ = ["llm", "summarization", "summarization_llm"]
