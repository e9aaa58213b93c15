"""What `make run` prints once the local stack is ready."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from flowforge.local.banner import CLI_DEFAULT_URL, Endpoints, banner

#: A stack on the default ports with the example graph registered.
STACK = Endpoints(
    url="http://127.0.0.1:3000",
    moto="http://127.0.0.1:5000",
    region="us-east-1",
    table="flowforge-Table",
    data_dir=Path(".flowforge"),
    restored=0,
    resumed=0,
    example_graph="g1",
    example_state=Path("workflows/graphs/summarization.state.json"),
)


def test_the_console_url_comes_first():
    # GIVEN a stack on port 3000
    at = STACK

    # WHEN the banner is printed, THEN its first URL is the console's
    urls = [line.split()[1] for line in banner(at).splitlines() if "http://" in line]
    assert urls[0] == "http://127.0.0.1:3000/console"


def test_the_mode_is_said_and_with_iam_auth_every_example_signs():
    at = STACK
    assert "auth off" in banner(at)
    signed = banner(replace(at, signing_key=("testing", "testing"), isolation="principal"))
    assert "IAM auth" in signed and "isolation by principal" in signed
    curl = next(line for line in signed.splitlines() if line.strip().startswith("curl"))
    assert "--aws-sigv4 'aws:amz:us-east-1:execute-api' --user 'testing:testing'" in curl
    assert "FLOWFORGE_SIGN=1" in signed and "wscat" not in signed


def test_on_another_port_the_cli_is_pointed_at_the_stack():
    # GIVEN a stack on port 3411 (3000 was taken)
    at = replace(STACK, url="http://127.0.0.1:3411", moto="http://127.0.0.1:5411")

    # WHEN the banner is printed, THEN the CLI examples follow a line that points the CLI there
    for text in (banner(at), banner(replace(at, signing_key=("testing", "testing")))):
        lines = text.splitlines()
        export = next(i for i, line in enumerate(lines) if "export FLOWFORGE_ENDPOINT=" in line)
        run = next(i for i, line in enumerate(lines) if "bin/flowforge run" in line)
        assert "FLOWFORGE_ENDPOINT=http://127.0.0.1:3411 " in lines[export] and export < run
    # and on the CLI's own default port no such line is needed
    assert "FLOWFORGE_ENDPOINT" not in banner(replace(at, url=CLI_DEFAULT_URL))


def test_the_banner_knows_the_clis_default_endpoint():
    from flowforge.client import LOCAL_ENDPOINT

    assert LOCAL_ENDPOINT == CLI_DEFAULT_URL


def test_the_bedrock_stand_in_and_the_llm_example_are_shown():
    # GIVEN a stack with the Bedrock stand-in and both examples registered
    at = replace(STACK, bedrock="http://127.0.0.1:41234", example_llm_graph="g2")

    # THEN the banner says where the stand-in is and how to run the LLM example
    for text in (banner(at), banner(replace(at, signing_key=("testing", "testing")))):
        assert "Bedrock     http://127.0.0.1:41234" in text
        assert 'example graph "summarization_llm": g2' in text
        assert "bin/flowforge run g2 --state workflows/graphs/summarization.state.json --follow" in text
    # and without them, nothing about them
    assert "Bedrock" not in banner(STACK) and "summarization_llm" not in banner(STACK)
