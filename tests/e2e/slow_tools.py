"""Tools for the e2e tests, loaded by the local stack via FLOWFORGE_TOOLS_MODULES.

Names start with ``e2e_`` so they cannot collide with real tools.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

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


@tool
async def e2e_gate(state, ctx):
    """Wait until the file ``params.path`` exists (at most ``params.timeout_s``, 30 s):
    a step that finishes when the test says so."""
    path = Path(ctx.params["path"])
    for _ in range(int(float(ctx.params.get("timeout_s", 30)) / 0.05)):
        if path.exists():
            return {"gate": path.name}
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{path} never appeared")


@tool
async def e2e_explode(state, ctx):
    """Always fails with ``params.message``."""
    raise RuntimeError(ctx.params.get("message", "exploded"))
