"""An MCP server from the official MCP Python SDK (FastMCP, Streamable
HTTP), on loopback, for the MCP tests.

Usage: mcp_server.py PORT [--json] [--log FILE]

With --json it answers with JSON bodies, else with SSE streams. With --log
every HTTP request is appended to FILE as one JSON line (method, path,
lowercase headers, body), so tests can assert what reached the server.

Tools: add (read-only), fail (always an error), slow (sleeps)."""

import argparse
import asyncio
import json

import uvicorn
from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--json", action="store_true")
parser.add_argument("--log")
args = parser.parse_args()

server = FastMCP("edge-test", host="127.0.0.1", port=args.port, json_response=args.json)


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ValueError(f"failed on purpose: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Answers after `seconds`."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


class RequestLog:
    """ASGI middleware: one JSON line per request, written once its body
    has been read."""

    def __init__(self, app, path):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body = bytearray()
        logged = False

        def log():
            entry = {
                "method": scope["method"],
                "path": scope["path"],
                "headers": {k.decode().lower(): v.decode() for k, v in scope["headers"]},
                "body": body.decode("utf-8", "replace"),
            }
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")

        async def logging_receive():
            nonlocal logged
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body") and not logged:
                    logged = True
                    log()
            return message

        await self.app(scope, logging_receive, send)
        if not logged:
            log()


if __name__ == "__main__":
    app = server.streamable_http_app()
    if args.log:
        app = RequestLog(app, args.log)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
