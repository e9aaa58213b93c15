"""Example workflows: importing this package registers their tools and conditions.

``workflows/graphs/`` holds each workflow's graph definition and an example initial state.
"""

from workflows import approval, llm, summarization, summarization_llm

__all__ = ["approval", "llm", "summarization", "summarization_llm"]
