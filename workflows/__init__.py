"""Example workflows: importing this package registers their tools and conditions.

``workflows/graphs/`` holds each workflow's graph definition and an example initial state.
"""

from workflows import summarization

__all__ = ["summarization"]
