"""The engine stays pure: no AWS SDK, no environment, no AWS event shapes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
MODULES = sorted(f"engine.{p.stem}" for p in ENGINE.glob("*.py") if p.stem != "__init__")


def test_importing_every_engine_module_loads_no_aws_sdk():
    # GIVEN a fresh interpreter
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'aws_lambda_powertools')))"
    )
    # WHEN every engine module is imported
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout

    # THEN no AWS package came with it
    assert out.strip() == "[]"


def test_no_engine_module_reads_the_environment_or_names_aws():
    offences = []
    for path in sorted(ENGINE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                offences.append(f"{path.name}:{node.lineno} reads os.{node.attr}")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(
                    n.split(".")[0] in ("boto3", "botocore", "aws_lambda_powertools", "functions")
                    for n in names
                ):
                    offences.append(f"{path.name}:{node.lineno} imports {names}")
    assert offences == []
