"""Tools for the reliability tests, registered once on the default registry at import.

Each is a pure function of the state, ``ctx.params``, ``ctx.attempt`` and
``ctx.iteration``: tools run at least once, and a re-executed step must do what its
first execution did, so a run's outcome cannot depend on how often it was delivered.
Names start with ``rel_`` so they cannot collide with real tools.
"""

from __future__ import annotations

import asyncio

from engine import default_registry

#: How long a "slow" attempt sleeps; every node running a slow tool has a far smaller timeout.
SLOW_SLEEP_S = 5.0
#: Errors a failing tool can raise (retry/catch ``on`` lists name them).
ERRORS = {"ConnectionError": ConnectionError, "ValueError": ValueError, "KeyError": KeyError}


def _add(state, ctx) -> dict:
    key = ctx.params.get("key", "a")
    return {key: state.get(key, 0) + ctx.params.get("by", 1), "trail": [*state.get("trail", []), ctx.node]}


@default_registry.tool("rel_add")
async def rel_add(state, ctx):
    """Add ``params.by`` to ``state[params.key]`` and append this node to ``trail``."""
    return _add(state, ctx)


@default_registry.tool("rel_add_in_place")
async def rel_add_in_place(state, ctx):
    """Append this node to ``trail`` in place — not an update, so it is lost — and add
    ``params.by`` to ``state[params.key]`` (returned)."""
    if isinstance(state.get("trail"), list):
        state["trail"].append(ctx.node)
    key = ctx.params.get("key", "a")
    return {key: state.get(key, 0) + ctx.params.get("by", 1)}


@default_registry.tool("rel_add_sync")
def rel_add_sync(state, ctx):
    """:func:`rel_add` as a sync tool."""
    return _add(state, ctx)


@default_registry.tool("rel_flaky")
async def rel_flaky(state, ctx):
    """Raise ``params.error`` on attempts up to ``params.fail_times``, then add."""
    if ctx.attempt <= ctx.params.get("fail_times", 0):
        error = ERRORS[ctx.params.get("error", "ConnectionError")]
        raise error(f"{ctx.node} failed attempt {ctx.attempt} of iteration {ctx.iteration}")
    return {**_add(state, ctx), f"won_{ctx.node}": ctx.attempt}


@default_registry.tool("rel_slow")
async def rel_slow(state, ctx):
    """Sleep past the node's timeout on attempts up to ``params.slow_times``, then add."""
    if ctx.attempt <= ctx.params.get("slow_times", 0):
        await asyncio.sleep(SLOW_SLEEP_S)
    return _add(state, ctx)


@default_registry.tool("rel_noop")
async def rel_noop(state, ctx):
    """Return nothing: the state is unchanged."""
    return None


@default_registry.tool("rel_secret_echo")
async def rel_secret_echo(state, ctx):
    """Copy ``state['secret']`` into ``state['echo']``, or with ``params.fail`` raise an
    error that quotes it (the log-redaction tests)."""
    if ctx.params.get("fail"):
        raise ValueError(f"refusing {state.get('secret')}")
    return {"echo": state.get("secret")}


@default_registry.tool("rel_item")
async def rel_item(state, ctx):
    """A map item: ``item * 10 + index``; an item divisible by ``params.fail_every`` raises
    ``params.error`` on attempts up to ``params.fail_times``."""
    every = ctx.params.get("fail_every", 0)
    if every and ctx.item % every == 0 and ctx.attempt <= ctx.params.get("fail_times", 0):
        raise ERRORS[ctx.params.get("error", "ConnectionError")](
            f"item {ctx.index} failed attempt {ctx.attempt}"
        )
    return ctx.item * 10 + ctx.index


@default_registry.tool("rel_branch")
async def rel_branch(state, ctx):
    """A parallel branch: add ``params.by`` to ``state[params.key]`` (only that key),
    after raising ``params.error`` on attempts up to ``params.fail_times``."""
    if ctx.attempt <= ctx.params.get("fail_times", 0):
        raise ERRORS[ctx.params.get("error", "ConnectionError")](f"{ctx.node} failed attempt {ctx.attempt}")
    key = ctx.params.get("key", "a")
    return {key: state.get(key, 0) + ctx.params.get("by", 1)}
