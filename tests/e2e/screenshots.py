"""``make screenshots``: the console's pages on a fresh local stack, saved as PNGs for the
README (``python -m tests.e2e.screenshots docs``)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from flowforge.local.process import LocalStackProcess
from tests.e2e.browser import VIEWPORT, PageErrors, launch

ROOT = Path(__file__).resolve().parents[2]
GRAPHS = ROOT / "workflows" / "graphs"


def take(out: Path) -> list[Path]:
    summarization = json.loads((GRAPHS / "summarization.json").read_text())
    state = json.loads((GRAPHS / "summarization.state.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStackProcess(
            Path(tmp) / "data", Path(tmp) / "stack.log", tools_modules="workflows,tests.e2e.slow_tools"
        )
        stack.start()
        try:
            _, graph = stack.request("POST", "/graph/create", summarization)
            failing = {"name": "exploding", "start": "boom", "nodes": {"boom": {"fn": "e2e_explode"}}}
            _, broken = stack.request("POST", "/graph/create", failing)
            stack.request("POST", "/graph/run", {"graph_id": broken["graph_id"], "state": {}})
            runs = [
                stack.request("POST", "/graph/run", {"graph_id": graph["graph_id"], "state": state})[1]
                for _ in range(3)
            ]
            pages = {
                "console-home.png": "/console",
                "console-graph.png": f"/console/graphs/{graph['graph_id']}",
                "console-run.png": f"/console/runs/{runs[-1]['run_id']}",
                "console-editor.png": f"/console/edit?from={graph['graph_id']}",
            }
            written = []
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_page(viewport=VIEWPORT)
                errors = PageErrors(page)
                for name, path in pages.items():
                    page.goto(stack.url + path)
                    expect(page.locator("main .pagehead")).to_be_visible()
                    if name == "console-run.png":
                        page.locator('#timeline li[data-seq="4"]').click()
                    if name == "console-editor.png":  # with a misspelt node, as a user makes one
                        expect(page.locator("#valid")).to_be_visible()
                        typo = json.loads(json.dumps(summarization))
                        typo["nodes"]["merge"]["next"] = "refin"
                        page.locator("#definition-input").fill(json.dumps(typo, indent=2))
                        expect(page.locator("#problems")).to_be_visible()
                    page.wait_for_timeout(300)  # let fonts settle
                    page.screenshot(path=out / name)
                    written.append(out / name)
                browser.close()
            if errors.messages:
                raise RuntimeError(f"the console logged errors: {errors.messages}")
            return written
        finally:
            stack.stop()


if __name__ == "__main__":
    for path in take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(path)
