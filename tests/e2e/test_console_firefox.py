"""The web console in headless Firefox (the system's Firefox ESR, over WebDriver BiDi)
against the local stack: the pages the Chromium tests cover, seen by the other engine.

Each test fails if the page logged an error or threw."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.e2e.firefox import Firefox
from tests.e2e.test_console import EXPLODING, SUMMARIZATION, create, gated, start
from tests.e2e.test_console_approvals import APPROVAL

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def firefox():
    browser = Firefox()
    yield browser
    browser.close()


@pytest.fixture
def page(firefox):
    """The browser, its errors checked once the test is done."""
    yield firefox
    assert firefox.errors == []


def test_graph_page_draws_every_node_and_edge_in_firefox(stack, page):
    graph_id = create(stack, SUMMARIZATION)

    page.goto(f"{stack.url}/console/graphs/{graph_id}")

    page.wait_for("document.querySelector('#drawing svg .g-edge') !== null")
    drawn = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.g-node')]"
        ".map(e => [e.dataset.node, e.textContent]))"
    )
    assert set(drawn) == {*SUMMARIZATION["nodes"], "__start", "__end"}
    for node, spec in SUMMARIZATION["nodes"].items():
        assert (spec["fn"] if "fn" in spec else f"map {spec['map']['fn']}") in drawn[node]
    edges = page.evaluate(
        "[...document.querySelectorAll('.g-edge')].map(e => [e.dataset.from, e.dataset.to, e.dataset.kind])"
    )
    assert set(map(tuple, edges)) == {
        ("__start", "split", "next"),
        ("split", "summarize", "next"),
        ("summarize", "merge", "next"),
        ("merge", "refine", "next"),
        ("refine", "refine", "loop"),
        ("refine", "__end", "next"),
    }
    assert "until length_ok" in page.text(".g-label.loop")
    assert json.loads(page.text("#definition")) == SUMMARIZATION
    # laid out: every node has a size and sits inside the drawing
    boxes = page.evaluate(
        "[...document.querySelectorAll('.g-node')].map(e => { const b = e.getBBox(); return [b.width, b.height]; })"
    )
    assert boxes and all(width > 0 and height > 0 for width, height in boxes)


def test_run_page_follows_a_run_to_completed_live_in_firefox(stack, page, tmp_path):
    gate = tmp_path / f"gate-{uuid.uuid4().hex}"
    run_id = start(stack, create(stack, gated(gate)), {}, background=True)["run_id"]
    page.goto(f"{stack.url}/console/runs/{run_id}")
    page.evaluate("window.notReloaded = true")

    page.wait_for("document.querySelector('.g-node.current')?.dataset.node === 'gate'")
    assert page.text("#run-status") == "running"

    gate.touch()
    page.wait_for("document.querySelector('#run-status')?.textContent === 'completed'")
    assert page.evaluate("window.notReloaded") is True

    status, run = stack.request("GET", f"/graph/state/{run_id}")
    assert status == 200 and run["status"] == "completed"
    page.wait_for(f"document.querySelectorAll('#timeline li').length === {len(run['logs'])}")
    timeline = page.evaluate(
        "[...document.querySelectorAll('#timeline li')].map(e => [+e.dataset.seq, e.dataset.node])"
    )
    assert timeline == [[entry["seq"], entry["node"]] for entry in run["logs"]]
    colours = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.g-node[data-status]')]"
        ".map(e => [e.dataset.node, e.dataset.status]))"
    )
    assert {node: colours.get(node) for node in ("before", "gate", "after")} == dict.fromkeys(
        ("before", "gate", "after"), "ok"
    )
    assert json.loads(page.text("#run-state")) == run["state"]


def test_failed_run_shows_its_error_in_firefox(stack, page):
    run = start(stack, create(stack, EXPLODING), {})
    assert run["status"] == "failed"

    page.goto(f"{stack.url}/console/runs/{run['run_id']}")

    page.wait_for("document.querySelector('#run-status')?.textContent === 'failed'")
    page.wait_for("document.querySelector('#failure')?.textContent.includes('the fuse was lit')")
    assert "RuntimeError" in page.text("#failure")


def test_editor_lists_a_misspelt_node_and_saves_the_fixed_graph_in_firefox(stack, page):
    source_id = create(stack, SUMMARIZATION)
    page.goto(f"{stack.url}/console/edit?from={source_id}")
    page.wait_for("document.querySelector('#valid') && !document.querySelector('#valid').hidden")

    typo = json.loads(json.dumps(SUMMARIZATION))
    typo["nodes"]["merge"]["next"] = "refin"
    page.fill("#definition-input", json.dumps(typo, indent=2))

    problem = page.wait_for(
        "document.querySelector('#problems li[data-path=\"nodes.merge.next\"]')?.textContent"
    )
    assert "unknown node 'refin' (did you mean 'refine'?)" in problem
    page.wait_for("document.querySelector('.g-node.missing[data-node=\"refin\"]') !== null")
    assert page.evaluate("document.querySelector('#save')?.disabled") is True

    fixed = json.loads(json.dumps(SUMMARIZATION))
    fixed["name"] = "summarization_firefox"
    page.fill("#definition-input", json.dumps(fixed, indent=2))
    page.wait_for("!document.querySelector('#save')?.disabled")
    page.click("#save")

    new_id = page.wait_for(
        "/\\/console\\/graphs\\/\\w+$/.test(location.pathname) && location.pathname.split('/').pop()"
    )
    assert new_id != source_id
    status, stored = stack.request("GET", f"/graph/{new_id}")
    assert status == 200 and stored["definition"] == fixed


def test_home_lists_graphs_and_follows_a_run_live_in_firefox(stack, page, tmp_path):
    gate = tmp_path / f"gate-{uuid.uuid4().hex}"
    held = start(stack, create(stack, gated(gate)), {}, background=True)["run_id"]
    page.goto(f"{stack.url}/console")
    page.evaluate("window.notReloaded = true")

    badge = f"document.querySelector('#runs tr[data-run=\"{held}\"] .badge')?.textContent"
    assert page.wait_for(badge) == "running"
    assert page.evaluate(
        "[...document.querySelectorAll('#graphs tr')].some(r => r.textContent.includes('gated'))"
    )

    gate.touch()
    page.wait_for(f"{badge} === 'completed'")
    assert page.evaluate("window.notReloaded") is True


def test_a_waiting_run_is_approved_from_its_page_in_firefox(stack, page):
    run_id = start(stack, create(stack, APPROVAL), {"topic": "dunes"}, background=True)["run_id"]
    page.goto(f"{stack.url}/console/runs/{run_id}")
    page.evaluate("window.notReloaded = true")

    # the run waits at review: its node drawn as waiting, Approve and Reject offered
    page.wait_for("document.querySelector('#run-status')?.textContent === 'waiting'")
    page.wait_for("document.querySelector('#approve')?.offsetParent != null")
    assert page.evaluate("document.querySelector('#reject').offsetParent != null") is True
    review = "document.querySelector('.g-node[data-node=\"review\"]')"
    assert page.evaluate(f"{review}.dataset.status") == "waiting"
    assert page.evaluate(f"{review}.classList.contains('st-waiting')") is True

    page.fill("#approve-output", '{"by": "bo"}')
    page.click("#approve")

    page.wait_for("document.querySelector('#run-status')?.textContent === 'completed'")
    assert page.text("#answered") == "Approved: the run goes on."
    assert page.evaluate("document.querySelector('#approval').hidden") is True
    assert page.evaluate("window.notReloaded") is True
    status, view = stack.request("GET", f"/graph/state/{run_id}")
    assert status == 200 and view["status"] == "completed" and view["state"]["review"] == {"by": "bo"}
    page.wait_for(f"{review}.dataset.status === 'ok'")
