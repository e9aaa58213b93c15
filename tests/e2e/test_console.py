"""The web console in a real browser (headless Chromium) against the local stack."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from playwright.sync_api import expect, sync_playwright

from flowforge.local.process import free_port
from tests.e2e.browser import VIEWPORT, PageErrors, launch
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

SUMMARIZATION = json.loads((ROOT / "workflows" / "graphs" / "summarization.json").read_text())
SUMMARIZATION_STATE = json.loads((ROOT / "workflows" / "graphs" / "summarization.state.json").read_text())
#: How long a page may take to show what the stack did: generous, as the machine may be
#: busy (a wait for behaviour, not a speed check).
LIVE_TIMEOUT_MS = 60_000
expect.set_options(timeout=LIVE_TIMEOUT_MS)


#: A graph whose one node fails with a message the pages must show.
EXPLODING = {
    "name": "exploding",
    "start": "boom",
    "nodes": {"boom": {"fn": "e2e_explode", "params": {"message": "the fuse was lit"}}},
}


def gated(path) -> dict:
    """before → gate (finishes once ``path`` exists) → after."""
    return {
        "name": "gated",
        "start": "before",
        "nodes": {
            "before": {"fn": "e2e_mark", "next": "gate"},
            "gate": {"fn": "e2e_gate", "params": {"path": str(path), "timeout_s": 300}, "next": "after"},
            "after": {"fn": "e2e_mark"},
        },
    }


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page; the test fails if the page logged an error or threw."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(LIVE_TIMEOUT_MS)
    errors = PageErrors(page)
    yield page
    context.close()
    assert errors.messages == []


def create(stack, graph: dict) -> str:
    status, body = stack.request("POST", "/graph/create", graph)
    assert status == 201, body
    return body["graph_id"]


def start(stack, graph_id: str, state: dict, **options) -> dict:
    status, body = stack.request("POST", "/graph/run", {"graph_id": graph_id, "state": state, **options})
    assert status in (200, 202), body
    return body


def edges(page) -> set[tuple[str, str, str]]:
    """(from, to, kind) of every edge drawn."""
    found = page.eval_on_selector_all(
        ".g-edge", "els => els.map(e => [e.dataset.from, e.dataset.to, e.dataset.kind])"
    )
    return set(map(tuple, found))


def test_graph_page_draws_every_node_and_edge_of_the_summarization_graph(stack, page):
    graph_id = create(stack, SUMMARIZATION)

    page.goto(f"{stack.url}/console/graphs/{graph_id}")

    # THEN each node is drawn with its tool, each edge between the nodes it joins
    expect(page.locator("#drawing svg")).to_be_visible()
    for node, spec in SUMMARIZATION["nodes"].items():
        tool = spec["fn"] if "fn" in spec else f"map {spec['map']['fn']}"  # summarize is a map
        expect(page.locator(f'.g-node[data-node="{node}"]')).to_contain_text(tool)
    assert set(page.eval_on_selector_all(".g-node", "els => els.map(e => e.dataset.node)")) == {
        *SUMMARIZATION["nodes"],
        "__start",
        "__end",
    }
    assert edges(page) == {
        ("__start", "split", "next"),
        ("split", "summarize", "next"),
        ("summarize", "merge", "next"),
        ("merge", "refine", "next"),
        ("refine", "refine", "loop"),
        ("refine", "__end", "next"),
    }
    # the loop with its condition and max_iterations; the definition beside the drawing
    expect(page.locator(".g-label.loop")).to_contain_text("until length_ok")
    expect(page.locator(".g-label.loop")).to_contain_text("max 50")
    assert json.loads(page.locator("#definition").inner_text()) == SUMMARIZATION


def test_run_form_starts_a_run_and_opens_its_page(stack, page, tmp_path):
    graph_id = create(stack, gated(tmp_path / "open"))
    (tmp_path / "open").touch()
    page.goto(f"{stack.url}/console/graphs/{graph_id}")

    page.locator("#run-state").fill('{"marks": ["form"]}')
    page.locator("#run-button").click()

    page.wait_for_url(re.compile(r"/console/runs/\w+$"))
    expect(page.locator("#run-status")).to_have_text("completed")
    assert json.loads(page.locator("#run-state").inner_text())["marks"] == ["form", "before", "after"]


def test_run_page_goes_from_running_to_completed_live(stack, page, tmp_path):
    # GIVEN a run held at its second node until the test opens the gate
    gate = tmp_path / f"gate-{uuid.uuid4().hex}"
    run_id = start(stack, create(stack, gated(gate)), {}, background=True)["run_id"]
    page.goto(f"{stack.url}/console/runs/{run_id}")
    page.evaluate("window.notReloaded = true")

    # THEN it shows the run running, the first node done and the second one current
    expect(page.locator("#run-status")).to_have_text("running")
    expect(page.locator('.g-node[data-node="before"]')).to_have_attribute("data-status", "ok")
    expect(page.locator(".g-node.current")).to_have_attribute("data-node", "gate")
    expect(page.locator("#cancel")).to_be_visible()

    # WHEN the gate opens, the page follows the run to its end without a reload
    gate.touch()
    expect(page.locator("#run-status")).to_have_text("completed")
    assert page.evaluate("window.notReloaded") is True

    # THEN every log entry is on the timeline, every node coloured, nothing current
    status, run = stack.request("GET", f"/graph/state/{run_id}")
    assert status == 200 and run["status"] == "completed"
    timeline = page.eval_on_selector_all(
        "#timeline li", "els => els.map(e => [+e.dataset.seq, e.dataset.node])"
    )
    assert (
        timeline
        == [[entry["seq"], entry["node"]] for entry in run["logs"]]
        == [
            [0, "before"],
            [1, "gate"],
            [2, "after"],
        ]
    )
    for node in ("before", "gate", "after"):
        expect(page.locator(f'.g-node[data-node="{node}"]')).to_have_attribute("data-status", "ok")
    expect(page.locator(".g-node.current")).to_have_count(0)
    expect(page.locator("#cancel")).to_be_hidden()
    assert json.loads(page.locator("#run-state").inner_text()) == run["state"]

    # WHEN an entry is clicked, its result and the state keys it changed show
    page.locator('#timeline li[data-seq="1"]').click()
    expect(page.locator("#changed-keys")).to_have_text("gate")
    assert json.loads(page.locator("#entry-result").inner_text()) == run["logs"][1]["result"]
    # AND when it started, though it came live (a live entry carries ts, not started_at)
    expect(page.locator("#entry-when")).to_have_text(re.compile(r"^\S.* · [0-9.]+ ms · next: after$"))


def test_cancel_stops_a_running_run_from_its_page(stack, page, tmp_path):
    gate = tmp_path / f"gate-{uuid.uuid4().hex}"
    run_id = start(stack, create(stack, gated(gate)), {}, background=True)["run_id"]
    page.goto(f"{stack.url}/console/runs/{run_id}")
    expect(page.locator(".g-node.current")).to_have_attribute("data-node", "gate")

    page.locator("#cancel").click()

    expect(page.locator("#run-status")).to_have_text("cancelled")
    expect(page.locator('.g-node[data-node="gate"]')).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#cancel")).to_be_hidden()
    assert stack.request("GET", f"/graph/state/{run_id}?logs=false")[1]["status"] == "cancelled"
    gate.touch()  # let the step in flight end (its commit loses to the cancel)


def test_run_page_counts_loop_iterations(stack, page):
    graph_id = create(stack, SUMMARIZATION)
    run = start(stack, graph_id, SUMMARIZATION_STATE)
    assert run["status"] == "completed"

    page.goto(f"{stack.url}/console/runs/{run['run_id']}")

    refines = sum(1 for entry in run["logs"] if entry["node"] == "refine")
    expect(page.locator("#timeline li")).to_have_count(len(run["logs"]))
    expect(page.locator(".g-label.loop")).to_contain_text(f"\u00d7{refines}")


def test_failed_run_shows_its_error(stack, page):
    run = start(stack, create(stack, EXPLODING), {})
    assert run["status"] == "failed"

    page.goto(f"{stack.url}/console/runs/{run['run_id']}")

    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator("#failure")).to_contain_text("RuntimeError")
    expect(page.locator("#failure")).to_contain_text("the fuse was lit")
    expect(page.locator('.g-node[data-node="boom"]')).to_have_attribute("data-status", "failed")


def test_editor_shows_a_misspelt_node_at_its_path_and_saves_the_fixed_graph(stack, page):
    source_id = create(stack, SUMMARIZATION)
    page.goto(f"{stack.url}/console/graphs/{source_id}")
    page.locator("#edit-as-new").click()
    page.wait_for_url(re.compile(r"/console/edit\?from="))
    expect(page.locator("#valid")).to_be_visible()

    # WHEN merge's next is misspelt
    typo = json.loads(json.dumps(SUMMARIZATION))
    typo["nodes"]["merge"]["next"] = "refin"
    page.locator("#definition-input").fill(json.dumps(typo, indent=2))

    # THEN the problem is listed at its path, the unknown node drawn as such, saving is off
    problem = page.locator('#problems li[data-path="nodes.merge.next"]')
    expect(problem).to_contain_text("unknown node 'refin' (did you mean 'refine'?)")
    expect(page.locator('.g-node.missing[data-node="refin"]')).to_be_visible()
    expect(page.locator('.g-node.problem[data-node="merge"]')).to_be_visible()
    expect(page.locator("#save")).to_be_disabled()

    # WHEN it is fixed and saved
    fixed = json.loads(json.dumps(SUMMARIZATION))
    fixed["name"] = "summarization_v2"
    page.locator("#definition-input").fill(json.dumps(fixed, indent=2))
    expect(page.locator("#valid")).to_be_visible()
    page.locator("#save").click()

    # THEN a new graph holds the fixed definition, and its page opens
    page.wait_for_url(re.compile(r"/console/graphs/\w+$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != source_id
    status, stored = stack.request("GET", f"/graph/{new_id}")
    assert status == 200 and stored["definition"] == fixed


def test_editor_draws_branches_catch_map_and_parallel_nodes(stack, page):
    definition = {
        "name": "shapes",
        "start": "fetch",
        "nodes": {
            "fetch": {
                "fn": "split_text",
                "branches": [{"when": {"var": "score", "gte": 0.8}, "next": "fanout"}],
                "next": "each",
                "catch": [{"on": ["TimeoutError"], "next": "fallback"}],
            },
            "each": {
                "map": {
                    "items": "chunks",
                    "fn": "summarize_chunks",
                    "results": "summaries",
                    "max_concurrency": 4,
                    "tolerated_failures": 1,
                },
                "next": "fanout",
            },
            "fanout": {"parallel": ["left", "right"], "next": "fallback"},
            "left": {"fn": "merge_summaries"},
            "right": {"fn": "merge_summaries"},
            "fallback": {"fn": "refine_summary"},
        },
    }
    page.goto(f"{stack.url}/console/edit")
    page.locator("#definition-input").fill(json.dumps(definition, indent=2))

    expect(page.locator('.g-node.map[data-node="each"]')).to_contain_text("map summarize_chunks")
    expect(page.locator('.g-node.parallel[data-node="fanout"]')).to_contain_text("parallel \u00d72")
    drawn = edges(page)
    assert {
        ("fetch", "fanout", "branch"),
        ("fetch", "each", "next"),
        ("fetch", "fallback", "catch"),
        ("fanout", "left", "fork"),
        ("fanout", "right", "fork"),
    } <= drawn
    expect(page.locator(".g-label.branch")).to_have_text("when score >= 0.8")
    expect(page.locator(".g-label.catch")).to_have_text("catch TimeoutError")
    dashes = page.eval_on_selector(".g-edge.catch path", "p => getComputedStyle(p).strokeDasharray")
    assert dashes not in ("", "none")


def test_home_lists_graphs_and_runs_and_follows_a_status_live(stack, page, tmp_path):
    # GIVEN a held run and a failed one
    gate = tmp_path / f"gate-{uuid.uuid4().hex}"
    held = start(stack, create(stack, gated(gate)), {}, background=True)["run_id"]
    failed = start(stack, create(stack, {"start": "boom", "nodes": {"boom": {"fn": "e2e_explode"}}}), {})[
        "run_id"
    ]
    page.goto(f"{stack.url}/console")
    page.evaluate("window.notReloaded = true")
    row = page.locator(f'#runs tr[data-run="{held}"]')
    expect(row.locator(".badge")).to_have_text("running")
    expect(page.locator("#graphs tr", has_text="gated").first).to_be_visible()
    page.evaluate(
        """run => window.clickable = [...document.querySelectorAll('[data-filter]'),
                                      ...document.querySelectorAll(`#runs tr[data-run="${run}"] a`)]""",
        held,
    )

    # WHEN the run finishes, its row says so without a reload
    gate.touch()
    expect(row.locator(".badge")).to_have_text("completed")
    expect(page.locator('[data-filter="completed"]')).to_contain_text(re.compile(r"completed \([1-9]\d*\)"))
    assert page.evaluate("window.notReloaded") is True

    # AND the filter buttons and the row's links are the ones the page drew first: a live
    # update that replaced them could swallow a click landing mid-update
    assert page.evaluate("window.clickable.length") == 8
    assert page.evaluate("window.clickable.every(el => el.isConnected)") is True

    # WHEN the list is filtered to failed runs, only those show
    page.locator('[data-filter="failed"]').click()
    expect(page.locator(f'#runs tr[data-run="{failed}"]')).to_be_visible()
    expect(row).to_have_count(0)
    statuses = page.eval_on_selector_all("#runs tbody .badge", "els => els.map(e => e.textContent)")
    assert statuses and set(statuses) == {"failed"}


@contextlib.contextmanager
def flowforge_console(stack_url: str, tmp_path, env: dict[str, str] | None = None):
    """``flowforge console`` forwarding to ``stack_url``, in a subprocess; its URL."""
    port = free_port()
    command = [sys.executable, "-m", "flowforge.cli", "console", "--endpoint", stack_url, "--port", str(port)]
    log = (tmp_path / "console.log").open("wb")
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/console", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "console.log").read_text()
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture
def console_proxy(stack, tmp_path):
    """``flowforge console`` forwarding to the local stack (unsigned: the stack is local)."""
    with flowforge_console(stack.url, tmp_path) as url:
        yield url


def test_flowforge_console_serves_the_console_and_follows_a_run_live(stack, console_proxy, page, tmp_path):
    gate = tmp_path / f"gate-{uuid.uuid4().hex}"
    run_id = start(stack, create(stack, gated(gate)), {}, background=True)["run_id"]

    page.goto(f"{console_proxy}/console/runs/{run_id}")
    expect(page.locator(".g-node.current")).to_have_attribute("data-node", "gate")
    gate.touch()

    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#timeline li")).to_have_count(3)


def test_run_page_colours_each_parallel_branch_by_its_own_entries(stack, page):
    graph = {
        "name": "fanning",
        "start": "both",
        "nodes": {
            "both": {"parallel": ["calm", "boom"]},
            "calm": {"fn": "e2e_nap", "params": {"seconds": 0}},
            "boom": {"fn": "e2e_explode", "catch": [{"on": ["*"], "result_key": "boom_error"}]},
        },
    }
    run = start(stack, create(stack, graph), {})
    assert run["status"] == "completed"

    page.goto(f"{stack.url}/console/runs/{run['run_id']}")

    expect(page.locator('.g-node[data-node="calm"]')).to_have_attribute("data-status", "ok")
    expect(page.locator('.g-node[data-node="boom"]')).to_have_attribute("data-status", "caught")
    expect(page.locator("#timeline li", has_text="both \u203a boom")).to_have_count(1)
