"""`tribute mcp` as agents use it: the official MCP Python SDK (PyPI `mcp`, which test.sh
installs) starts the server over stdio on the sample datanet, lists its tools and calls
them. Each tool declares an output schema (MCP 2025-06-18) and returns structured content
that validates against it (the client checks too) beside the same JSON as text.

Needs the debug CLI (`cargo build -p tribute-cli`); `make test` builds it. Without it the
test is skipped locally and fails in CI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import ALICE, KEY0, PAYER, PRICING_Q, REPO, SAMPLE

mcp = pytest.importorskip("mcp", reason="test.sh installs mcp")
jsonschema = pytest.importorskip("jsonschema", reason="mcp depends on jsonschema")

from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

BATTERY_Q = "How should Zephyr drone batteries be stored?"
# Generous: an ask runs the model and its attribution passes on a slow CI CPU.
CALL_TIMEOUT = timedelta(seconds=600)


def _cli() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    cli = target / "debug" / "tribute"
    if not cli.is_file():
        what = f"the tribute CLI at {cli}"
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required in CI", pytrace=False)
        pytest.skip(f"{what} not found (make test builds it)")
    return cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> StdioServerParameters:
    """How to start `tribute mcp` over a fresh knowledge base of the sample datanet."""
    cli, work = _cli(), tmp_path_factory.mktemp("mcp")
    ingest = subprocess.run(
        [str(cli), "ingest", "--kb", str(work / "kb"), str(SAMPLE)],
        capture_output=True, text=True, timeout=300,
    )
    assert ingest.returncode == 0, ingest.stderr
    (work / "tribute.toml").write_text(
        'index = "kb"\n\n[receipts]\njournal = "receipts"\nkey_env = "TRIBUTE_KEY"\n'
        'ledger = { chainId = 31337, contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3" }\n'
    )
    return StdioServerParameters(
        command=str(cli),
        args=["mcp", "--config", str(work / "tribute.toml")],
        env={**os.environ, "TRIBUTE_KEY": KEY0},
    )


async def _session(server: StdioServerParameters) -> dict[str, Any]:
    """One MCP session: the tools and the results of the calls the test checks."""
    async with stdio_client(server) as (read, write):
        async with mcp.ClientSession(read, write) as session:
            init = await session.initialize()
            tools = (await session.list_tools()).tools
            calls = {}
            for name, args in [
                ("search", {"query": BATTERY_Q, "k": 3}),
                ("ask", {"question": PRICING_Q, "top_k": 3, "max_tokens": 32}),
                ("receipts", {"limit": 5}),
                ("search", {"query": "battery", "k": 0}),  # a tool error
            ]:
                # call_tool also validates structured content against the output schema
                # and raises when it does not conform.
                result = await session.call_tool(name, args, read_timeout_seconds=CALL_TIMEOUT.total_seconds())
                calls[name if name not in calls else f"{name}-error"] = result
            return {"init": init, "tools": tools, "calls": calls}


def test_mcp_tools_declare_output_schemas_and_return_structured_content(
    server: StdioServerParameters,
) -> None:
    s = asyncio.run(_session(server))
    assert s["init"].server_info.name == "tribute"
    schemas = {t.name: t.output_schema for t in s["tools"]}
    assert sorted(schemas) == ["ask", "receipts", "search"]
    for name, schema in schemas.items():
        assert schema is not None and schema["type"] == "object", name
        jsonschema.Draft202012Validator.check_schema(schema)

    def structured(name: str) -> dict[str, Any]:
        result = s["calls"][name]
        assert not result.is_error, result
        value = result.structured_content
        assert isinstance(value, dict), result
        jsonschema.validate(value, schemas[name.split("-")[0]])
        # The same JSON as the last text item, for clients that read only text.
        assert json.loads(result.content[-1].text) == value
        return value

    search = structured("search")
    assert 0 < len(search["hits"]) <= 3 and search["hits"][0]["doc_id"] == "zephyr-battery"
    assert search["hits"][0]["contributor"] == ALICE
    assert sum(c["weight_bps"] for c in search["citations"]) == 10_000
    assert search["receipt"]["payer"] == PAYER and search["no_receipt"] is None

    ask = structured("ask")
    assert "900" in ask["text"] and ask["citations"][0]["doc_id"] == "zephyr-pricing"
    assert ask["receipt"]["payer"] == PAYER
    summary = s["calls"]["ask"].content[0].text
    assert "900" in summary and "Sources:" in summary

    receipts = structured("receipts")
    ids = {r["receipt"]["receiptId"] for r in receipts["receipts"]}
    assert {search["receipt"]["receiptId"], ask["receipt"]["receiptId"]} <= ids
    assert receipts["stats"]["pending"] >= 2

    # A tool error carries its message and no structured content.
    error = s["calls"]["search-error"]
    assert error.is_error and error.structured_content is None
    assert "k must be between 1 and 50" in error.content[0].text

    # A result that does not fit the schema would not validate.
    broken = dict(search, hits=[{"doc_id": "x"}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schemas["search"])
