"""What ``flowforge dev`` prints once it is ready: where everything is, and what to try."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What a user needs to reach the running stack."""

    url: str
    moto: str
    region: str
    table: str
    data_dir: Path
    restored: int
    resumed: int
    example_graph: str | None
    example_state: Path


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shown(path: Path) -> Path:
    """Relative to the working directory when under it: the commands stay copy-pasteable."""
    cwd = Path.cwd()
    return path.relative_to(cwd) if path.is_relative_to(cwd) else path


def banner(at: Endpoints) -> str:
    ws = at.url.replace("http://", "ws://", 1)
    lines = [
        "",
        "FlowForge local stack: the serverless app on moto, no Docker, no AWS account (auth is off locally)",
        "",
        f"  Console     {at.url}/console",
        f"  API         {at.url}        docs: {at.url}/docs",
        f'  WebSocket   {ws}/ws/logs/<run_id>   or {ws} then send {{"action": "subscribe", "run_id": "<run_id>"}}',
        f"  AWS (moto)  {at.moto}        table {at.table}",
        f"  data        {_shown(at.data_dir)}/ ({_count(at.restored, 'item')} restored,"
        f" {_count(at.resumed, 'run')} resumed)",
    ]
    if at.example_graph:
        state = _shown(at.example_state)
        graph = at.example_graph
        lines += [
            "",
            f'  example graph "summarization": {graph}',
            "",
            "  Try it (another terminal; bin/flowforge is the CLI of this checkout):",
            f"    curl -s {at.url}/graph/run -H 'content-type: application/json' \\",
            f'      -d "{{\\"graph_id\\": \\"{graph}\\", \\"state\\": $(cat {state})}}" | python3 -m json.tool',
            f"    bin/flowforge run {graph} --state {state} --follow",
            "    bin/flowforge logs <run_id> --follow     bin/flowforge state <run_id> --full",
            f"    xdg-open {at.url}/console               (macOS: open)",
            "",
            f"  Optional tools, same things: wscat -c {ws}/ws/logs/<run_id>;",
            f"    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --endpoint-url {at.moto}"
            f" --region {at.region} dynamodb scan --table-name {at.table}",
        ]
    lines += ["", "Ready. Ctrl-C to stop.", ""]
    return "\n".join(lines)
