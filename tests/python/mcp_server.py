"""An MCP server from the official MCP Python SDK (FastMCP, Streamable
HTTP), on loopback, for the MCP client tests. Usage: mcp_server.py PORT
[--json]. With --json it answers with JSON bodies; else with SSE streams."""

import sys

from mcp.server.fastmcp import FastMCP

port = int(sys.argv[1])
json_answers = "--json" in sys.argv[2:]

server = FastMCP("edge-test", host="127.0.0.1", port=port, json_response=json_answers)


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ValueError(f"failed on purpose: {reason}")


if __name__ == "__main__":
    server.run(transport="streamable-http")
