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
    signing_key: tuple[str, str] | None = None
    """With IAM auth: the key pair the examples sign with (access key id, secret or a placeholder)."""
    isolation: str = "account"
    bedrock: str | None = None
    """The Bedrock Runtime stand-in's endpoint (LLM nodes)."""
    example_llm_graph: str | None = None
    """The LLM variant of the example (same state), answered by the stand-in."""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shown(path: Path) -> Path:
    """Relative to the working directory when under it: the commands stay copy-pasteable."""
    cwd = Path.cwd()
    return path.relative_to(cwd) if path.is_relative_to(cwd) else path


def _mode(at: Endpoints) -> str:
    if at.signing_key is None:
        return "auth off: requests are not signed"
    return f"IAM auth: every request and handshake must be SigV4-signed; isolation by {at.isolation}"


#: Where the CLI looks for a stack by default (flowforge.client.LOCAL_ENDPOINT; the CLI sits
#: above this package, so the value is repeated here and a test keeps the two equal).
CLI_DEFAULT_URL = "http://127.0.0.1:3000"


def _cli_endpoint(at: Endpoints) -> list[str]:
    """On another port than the CLI's default, the line that points the CLI at this stack."""
    if at.url == CLI_DEFAULT_URL:
        return []
    return [f"    export FLOWFORGE_ENDPOINT={at.url}     (the CLI's default is {CLI_DEFAULT_URL})"]


def banner(at: Endpoints) -> str:
    ws = at.url.replace("http://", "ws://", 1)
    lines = [
        "",
        "FlowForge local stack: the serverless app on moto, no Docker, no AWS account",
        f"  mode        {_mode(at)}",
        "",
        f"  Console     {at.url}/console",
        f"  API         {at.url}        docs: {at.url}/docs",
        f'  WebSocket   {ws}/ws/logs/<run_id>   or {ws} then send {{"action": "subscribe", "run_id": "<run_id>"}}',
        f"  AWS (moto)  {at.moto}        table {at.table}",
        *(
            [f"  Bedrock     {at.bedrock}       a stand-in for LLM nodes (Converse, deterministic)"]
            if at.bedrock
            else []
        ),
        f"  data        {_shown(at.data_dir)}/ ({_count(at.restored, 'item')} restored,"
        f" {_count(at.resumed, 'run')} resumed)",
    ]
    if at.example_graph and at.signing_key is not None:
        lines += _signed_examples(at, at.example_graph)
    elif at.example_graph:
        state = _shown(at.example_state)
        graph = at.example_graph
        lines += [
            "",
            f'  example graph "summarization": {graph}',
            *_llm_graph_line(at),
            "",
            "  Try it (another terminal; bin/flowforge is the CLI of this checkout):",
            f"    curl -s {at.url}/graph/run -H 'content-type: application/json' \\",
            f'      -d "{{\\"graph_id\\": \\"{graph}\\", \\"state\\": $(cat {state})}}" | python3 -m json.tool',
            *_cli_endpoint(at),
            f"    bin/flowforge run {graph} --state {state} --follow",
            *_llm_example(at),
            "    bin/flowforge logs <run_id> --follow     bin/flowforge state <run_id> --full",
            f"    xdg-open {at.url}/console               (macOS: open)",
            "",
            f"  Optional tools, same things: wscat -c {ws}/ws/logs/<run_id>;",
            f"    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --endpoint-url {at.moto}"
            f" --region {at.region} dynamodb scan --table-name {at.table}",
        ]
    lines += ["", "Ready. Ctrl-C to stop.", ""]
    return "\n".join(lines)


def _signed_examples(at: Endpoints, graph: str) -> list[str]:
    """The examples with IAM auth: curl signs with --aws-sigv4, the CLI with --sign."""
    assert at.signing_key is not None
    key, secret = at.signing_key
    state = _shown(at.example_state)
    return [
        "",
        f'  example graph "summarization": {graph}',
        *_llm_graph_line(at),
        "",
        "  Try it (another terminal; requests are signed as on AWS):",
        f"    curl -s {at.url}/graph/run --aws-sigv4 'aws:amz:{at.region}:execute-api' --user '{key}:{secret}' \\",
        "      -H 'content-type: application/json' \\",
        f'      -d "{{\\"graph_id\\": \\"{graph}\\", \\"state\\": $(cat {state})}}" | python3 -m json.tool',
        f"    export AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret} AWS_DEFAULT_REGION={at.region} FLOWFORGE_SIGN=1",
        *_cli_endpoint(at),
        f"    bin/flowforge run {graph} --state {state} --follow",
        *_llm_example(at),
        "    bin/flowforge logs <run_id> --follow",
    ]


def _llm_graph_line(at: Endpoints) -> list[str]:
    return [f'  example graph "summarization_llm": {at.example_llm_graph}'] if at.example_llm_graph else []


def _llm_example(at: Endpoints) -> list[str]:
    """The LLM variant's run command (same state), when it is registered."""
    if not at.example_llm_graph:
        return []
    return [
        f"    bin/flowforge run {at.example_llm_graph} --state {_shown(at.example_state)} --follow"
        "   (summarization_llm: LLM nodes)"
    ]
