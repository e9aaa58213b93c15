"""Tools for the e2e tests, loaded by the local stack via FLOWFORGE_TOOLS_MODULES.

Names start with ``e2e_`` so they cannot collide with real tools.
"""

from __future__ import annotations

import asyncio

from engine import tool


@tool
async def e2e_nap(state, ctx):
    """Sleep ``params.seconds`` (a slow tool to cancel, or to kill the stack under)."""
    await asyncio.sleep(float(ctx.params.get("seconds", 1)))
    return {"naps": state.get("naps", 0) + 1}


@tool
async def e2e_mark(state, ctx):
    """Record which node ran, in order."""
    return {"marks": [*state.get("marks", []), ctx.node]}
