#!/usr/bin/env python3
"""A scripted web search provider on the Python standard library alone.

It answers the three search APIs the `web_search` tool calls
(src/search/provider.rs), with results derived from the query alone:

- SearXNG: `GET /search?q=..&format=json`. Without `format=json` it answers
  403, as an instance whose settings do not list `json` in `search.formats`.
- Brave: `GET /res/v1/web/search?q=..&count=..`. With `--key`, the header
  `x-subscription-token` must be that key (401 otherwise). Like Brave it
  answers 422 to an empty query, one over 400 characters or 50 words, a
  `count` outside 1..20 and a `country` it does not support; it puts
  `<strong>` around the query in descriptions unless `text_decorations` is
  false.
- Tavily: `POST /search` with a JSON body `{query, max_results,
  include_domains, ...}`. With `--key`, the header `authorization` must be
  `Bearer <key>` (401 otherwise); a body that is not such an object is a 400.

Every search has the same three results for a query `q` (its `site:` terms
and the `OR`s and parentheses around them left out), `slug` being `q` in
lowercase with runs of other characters than ASCII letters and digits made
`-`:

    https://docs.example.org/<slug>/1   "<q> documentation, part 1"
    https://docs.example.org/<slug>/2   "<q> documentation, part 2"
    https://news.example.com/<slug>/3   "<q> in the news"

with snippets that name `q`. `site:` terms (SearXNG, Brave) and
`include_domains` (Tavily) keep only the results on those domains or their
subdomains; Brave's `count` and Tavily's `max_results` keep the first ones.

Two query terms script failures: `status:NNN` answers HTTP NNN (with a JSON
error body), and `answer:malformed` answers 200 with a body that is not
JSON.

Requests need a `Content-Length` when they have a body (411 otherwise), and
every answer has one. Each request is logged (method, path, raw query,
parsed query parameters, headers with lowercase names, body as text);
`GET /_log` answers the log as a JSON array and `DELETE /_log` empties it
(neither is logged).

Usage: search_provider.py [--port PORT] [--key KEY] [--exit-with-stdin]
Prints `search_provider listening on http://127.0.0.1:PORT` once listening.
"""

import argparse
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

BRAVE_COUNTRIES = frozenset(
    "AR AU AT BE BR CA CL DK FI FR DE GR HK IN ID IT JP KR MY MX "
    "NL NZ NO CN PL PT PH RU SA ZA ES SE CH TW TR GB US ALL".split()
)
BRAVE_MAX_QUERY_CHARS = 400
BRAVE_MAX_QUERY_WORDS = 50
BRAVE_MAX_COUNT = 20
TAVILY_MAX_RESULTS = 20


def dumps(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def slug(text):
    """`text` in lowercase, runs of anything but ASCII letters and digits made `-`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "query"


def split_query(query):
    """The query without its `site:` terms (nor the `OR`s and parentheses
    joining them), and the domains of those terms."""
    tokens = query.split()
    bare = [token.strip("()") for token in tokens]
    is_site = [token.lower().startswith("site:") for token in bare]
    words, sites = [], []
    for i, token in enumerate(tokens):
        if is_site[i]:
            sites.append(normalize_domain(bare[i][len("site:") :]))
        elif token == "OR" and (i > 0 and is_site[i - 1] or i + 1 < len(tokens) and is_site[i + 1]):
            continue
        else:
            words.append(token)
    return " ".join(words), [site for site in sites if site]


def normalize_domain(domain):
    domain = domain.strip().lower()
    for prefix in ("https://", "http://"):
        if domain.startswith(prefix):
            domain = domain[len(prefix) :]
    domain = domain.split("/")[0].split(":")[0].rstrip(".")
    return domain[4:] if domain.startswith("www.") else domain


def host_of(url):
    return url.split("://", 1)[1].split("/", 1)[0]


def allowed(url, domains):
    if not domains:
        return True
    host = host_of(url)
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def script_terms(text):
    """The scripted failure of a query, if any: ('status', NNN) or
    ('malformed', None); and the query without those terms."""
    failure = None
    words = []
    for word in text.split():
        match = re.fullmatch(r"status:(\d{3})", word)
        if match:
            failure = ("status", int(match.group(1)))
        elif word == "answer:malformed":
            failure = ("malformed", None)
        else:
            words.append(word)
    return failure, " ".join(words)


def results(query, domains, limit):
    """The results for `query` on `domains` (any when empty), at most `limit`."""
    s = slug(query)
    all_results = [
        {
            "title": f"{query} documentation, part 1",
            "url": f"https://docs.example.org/{s}/1",
            "snippet": f"The first part of the documentation about {query}.",
        },
        {
            "title": f"{query} documentation, part 2",
            "url": f"https://docs.example.org/{s}/2",
            "snippet": f"The second part of the documentation about {query}.",
        },
        {
            "title": f"{query} in the news",
            "url": f"https://news.example.com/{s}/3",
            "snippet": f"What the news says about {query}.",
        },
    ]
    return [r for r in all_results if allowed(r["url"], domains)][: max(limit, 0)]


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.entries = []

    def add(self, entry):
        with self.lock:
            self.entries.append(entry)

    def all(self):
        with self.lock:
            return list(self.entries)

    def clear(self):
        with self.lock:
            self.entries.clear()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, key):
        super().__init__(address, Handler)
        self.key = key
        self.log = Log()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "search_provider"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        try:
            self.dispatch()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    # -- the wire

    def send(self, status, body, content_type="application/json"):
        if not isinstance(body, bytes):
            body = dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    # -- requests

    def dispatch(self):
        path, _, query = self.path.partition("?")
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.close_connection = True
            self.send(411, {"error": "A request body needs a Content-Length header."})
            return
        try:
            length = int(headers.get("content-length", "0").strip() or "0")
        except ValueError:
            self.close_connection = True
            self.send(400, {"error": "Invalid Content-Length header."})
            return
        raw = self.rfile.read(length) if length > 0 else b""

        if path == "/_log":
            if self.command == "GET":
                self.send(200, self.server.log.all())
            elif self.command == "DELETE":
                self.server.log.clear()
                self.send(200, {"cleared": True})
            else:
                self.send(405, {"error": f"Method {self.command} is not allowed on /_log"})
            return

        params = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(name, value)
        self.server.log.add(
            {
                "method": self.command,
                "path": path,
                "query": query,
                "params": params,
                "headers": headers,
                "body": raw.decode("utf-8", "replace"),
            }
        )
        if self.command == "GET" and path == "/search":
            self.searxng(params)
        elif self.command == "GET" and path == "/res/v1/web/search":
            self.brave(params, headers)
        elif self.command == "POST" and path == "/search":
            self.tavily(raw, headers)
        else:
            self.send(404, {"error": f"Unknown route {self.command} {path}"})

    def scripted(self, text):
        """Answers a scripted failure and returns None, or returns the query
        without the scripting terms."""
        failure, text = script_terms(text)
        if failure is None:
            return text
        kind, status = failure
        if kind == "malformed":
            self.send(200, b'{"results": [', "application/json")
        else:
            self.send(status, {"error": f"scripted status {status}"})
        return None

    def searxng(self, params):
        if params.get("format") != "json":
            self.send(403, b"<html><body>403 Forbidden</body></html>", "text/html")
            return
        text, sites = split_query(params.get("q", ""))
        text = self.scripted(text)
        if text is None:
            return
        if not text:
            self.send(400, b"Bad Request", "text/plain")
            return
        found = results(text, sites, 3)
        self.send(
            200,
            {
                "query": params.get("q", ""),
                "number_of_results": len(found),
                "results": [
                    {"title": r["title"], "url": r["url"], "content": r["snippet"], "engine": "scripted"}
                    for r in found
                ],
                "answers": [],
                "suggestions": [],
                "unresponsive_engines": [],
            },
        )

    def brave(self, params, headers):
        key = self.server.key
        if key is not None and headers.get("x-subscription-token") != key:
            self.send(
                401,
                {
                    "type": "ErrorResponse",
                    "error": {
                        "status": 401,
                        "code": "SUBSCRIPTION_TOKEN_INVALID",
                        "detail": "The provided subscription token is invalid.",
                    },
                },
            )
            return
        q = params.get("q", "")
        problems = []
        if not q.strip() or len(q) > BRAVE_MAX_QUERY_CHARS or len(q.split()) > BRAVE_MAX_QUERY_WORDS:
            problems.append("q")
        try:
            count = int(params.get("count", str(BRAVE_MAX_COUNT)))
        except ValueError:
            count = -1
        if not 1 <= count <= BRAVE_MAX_COUNT:
            problems.append("count")
        if "country" in params and params["country"].upper() not in BRAVE_COUNTRIES:
            problems.append("country")
        if problems:
            self.send(
                422,
                {
                    "type": "ErrorResponse",
                    "error": {"status": 422, "code": "VALIDATION", "detail": f"Invalid: {', '.join(problems)}"},
                },
            )
            return
        text, sites = split_query(q)
        text = self.scripted(text)
        if text is None:
            return
        decorate = params.get("text_decorations", "true").lower() not in ("false", "0")
        shown = f"<strong>{text}</strong>" if decorate else text
        found = results(text, sites, count)
        web = [
            {
                "type": "search_result",
                "title": r["title"],
                "url": r["url"],
                "description": r["snippet"].replace(text, shown),
                "is_source_local": False,
            }
            for r in found
        ]
        answer = {"type": "search", "query": {"original": q}}
        if web:
            answer["web"] = {"type": "search", "results": web}
        self.send(200, answer)

    def tavily(self, raw, headers):
        key = self.server.key
        if key is not None and headers.get("authorization") != f"Bearer {key}":
            self.send(401, {"detail": {"error": "Unauthorized: missing or invalid API key."}})
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            self.send(400, {"detail": {"error": "The body must be a JSON object with a string 'query'."}})
            return
        max_results = body.get("max_results", 5)
        domains = body.get("include_domains") or []
        if (
            not isinstance(max_results, int)
            or not 0 <= max_results <= TAVILY_MAX_RESULTS
            or not isinstance(domains, list)
            or not all(isinstance(d, str) for d in domains)
        ):
            self.send(400, {"detail": {"error": "Invalid max_results or include_domains."}})
            return
        text = self.scripted(body["query"].strip())
        if text is None:
            return
        found = results(text, [normalize_domain(d) for d in domains], max_results)
        self.send(
            200,
            {
                "query": body["query"],
                "results": [
                    {"title": r["title"], "url": r["url"], "content": r["snippet"], "score": 0.9 - i / 10}
                    for i, r in enumerate(found)
                ],
                "response_time": 0.01,
            },
        )


def exit_when_stdin_closes():
    """Ends the process once its parent closes our stdin (or dies)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--key", help="the API key Brave and Tavily requests must carry (none: any)")
    parser.add_argument(
        "--exit-with-stdin", action="store_true", help="exit when stdin closes (for a parent that owns this process)"
    )
    options = parser.parse_args()
    server = Server(("127.0.0.1", options.port), options.key)
    port = server.server_address[1]
    if options.exit_with_stdin:
        threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"search_provider listening on http://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
