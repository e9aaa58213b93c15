"""Approve and Reject on the run page of a waiting run, in a real browser (headless
Chromium) against the local stack: the approval graph (workflows/graphs/approval.json)
waits at its review node for an answer at POST /callbacks/{token}."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import VIEWPORT, PageErrors
from tests.e2e.conftest import ROOT
from tests.e2e.test_console import LIVE_TIMEOUT_MS, browser, console_proxy, create, page, start

pytestmark = pytest.mark.e2e
__all__ = ["browser", "console_proxy", "page"]

APPROVAL = json.loads((ROOT / "workflows" / "graphs" / "approval.json").read_text())
#: What Chromium logs by itself for any response with an error status (the page's own
#: code logs nothing): the one console error the refused answer may leave.
REFUSED_409 = "Failed to load resource: the server responded with a status of 409 (Conflict)"


def waiting_run(stack, topic: str = "tides") -> str:
    """A run of the approval graph started in the background (the page sees it wait)."""
    return start(stack, create(stack, APPROVAL), {"topic": topic}, background=True)["run_id"]


def state_of(stack, run_id: str) -> dict:
    status, view = stack.request("GET", f"/graph/state/{run_id}")
    assert status == 200, view
    return view


def until_waiting(stack, run_id: str, timeout_s: float = LIVE_TIMEOUT_MS / 1000) -> dict:
    """The run's view once it waits (a wait for the stack, generous on a busy machine)."""
    deadline = time.monotonic() + timeout_s
    while (view := state_of(stack, run_id))["status"] != "waiting":
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    return view


def statuses(view: dict) -> list[tuple[str, str]]:
    return [(entry["node"], entry["status"]) for entry in view["logs"]]


def expect_waiting_at_review(page) -> None:
    expect(page.locator("#run-status")).to_have_text("waiting")
    expect(page.locator("#approve")).to_be_visible()
    expect(page.locator("#reject")).to_be_visible()
    expect(page.locator("#waiting-about")).to_contain_text("At review for an answer")
    review = page.locator('.g-node[data-node="review"]')
    expect(review).to_have_attribute("data-status", "waiting")
    expect(review).to_have_class(re.compile(r"\bst-waiting\b"))


def test_a_waiting_run_is_approved_from_its_page_and_followed_live_to_completed(stack, page):
    # GIVEN a run of the approval graph, its page open
    run_id = waiting_run(stack)
    page.goto(f"{stack.url}/console/runs/{run_id}")
    page.evaluate("window.notReloaded = true")

    # THEN the page shows it waiting at review, the node drawn as waiting, with Approve and Reject
    expect_waiting_at_review(page)
    expect(page.locator('.legend [data-legend="waiting"]')).to_have_text("waiting")
    expect(page.locator(".g-node.current")).to_have_count(0)
    expect(page.locator("#cancel")).to_be_visible()  # a waiting run can be cancelled
    expect(page.locator("#approval label[for=approve-output]")).to_contain_text("state.review")

    # WHEN an output that is not JSON is approved
    page.locator("#approve-output").fill("{by: ann}")
    page.locator("#approve").click()

    # THEN the page says so, and nothing was sent
    expect(page.locator("#output-invalid")).to_contain_text("The output is not JSON")
    assert state_of(stack, run_id)["status"] == "waiting"

    # WHEN a JSON output is approved
    page.locator("#approve-output").fill('{"by": "ann", "note": "ship it"}')
    page.locator("#approve").click()

    # THEN the buttons go, and the page follows the run live to completed
    expect(page.locator("#answered")).to_have_text("Approved: the run goes on.")
    expect(page.locator("#approval")).to_be_hidden()
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator('.g-node[data-node="publish"]')).to_have_attribute("data-status", "ok")
    expect(page.locator('.g-node[data-node="review"]')).to_have_attribute("data-status", "ok")
    expect(page.locator("#output-invalid")).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True
    # AND the output is in the run's state, as the page shows it
    view = state_of(stack, run_id)
    assert view["status"] == "completed" and view["state"]["review"] == {"by": "ann", "note": "ship it"}
    assert view["state"]["published"]["review"] == {"by": "ann", "note": "ship it"}
    assert statuses(view) == [("draft", "ok"), ("review", "waiting"), ("review", "ok"), ("publish", "ok")]
    expect(page.locator("#timeline li")).to_have_count(4)
    assert json.loads(page.locator("#run-state").inner_text()) == view["state"]


def test_a_rejection_routes_by_the_catch_and_the_revised_draft_waits_again(stack, page):
    # GIVEN a run waiting at review, its page open
    run_id = waiting_run(stack, "kelp")
    page.goto(f"{stack.url}/console/runs/{run_id}")
    expect_waiting_at_review(page)
    first_url = state_of(stack, run_id)["waiting"]["callback_url"]

    # WHEN it is rejected with a reason
    page.locator("#reject-reason").fill("too long")
    page.locator("#reject").click()

    # THEN CallbackRejected goes by the catch to revise and back to review, which waits
    # again, for a new callback: the page offers the buttons again, live
    expect(page.locator('#timeline li[data-seq="2"] .badge')).to_have_text("caught")
    expect(page.locator('#timeline li[data-seq="4"]')).to_have_attribute("data-node", "review")
    expect_waiting_at_review(page)
    expect(page.locator('.g-node[data-node="revise"]')).to_have_attribute("data-status", "ok")
    view = state_of(stack, run_id)
    assert statuses(view) == [
        ("draft", "ok"), ("review", "waiting"), ("review", "caught"), ("revise", "ok"), ("review", "waiting")
    ]  # fmt: skip
    assert view["state"]["rejection"] == {"node": "review", "type": "CallbackRejected", "message": "too long"}
    assert view["state"]["draft"] == "A post about kelp. (revised: too long)"
    assert view["waiting"]["callback_url"] != first_url
    # the form is fresh for the new wait
    expect(page.locator("#reject-reason")).to_have_value("")

    # WHEN the revised draft is approved without an output
    page.locator("#approve").click()

    # THEN it completes
    expect(page.locator("#run-status")).to_have_text("completed")
    assert state_of(stack, run_id)["state"]["published"]["text"] == "A post about kelp. (revised: too long)"


def test_a_node_without_a_result_key_takes_an_object_output_only(stack, page):
    # GIVEN a callback node that names no callback.result: an approved object's keys are
    # merged into the state, anything else would be dropped
    graph = {
        "name": "ask",
        "start": "ask",
        "nodes": {"ask": {"fn": "notify_reviewer", "callback": {"timeout_s": 3600}}},
    }
    run_id = start(stack, create(stack, graph), {}, background=True)["run_id"]
    page.goto(f"{stack.url}/console/runs/{run_id}")
    expect(page.locator("#approve")).to_be_visible()
    expect(page.locator("#approval label[for=approve-output]")).to_contain_text(
        "keys are merged into the state"
    )

    # WHEN a JSON string is approved, THEN the page refuses it before sending
    page.locator("#approve-output").fill('"yes"')
    page.locator("#approve").click()
    expect(page.locator("#output-invalid")).to_contain_text("the output must be a JSON object")
    assert state_of(stack, run_id)["status"] == "waiting"

    # WHEN an object is approved, THEN its keys are in the state
    page.locator("#approve-output").fill('{"answer": "yes"}')
    page.locator("#approve").click()
    expect(page.locator("#run-status")).to_have_text("completed")
    assert state_of(stack, run_id)["state"]["answer"] == "yes"


@pytest.fixture
def held_page(browser):
    """A page whose WebSocket reaches nothing (it hears no news of its run), and the
    errors it logged: the test says which one it expects."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(LIVE_TIMEOUT_MS)
    page.route_web_socket(re.compile(r"/ws$"), lambda socket: None)  # not connected to the stack
    errors = PageErrors(page)
    yield page, errors
    context.close()
    assert errors.messages == []


def test_a_second_answer_is_refused_with_a_message_and_the_run_read_again(stack, held_page):
    page, errors = held_page
    # GIVEN a waiting run's page that has not heard yet that someone else answered it
    # (opened once the run waits: this page hears nothing live)
    run_id = waiting_run(stack)
    token = until_waiting(stack, run_id)["waiting"]["callback_url"].rsplit("/", 1)[1]
    page.goto(f"{stack.url}/console/runs/{run_id}")
    expect_waiting_at_review(page)
    status, answer = stack.request("POST", f"/callbacks/{token}", {"status": "approved", "output": "by mail"})
    assert status == 200, answer

    # WHEN Reject is clicked on the page
    page.locator("#reject-reason").fill("late")
    page.locator("#reject").click()

    # THEN the 409 is a message on the page, the run is read again and the buttons go
    expect(page.locator("#answer-refused")).to_have_text("Not rejected: the callback was already approved.")
    expect(page.locator("#answer-refused")).to_have_attribute("data-status", "409")
    expect(page.locator("#approval")).to_be_hidden()
    expect(page.locator("#run-status")).not_to_have_text("waiting")
    expect(page.locator("#answer-error")).to_be_empty()
    # AND the run took the first answer only
    view = state_of(stack, run_id)
    assert view["state"]["review"] == "by mail" and "rejection" not in view["state"]
    # AND the page threw nothing and logged nothing: only the browser's own line for the 409
    assert errors.messages == [REFUSED_409]
    errors.messages.clear()


def test_home_page_lists_a_waiting_run_under_its_filter_and_follows_it_live(stack, page):
    # GIVEN a waiting run
    run_id = waiting_run(stack, "home")
    page.goto(f"{stack.url}/console?status=waiting")

    # THEN the list shows it waiting at its node, under the waiting filter
    row = page.locator(f'#runs tr[data-run="{run_id}"]')
    expect(row.locator(".badge")).to_have_text("waiting")
    expect(row).to_contain_text("at review")
    expect(page.locator('[data-filter="waiting"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator('[data-filter="waiting"]')).to_contain_text(re.compile(r"waiting \([1-9]\d*\)"))

    # WHEN it is approved elsewhere
    token = state_of(stack, run_id)["waiting"]["callback_url"].rsplit("/", 1)[1]
    assert stack.request("POST", f"/callbacks/{token}", {"status": "approved"})[0] == 200

    # THEN it leaves the waiting list without a reload, and shows completed under all
    expect(row).to_have_count(0)
    page.locator('[data-filter="all"]').click()
    expect(row.locator(".badge")).to_have_text("completed")


def test_flowforge_console_forwards_the_answer_to_the_stack(stack, console_proxy, page):
    # GIVEN a waiting run's page served by `flowforge console`: its callback URL names the
    # stack's origin, the page answers through its own
    run_id = waiting_run(stack, "proxied")
    page.goto(f"{console_proxy}/console/runs/{run_id}")
    expect_waiting_at_review(page)
    assert state_of(stack, run_id)["waiting"]["callback_url"].startswith(f"{stack.url}/callbacks/")

    with page.expect_request(re.compile(r"/callbacks/")) as sent:
        page.locator("#approve-output").fill('"lgtm"')
        page.locator("#approve").click()

    assert sent.value.url.startswith(f"{console_proxy}/callbacks/")
    expect(page.locator("#run-status")).to_have_text("completed")
    assert state_of(stack, run_id)["state"]["review"] == "lgtm"
