"""An MCP server from the official MCP Python SDK (FastMCP, Streamable
HTTP), on loopback, for the MCP tests.

Usage: mcp_server.py PORT [--json] [--log FILE]

With --json it answers with JSON bodies, else with SSE streams. With --log
every HTTP request is appended to FILE as one JSON line (method, path,
lowercase headers, body), so tests can assert what reached the server.

Tools: add (read-only), fail (always an error), slow (sleeps).

With --log, two reasons given to `fail` script failures of the transport
instead: `rpc-error` is answered with a JSON-RPC error (code -32603) and
`http-503` with HTTP 503, both before the call reaches the tool.

With --log, two more FastMCP servers answer on the same port, in the same
way (SSE, or JSON with --json), logged alike:

- /extra/mcp: `big` (its text output `kib` KiB long, of `char`),
  `repos.get/file` and `repos.get_file` (names that come out alike as
  chat function names), and two 70-character names that differ only past
  their 60th character; each but `big` answers with its own name.
- /many/mcp: 513 tools, `t0` to `t512`, one more than a listing may hold."""

import argparse
import asyncio
import contextlib
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


extra = FastMCP("edge-test-extra", host="127.0.0.1", port=args.port,
                json_response=args.json, streamable_http_path="/extra/mcp")


@extra.tool(structured_output=False)
def big(kib: int, char: str = "x") -> str:
    """Answers with `kib` KiB of `char`."""
    return char * (kib * 1024 // max(1, len(char.encode())))


def named(name):
    def tool() -> str:
        return name
    return tool


LONG_NAMES = ["x" * 69 + "a", "x" * 69 + "b"]
for name in ["repos.get/file", "repos.get_file"] + LONG_NAMES:
    extra.add_tool(named(name), name=name, description=f"Answers '{name}'.",
                   structured_output=False)

many = FastMCP("edge-test-many", host="127.0.0.1", port=args.port,
               json_response=args.json, streamable_http_path="/many/mcp")
for i in range(513):
    many.add_tool(named(f"t{i}"), name=f"t{i}", structured_output=False)


def scripted_failure(body):
    """The failure a `tools/call` of `fail` asks for, if any: the JSON-RPC
    request's id and `rpc-error` or `http-503`."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return None
    params = message.get("params") or {}
    reason = (params.get("arguments") or {}).get("reason")
    if params.get("name") == "fail" and reason in ("rpc-error", "http-503"):
        return message.get("id"), reason
    return None


async def answer(send, status, content_type, body):
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestLog:
    """ASGI middleware: one JSON line per request, written once its body
    has been read, and the scripted failures of `fail`; requests under
    /extra/ and /many/ go to those servers, and the lifespan runs all
    three."""

    def __init__(self, app, path):
        self.main = app
        self.path = path
        self.apps = {"/extra/": extra.streamable_http_app(),
                     "/many/": many.streamable_http_app()}

    async def lifespan(self, receive, send):
        async with contextlib.AsyncExitStack() as stack:
            for each in (server, extra, many):
                await stack.enter_async_context(each.session_manager.run())
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
        await send({"type": "lifespan.shutdown.complete"})

    def log(self, scope, body):
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            "headers": {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            "body": body.decode("utf-8", "replace"),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        if scope["type"] != "http":
            return await self.main(scope, receive, send)
        app = next((app for prefix, app in self.apps.items()
                    if scope["path"].startswith(prefix)), self.main)
        if scope["method"] != "POST":
            await app(scope, receive, send)
            return self.log(scope, b"")
        # A POST's body is read whole first, then handed on.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.log(scope, bytes(body))
        failure = scripted_failure(bytes(body))
        if failure and failure[1] == "http-503":
            return await answer(send, 503, b"text/plain", b"scripted outage")
        if failure:
            error = {"jsonrpc": "2.0", "id": failure[0],
                     "error": {"code": -32603, "message": "scripted JSON-RPC failure"}}
            return await answer(send, 200, b"application/json", json.dumps(error).encode())
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await app(scope, replay, send)


if __name__ == "__main__":
    app = server.streamable_http_app()
    # Without --log the SDK's app serves alone (the benchmark measures it).
    if args.log:
        app = RequestLog(app, args.log)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
