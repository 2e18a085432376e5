#!/usr/bin/env python3
"""A scripted chat-completions backend on the Python standard library alone.

The second, independent implementation of the scripted backend in
tests/backend (Rust, on hyper): the same scripted behaviour, driven over
HTTP, on a different HTTP stack with different wire habits, so that the
integration tests can run against both and catch what only one of them
tolerates. On purpose:

- request bodies are read only by `Content-Length`; a chunked body reads as
  empty (it is not decoded) and the connection is closed after the answer;
- streams are server-sent events over HTTP/1.1 with `Connection: close` and
  no `Content-Length`: the body ends when the socket closes; every frame is
  flushed as it is written;
- JSON answers carry `Content-Length` and keep the connection alive.

Routes:

- `POST /v1/chat/completions` (or any other base path before
  `/chat/completions`, as Azure's `/openai/deployments/<name>`): answered with the next queued reply spec,
  else the default one (initially the echo, `Hello! You said: <last user
  text>` word by word), rendered exactly as the Rust backend renders it;
- `GET /v1/models` (any base path as well);
- the control endpoints under `/_scripted/` (never recorded, never counted):
  `POST replies` (an array of reply specs), `GET replies` (`{"pending"}`),
  `POST default`, `POST models` (an array of ids), `POST quirks`,
  `GET requests` (`?wait_for=N&wait=SECONDS`), `DELETE requests`,
  `GET connections`, `POST recording`, `GET gates/{id}?wait=SECONDS`,
  `POST gates/{id}/release`.

Reply specs are the JSON form of the Rust `Reply`; tests/backend/src/control.rs
documents their keys, and this file reads them the same way.

Usage: chat_backend.py [--port PORT] [--exit-with-stdin]
Prints `chat_backend listening on http://127.0.0.1:PORT/v1` once listening.
"""

import argparse
import base64
import itertools
import json
import os
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # Linux and other Unixes: how many sent bytes are not yet acknowledged.
    import fcntl
    import termios

    def unacknowledged(sock):
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]

except ImportError:  # pragma: no cover

    def unacknowledged(sock):
        return 0

DEFAULT_MODEL = "test-model"
DEFAULT_REASONING_FIELD = "reasoning_content"
DEFAULT_ARGUMENT_FRAGMENT_CHARS = 8

# The longest a stream waits at a gate, and a control request on a gate or
# on the request log, in seconds.
GATE_HOLD_LIMIT = 600.0
CONTROL_WAIT_LIMIT = 60.0
# The longest an aborted connection waits for its sent bytes to be
# acknowledged before it is reset.
DRAIN_LIMIT = 5.0

DONE_FRAME = b"data: [DONE]\n\n"
MALFORMED_FRAME = b'data: {"id":"chatcmpl-malformed","choices":[{"delta":\n\n'
KEEPALIVE_FRAME = b": keep-alive\n\n"

LENGTH_REQUIRED_MESSAGE = "A request body needs a Content-Length header."
AZURE_UNAUTHORIZED = {
    "error": {
        "message": "Access denied due to invalid subscription key or wrong API endpoint.",
        "type": "invalid_request_error",
        "param": None,
        "code": "401",
    }
}
AZURE_NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}

# Unicode White_Space, which Rust's `char::is_whitespace` follows (Python's
# `str.isspace` also counts U+001C..U+001F).
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)

_completion_ids = itertools.count(1)


def dumps(value):
    """Compact JSON with sorted keys, as serde_json writes it."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def split_words(text):
    """Words, each keeping the whitespace before it (they concatenate back)."""
    pieces = []
    start = 0
    previous_is_space = True
    for index, ch in enumerate(text):
        is_space = ch in WHITESPACE
        if is_space and not previous_is_space and index > start:
            pieces.append(text[start:index])
            start = index
        previous_is_space = is_space
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def count_words(text):
    words = 0
    in_word = False
    for ch in text:
        if ch in WHITESPACE:
            in_word = False
        elif not in_word:
            in_word = True
            words += 1
    return words


def split_chars(text, size):
    size = max(size, 1)
    return [text[i : i + size] for i in range(0, len(text), size)]


def default_error_type(status):
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if 500 <= status <= 599:
        return "server_error"
    return "invalid_request_error"


def error_body(message, error_type, param=None, code=None):
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------- reply specs


class SpecError(Exception):
    """A reply spec (or control body) that cannot be read."""


class Gate:
    """Holds a stream at one point until released."""

    def __init__(self):
        self.reached = threading.Event()
        self.released = threading.Event()

    def pass_(self):
        self.reached.set()
        self.released.wait(GATE_HOLD_LIMIT)

    def state(self):
        return {"reached": self.reached.is_set(), "released": self.released.is_set()}


SPEC_KEYS = frozenset(
    """content echo text reasoning reasoning_field tool_calls interleave_tool_calls
    argument_fragment_chars finish_reason finish_on_last_delta usage reasoning_tokens
    cached_tokens no_usage logprobs empty_deltas keepalive_comment json_despite_stream
    cut_after malformed_after error_after without_done delay_before_first_ms
    delay_between_chunks_ms gates headers error raw hang_ms""".split()
)


def _present(spec, key):
    value = spec.get(key)
    return None if value is None else value


def _optional_str(spec, key, what):
    value = _present(spec, key)
    if value is None or isinstance(value, str):
        return value
    raise SpecError(f"{what}.{key} must be a string")


def _flag(spec, key):
    value = _present(spec, key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise SpecError(f"{key} must be true or false")


def _number(spec, key):
    value = _present(spec, key)
    if value is None:
        return None
    if is_int(value) and value >= 0:
        return value
    raise SpecError(f"{key} must be a non-negative integer")


def _status(spec, what):
    value = spec.get("status")
    if is_int(value) and 100 <= value <= 999:
        return value
    raise SpecError(f"{what} must be an HTTP status")


def _strings(value, what):
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise SpecError(f"{what} must be an array of strings")


def _seconds(value, what):
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and value != float("inf"):
        return value / 1000.0
    raise SpecError(f"{what} must be a non-negative number of milliseconds")


class Reply:
    """One scripted answer, read from a reply spec."""

    def __init__(self, spec, gate_for):
        if not isinstance(spec, dict):
            raise SpecError("a reply spec must be a JSON object")
        unknown = [key for key in spec if key not in SPEC_KEYS]
        if unknown:
            raise SpecError(f"unknown reply spec key `{unknown[0]}`")
        self.kind = "completion"
        error = _present(spec, "error")
        raw = _present(spec, "raw")
        hang = _present(spec, "hang_ms")
        if error is not None:
            if not isinstance(error, dict):
                raise SpecError("error.status must be an HTTP status")
            self.kind = "error"
            status = _status(error, "error.status")
            message = _optional_str(error, "message", "error")
            error_type = _optional_str(error, "type", "error")
            self.error = {
                "status": status,
                "message": "scripted error" if message is None else message,
                "type": default_error_type(status) if error_type is None else error_type,
                "param": _optional_str(error, "param", "error"),
                "code": _optional_str(error, "code", "error"),
            }
        elif raw is not None:
            if not isinstance(raw, dict):
                raise SpecError("raw.status must be an HTTP status")
            self.kind = "raw"
            content_type = _optional_str(raw, "content_type", "raw")
            self.raw = {
                "status": _status(raw, "raw.status"),
                "content_type": "application/json" if content_type is None else content_type,
                "body": _optional_str(raw, "body", "raw") or "",
            }
        elif hang is not None:
            self.kind = "hang"
            self.hang = _seconds(hang, "hang_ms")

        # The completion.
        if "content" in spec:
            content = spec["content"]
            self.content = ("none", None) if content is None else ("pieces", _strings(content, "content"))
        elif _flag(spec, "echo"):
            self.content = ("echo", None)
        else:
            self.content = ("pieces", split_words(_optional_str(spec, "text", "spec") or ""))
        reasoning = _present(spec, "reasoning")
        if reasoning is None:
            self.reasoning = []
        elif isinstance(reasoning, str):
            self.reasoning = split_words(reasoning)
        else:
            self.reasoning = _strings(reasoning, "reasoning")
        field = _optional_str(spec, "reasoning_field", "spec")
        self.reasoning_field = DEFAULT_REASONING_FIELD if field is None else field
        self.tool_calls = []
        calls = _present(spec, "tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise SpecError("tool_calls must be an array")
        for call in calls or []:
            if not isinstance(call, dict):
                raise SpecError("tool_calls[].id is required")
            call_id = _optional_str(call, "id", "tool_calls[]")
            name = _optional_str(call, "name", "tool_calls[]")
            if call_id is None:
                raise SpecError("tool_calls[].id is required")
            if name is None:
                raise SpecError("tool_calls[].name is required")
            arguments = _optional_str(call, "arguments", "tool_calls[]")
            self.tool_calls.append((call_id, name, "{}" if arguments is None else arguments))
        self.interleave_tool_calls = _flag(spec, "interleave_tool_calls")
        chars = _number(spec, "argument_fragment_chars")
        self.fragment_chars = DEFAULT_ARGUMENT_FRAGMENT_CHARS if chars is None else max(chars, 1)
        self.finish_reason = _optional_str(spec, "finish_reason", "spec")
        self.finish_on_last_delta = _flag(spec, "finish_on_last_delta")
        usage = _present(spec, "usage")
        if usage is None:
            self.usage_counts = None
        elif isinstance(usage, list) and len(usage) == 2 and all(is_int(n) and n >= 0 for n in usage):
            self.usage_counts = (usage[0], usage[1])
        else:
            raise SpecError("usage must be two integers")
        self.reasoning_tokens = _number(spec, "reasoning_tokens")
        self.cached_tokens = _number(spec, "cached_tokens")
        self.no_usage = _flag(spec, "no_usage")
        self.logprobs = _flag(spec, "logprobs")
        self.empty_deltas = _flag(spec, "empty_deltas")
        self.keepalive_comment = _flag(spec, "keepalive_comment")
        self.json_despite_stream = _flag(spec, "json_despite_stream")

        # Faults.
        self.cut_after = _number(spec, "cut_after")
        self.malformed_after = _number(spec, "malformed_after")
        error_after = _present(spec, "error_after")
        if error_after is None:
            self.error_after = None
        else:
            if not isinstance(error_after, dict):
                raise SpecError("error_after.after is required")
            after = _number(error_after, "after")
            if after is None:
                raise SpecError("error_after.after is required")
            message = _optional_str(error_after, "message", "error_after")
            self.error_after = (after, "scripted error" if message is None else message)
        self.without_done = _flag(spec, "without_done")

        # Timing.
        delay = _present(spec, "delay_before_first_ms")
        self.before_first = 0.0 if delay is None else _seconds(delay, "delay_before_first_ms")
        delay = _present(spec, "delay_between_chunks_ms")
        self.between_chunks = 0.0 if delay is None else _seconds(delay, "delay_between_chunks_ms")
        self.gates = []
        gates = _present(spec, "gates")
        if gates is not None and not isinstance(gates, list):
            raise SpecError("gates must be an array")
        for entry in gates or []:
            if not isinstance(entry, dict):
                raise SpecError("gates[].id is required")
            gate_id = _optional_str(entry, "id", "gates[]")
            if gate_id is None:
                raise SpecError("gates[].id is required")
            at = entry.get("at")
            if at == "finish" or at == "done":
                position = at
            elif is_int(at) and at >= 0:
                position = at
            elif at is None:
                raise SpecError("gates[].at is required")
            else:
                raise SpecError('gates[].at must be a chunk index, "finish" or "done"')
            gate = gate_for(gate_id)
            if _flag(entry, "released"):
                gate.released.set()
            self.gates.append((position, gate))

        self.headers = []
        headers = _present(spec, "headers")
        if headers is not None and not isinstance(headers, list):
            raise SpecError("headers must be an array")
        for pair in headers or []:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise SpecError("headers must be [name, value] string pairs")
            self.headers.append((pair[0], pair[1]))


# ------------------------------------------------------------------ rendering


class RequestInfo:
    """What rendering needs to know about the request being answered."""

    def __init__(self, body, default_model):
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        model = body.get("model")
        self.model = model if isinstance(model, str) else default_model
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.logprobs = body.get("logprobs") is True
        top = body.get("top_logprobs")
        self.top_logprobs = min(top, 20) if is_int(top) and 0 <= top < 2**64 else 0
        self.last_user_text = last_user_text(messages)
        self.prompt_words = sum(count_words(message_text(message)) for message in messages)


def message_text(message):
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def last_user_text(messages):
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


class Renderer:
    """Chat-completions JSON for one reply and request: stream chunks or one
    `chat.completion` object."""

    def __init__(self, reply, info):
        self.reply = reply
        self.info = info
        self.id = f"chatcmpl-scripted{next(_completion_ids):016x}"
        self.created = int(time.time())
        self.pieces = self._pieces()

    def _pieces(self):
        reply = self.reply
        pieces = [("reasoning", text) for text in reply.reasoning]
        kind, value = reply.content
        if kind == "pieces":
            content = value
        elif kind == "echo":
            content = split_words(f"Hello! You said: {self.info.last_user_text}")
        else:
            content = []
        pieces.extend(("content", text, position) for position, text in enumerate(content))
        per_call = []
        for index, (call_id, name, arguments) in enumerate(reply.tool_calls):
            call = [("tool_start", index, call_id, name)]
            call.extend(("tool_arguments", index, fragment) for fragment in split_chars(arguments, reply.fragment_chars))
            per_call.append(call)
        if reply.interleave_tool_calls:
            iterators = [iter(call) for call in per_call]
            while True:
                round_ = [piece for piece in (next(it, None) for it in iterators) if piece is not None]
                if not round_:
                    break
                pieces.extend(round_)
        else:
            for call in per_call:
                pieces.extend(call)
        return pieces

    def sends_stream_usage(self):
        return self.info.include_usage and not self.reply.no_usage

    def stream(self):
        """The data chunks of a stream and the index of the finish chunk."""
        chunks = [self._chunk({"role": "assistant", "content": ""})]
        for number, piece in enumerate(self.pieces):
            chunks.append(self._chunk(self._delta(piece), self._piece_logprobs(piece)))
            if self.reply.empty_deltas:
                chunks.append(self._chunk({} if number % 2 == 0 else {"content": ""}))
        reuse_last = self.reply.finish_on_last_delta and bool(self.pieces)
        if not reuse_last:
            chunks.append(self._chunk({}))
        finish_index = len(chunks) - 1
        chunks[finish_index]["choices"][0]["finish_reason"] = self._finish_reason()
        if self.sends_stream_usage():
            chunks.append(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.info.model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": self._usage(),
                }
            )
        return chunks, finish_index

    def completion(self):
        message = {"role": "assistant", "content": self._joined_content(), "refusal": None}
        if self.reply.reasoning:
            message[self.reply.reasoning_field] = "".join(self.reply.reasoning)
        if self.reply.tool_calls:
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
                for call_id, name, arguments in self.reply.tool_calls
            ]
        completion = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.info.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": self._all_logprobs(),
                    "finish_reason": self._finish_reason(),
                }
            ],
        }
        if not self.reply.no_usage:
            completion["usage"] = self._usage()
        return completion

    def _chunk(self, delta, logprobs=None):
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.info.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}],
        }
        if self.sends_stream_usage():
            chunk["usage"] = None
        return chunk

    def _delta(self, piece):
        kind = piece[0]
        if kind == "reasoning":
            return {self.reply.reasoning_field: piece[1]}
        if kind == "content":
            return {"content": piece[1]}
        if kind == "tool_start":
            _, index, call_id, name = piece
            return {
                "tool_calls": [
                    {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                ]
            }
        _, index, fragment = piece
        return {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}

    def _wants_logprobs(self):
        return self.reply.logprobs or self.info.logprobs

    def _piece_logprobs(self, piece):
        if piece[0] == "content" and self._wants_logprobs():
            return {"content": [self._token_logprob(piece[1], piece[2])], "refusal": None}
        return None

    def _all_logprobs(self):
        if not self._wants_logprobs():
            return None
        content = [self._token_logprob(piece[1], piece[2]) for piece in self.pieces if piece[0] == "content"]
        return {"content": content, "refusal": None}

    def _token_logprob(self, token, position):
        logprob = -0.01 * float((position % 7) + 1)
        top = []
        for rank in range(self.info.top_logprobs):
            alternative = token if rank == 0 else f"alt{rank}"
            top.append({"token": alternative, "logprob": logprob - float(rank), "bytes": list(alternative.encode())})
        return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top}

    def _joined_content(self):
        if self.reply.content[0] == "none":
            return None
        return "".join(piece[1] for piece in self.pieces if piece[0] == "content")

    def _finish_reason(self):
        if self.reply.finish_reason is not None:
            return self.reply.finish_reason
        return "tool_calls" if self.reply.tool_calls else "stop"

    def _usage(self):
        generated = sum(1 for piece in self.pieces if piece[0] != "tool_start")
        prompt, completion = self.reply.usage_counts or (self.info.prompt_words, generated)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if self.reply.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.reply.cached_tokens}
        if self.reply.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reply.reasoning_tokens}
        return usage


def stream_error(message):
    return error_body(message, "server_error")


def data_frame(chunk):
    return f"data: {dumps(chunk)}\n\n".encode()


# ---------------------------------------------------------------------- state


class State:
    """The queue, the default reply, the models, the quirks, the log and the
    gates; one lock guards them all."""

    def __init__(self):
        self.lock = threading.Condition()
        self.queue = []
        self.gates = {}
        self.default_reply = Reply({"echo": True}, self.gate)
        self.models = [DEFAULT_MODEL]
        self.log = []
        self.recording = True
        self.connections = 0
        self.require_content_length = False
        self.rejections = {}
        self.required_headers = {}
        self.required_query = None

    def gate(self, gate_id):
        with self.lock:
            gate = self.gates.get(gate_id)
            if gate is None:
                gate = self.gates[gate_id] = Gate()
            return gate

    def default_model(self):
        with self.lock:
            return self.models[0] if self.models else DEFAULT_MODEL

    def record(self, entry):
        with self.lock:
            if self.recording:
                self.log.append(entry)
                self.lock.notify_all()

    def next_reply(self, body):
        with self.lock:
            for name, reply in self.rejections.items():
                if _has_path(body, name):
                    return reply
            if self.queue:
                return self.queue.pop(0)
            return self.default_reply

    def set_quirks(self, body):
        if not isinstance(body, dict):
            raise SpecError("the body must be a JSON object")
        names = ["require_content_length", "reject_params", "require_headers", "require_query"]
        unknown = [key for key in body if key not in names and key != "clear"]
        if unknown:
            raise SpecError(f"unknown quirk `{unknown[0]}`")
        clear = body.get("clear")
        if clear is None or clear is False:
            clear = []
        elif clear is True:
            clear = names
        elif not (isinstance(clear, list) and all(name in names for name in clear)):
            raise SpecError("clear must be true or a list of quirk names")
        on = body.get("require_content_length")
        if on is not None and not isinstance(on, bool):
            raise SpecError("require_content_length must be true or false")
        rejections = body.get("reject_params")
        if rejections is not None and not isinstance(rejections, dict):
            raise SpecError("reject_params must map names to reply specs")
        rejections = {name: Reply(spec, self.gate) for name, spec in (rejections or {}).items()}
        headers = body.get("require_headers")
        if headers is not None and not (
            isinstance(headers, dict) and all(isinstance(value, str) for value in headers.values())
        ):
            raise SpecError("require_headers must map names to string values")
        query = body.get("require_query")
        if query is not None and not isinstance(query, str):
            raise SpecError("require_query must be a string")
        with self.lock:
            for name in clear:
                if name == "require_content_length":
                    self.require_content_length = False
                elif name == "reject_params":
                    self.rejections.clear()
                elif name == "require_headers":
                    self.required_headers.clear()
                else:
                    self.required_query = None
            if on is not None:
                self.require_content_length = on
            self.rejections.update(rejections)
            for name, value in (headers or {}).items():
                self.required_headers[name.lower()] = value
            if query is not None:
                self.required_query = query


# ------------------------------------------------------------------- serving


class ClientGone(Exception):
    """The client closed the connection; the answer stops."""


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, state):
        super().__init__(address, Handler)
        self.state = state
        self.aborted = set()
        self.aborted_lock = threading.Lock()

    def shutdown_request(self, request):
        # An aborted connection is reset: no FIN first, which would read as
        # the normal end of a stream framed by the connection's close.
        with self.aborted_lock:
            aborted = id(request) in self.aborted
            self.aborted.discard(id(request))
        if aborted:
            self.close_request(request)
        else:
            super().shutdown_request(request)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "chat_backend"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.counted = False

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        try:
            self.dispatch()
        except (ClientGone, ConnectionError):
            self.close_connection = True

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- requests

    def dispatch(self):
        state = self.server.state
        path, mark, query = self.path.partition("?")
        query = query if mark else None
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        transfer_encoding = headers.get("transfer-encoding")
        chunked = transfer_encoding is not None and "chunked" in transfer_encoding.lower()
        content_length = None
        if "content-length" in headers:
            try:
                content_length = int(headers["content-length"].strip())
            except ValueError:
                self.close_connection = True
                self.send_json(400, error_body("Invalid Content-Length header.", "invalid_request_error"))
                return
        if chunked:
            # Not decoded on purpose: the body reads as empty, and what is
            # left of it on the socket would be read as the next request.
            raw = b""
            self.close_connection = True
        elif content_length:
            raw = self.rfile.read(content_length)
        else:
            raw = b""
        body = parse_json(raw)

        if path.startswith("/_scripted/"):
            self.control(path[len("/_scripted/") :], query, body)
            return
        if not self.counted:
            self.counted = True
            with state.lock:
                state.connections += 1
        request = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": headers,
            "body_base64": base64.b64encode(raw).decode(),
            "content_length": content_length,
            "chunked": chunked,
        }
        state.record(request)
        if self.refuse(request):
            return
        if is_chat_completions(request):
            self.chat_completions(body)
        elif is_models(request):
            with state.lock:
                models = list(state.models)
            data = [
                {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "scripted-backend"}
                for model in models
            ]
            self.send_json(200, {"object": "list", "data": data})
        else:
            message = f"Unknown request URL: {self.command} {path}"
            self.send_json(404, error_body(message, "invalid_request_error", None, "unknown_url"))

    def refuse(self, request):
        """Answers what the quirks refuse; whether it did."""
        state = self.server.state
        with state.lock:
            require_content_length = state.require_content_length
            required_headers = dict(state.required_headers)
            required_query = state.required_query
        if require_content_length and request["method"] == "POST" and request["content_length"] is None:
            self.send_json(411, error_body(LENGTH_REQUIRED_MESSAGE, "invalid_request_error"))
            return True
        if not (is_chat_completions(request) or is_models(request)):
            return False
        headers = request["headers"]
        if any(headers.get(name) != value for name, value in required_headers.items()):
            self.send_json(401, AZURE_UNAUTHORIZED)
            return True
        if required_query is not None and (request["query"] or "") != required_query:
            self.send_json(404, AZURE_NOT_FOUND)
            return True
        return False

    def chat_completions(self, body):
        state = self.server.state
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request. The body must be a JSON object."
            self.send_json(400, error_body(message, "invalid_request_error"))
            return
        if not isinstance(body.get("messages"), list):
            self.send_json(400, error_body("'messages' is a required property", "invalid_request_error", "messages"))
            return
        info = RequestInfo(body, state.default_model())
        reply = state.next_reply(body)
        try:
            self.respond(reply, info)
        except (ClientGone, ConnectionError):
            self.close_connection = True

    # -- answers

    def respond(self, reply, info):
        if reply.kind == "hang":
            time.sleep(reply.hang)
            self.close_connection = True
            return
        if reply.kind == "completion" and info.stream and not reply.json_despite_stream:
            self.stream(reply, info)
            return
        self.hold(reply)
        if reply.kind == "error":
            error = reply.error
            body = error_body(error["message"], error["type"], error["param"], error["code"])
            self.send_json(error["status"], body, reply.headers)
        elif reply.kind == "raw":
            raw = reply.raw
            self.send_body(raw["status"], raw["content_type"], raw["body"].encode(), reply.headers)
        else:
            self.completion(reply, info)

    def hold(self, reply):
        for _, gate in reply.gates:
            gate.pass_()
        if reply.before_first:
            time.sleep(reply.before_first)

    def completion(self, reply, info):
        if reply.error_after is not None:
            self.send_json(500, stream_error(reply.error_after[1]), reply.headers)
            return
        body = dumps(Renderer(reply, info).completion()).encode()
        half = body[: len(body) // 2]
        if reply.cut_after is not None:
            self.send_head(200, "application/json", len(body), reply.headers)
            self.write(half)
            self.abort()
        elif reply.malformed_after is not None:
            self.send_body(200, "application/json", half, reply.headers)
        else:
            self.send_body(200, "application/json", body, reply.headers)

    def stream(self, reply, info):
        chunks, finish_index = Renderer(reply, info).stream()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        if reply.keepalive_comment:
            self.write(KEEPALIVE_FRAME)
        for index, chunk in enumerate(chunks):
            if not self.apply_fault(reply, chunks, index):
                return
            for position, gate in reply.gates:
                holds = position == index if is_int(position) else (position == "finish" and finish_index == index)
                if holds:
                    gate.pass_()
            delay = reply.before_first if index == 0 else reply.between_chunks
            if delay:
                time.sleep(delay)
            self.write(data_frame(chunk))
        if not self.apply_fault(reply, chunks, len(chunks)):
            return
        for position, gate in reply.gates:
            if position == "done" or (is_int(position) and position >= len(chunks)):
                gate.pass_()
        if not reply.without_done:
            self.write(DONE_FRAME)

    def apply_fault(self, reply, chunks, sent):
        """Plays the fault placed after `sent` chunks; whether the stream
        goes on. A position past the last chunk means just before [DONE]."""

        def at(after):
            return after is not None and min(after, len(chunks)) == sent

        if at(reply.cut_after):
            self.abort()
            return False
        if at(reply.malformed_after):
            self.write(MALFORMED_FRAME)
            return True
        if reply.error_after is not None and at(reply.error_after[0]):
            self.write(data_frame(stream_error(reply.error_after[1])))
            self.write(DONE_FRAME)
            return False
        return True

    # -- the wire

    def write(self, data):
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as gone:
            raise ClientGone() from gone

    def send_head(self, status, content_type, length, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def send_body(self, status, content_type, body, headers=()):
        self.send_head(status, content_type, len(body), headers)
        self.write(body)

    def send_json(self, status, value, headers=()):
        self.send_body(status, "application/json", dumps(value).encode(), headers)

    def abort(self):
        """Resets the connection once what was sent has been acknowledged,
        so the client sees an error rather than the end of the body."""
        sock = self.connection
        deadline = time.monotonic() + DRAIN_LIMIT
        while time.monotonic() < deadline:
            try:
                unsent = unacknowledged(sock)
            except OSError:
                break
            if unsent == 0:
                break
            time.sleep(0.001)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self.server.aborted_lock:
            self.server.aborted.add(id(sock))
        self.close_connection = True

    # -- control

    def control(self, endpoint, query, body):
        state = self.server.state
        params = parse_query(query)
        try:
            answer = self.control_answer(state, endpoint, params, body)
        except SpecError as error:
            self.send_json(400, error_body(str(error), "invalid_request_error"))
            return
        if answer is None:
            message = f"Unknown request URL: {self.command} /_scripted/{endpoint}"
            self.send_json(404, error_body(message, "invalid_request_error", None, "unknown_url"))
        else:
            self.send_json(200, answer)

    def control_answer(self, state, endpoint, params, body):
        method = self.command
        if (method, endpoint) == ("POST", "replies"):
            if not isinstance(body, list):
                raise SpecError("the body must be a JSON array of reply specs")
            replies = [Reply(spec, state.gate) for spec in body]
            with state.lock:
                state.queue.extend(replies)
            return {"queued": len(replies)}
        if (method, endpoint) == ("GET", "replies"):
            with state.lock:
                return {"pending": len(state.queue)}
        if (method, endpoint) == ("POST", "default"):
            reply = Reply(body, state.gate)
            with state.lock:
                state.default_reply = reply
            return {"ok": True}
        if (method, endpoint) == ("POST", "models"):
            if not (isinstance(body, list) and all(isinstance(model, str) for model in body)):
                raise SpecError("the body must be an array of model ids")
            with state.lock:
                state.models = list(body)
            return {"ok": True}
        if (method, endpoint) == ("POST", "quirks"):
            state.set_quirks(body)
            return {"ok": True}
        if (method, endpoint) == ("GET", "requests"):
            wait_for = params.get("wait_for")
            with state.lock:
                if wait_for is not None and wait_for.isdigit():
                    state.lock.wait_for(lambda: len(state.log) >= int(wait_for), wait_seconds(params))
                return {"requests": list(state.log)}
        if (method, endpoint) == ("DELETE", "requests"):
            with state.lock:
                state.log.clear()
            return {"ok": True}
        if (method, endpoint) == ("GET", "connections"):
            with state.lock:
                return {"connections": state.connections}
        if (method, endpoint) == ("POST", "recording"):
            recording = body.get("recording") if isinstance(body, dict) else None
            if not isinstance(recording, bool):
                raise SpecError('the body must be {"recording": true|false}')
            with state.lock:
                state.recording = recording
            return {"ok": True}
        if endpoint.startswith("gates/"):
            rest = endpoint[len("gates/") :]
            if method == "POST" and rest.endswith("/release"):
                gate = state.gate(rest[: -len("/release")])
                gate.released.set()
                return gate.state()
            if method == "GET" and "/" not in rest:
                gate = state.gate(rest)
                gate.reached.wait(wait_seconds(params))
                return gate.state()
            raise SpecError(f"no gate endpoint {method} {rest}")
        return None


def is_chat_completions(request):
    """`POST <base>/chat/completions`, whatever the base path (`/v1`,
    `/openai/deployments/<name>`, `/api/v1`...)."""
    return request["method"] == "POST" and request["path"].endswith("/chat/completions")


def is_models(request):
    """`GET <base>/models`, whatever the base path."""
    return request["method"] == "GET" and request["path"].endswith("/models")


def parse_json(raw):
    """The body as JSON, or None, accepting what serde_json accepts."""
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _has_path(body, path):
    """Whether `body` has the key at dotted `path` (`a.b` is body["a"]["b"])."""
    value = body
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_query(query):
    params = {}
    for pair in (query or "").split("&"):
        if pair:
            name, _, value = pair.partition("=")
            params.setdefault(name, value)
    return params


def wait_seconds(params):
    try:
        seconds = float(params.get("wait", "0"))
    except ValueError:
        return 0.0
    if seconds != seconds or seconds <= 0:
        return 0.0
    return min(seconds, CONTROL_WAIT_LIMIT)


def exit_when_stdin_closes():
    """Ends the process once its parent closes our stdin (or dies)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        # `os._exit`: the serving threads would otherwise keep it alive.
        os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument(
        "--exit-with-stdin", action="store_true", help="exit when stdin closes (for a parent that owns this process)"
    )
    options = parser.parse_args()
    server = Server(("127.0.0.1", options.port), State())
    port = server.server_address[1]
    if options.exit_with_stdin:
        threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"chat_backend listening on http://127.0.0.1:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
