"""Streaming through the official `openai` Python SDK.

`client.responses.stream(...)` accumulates the same Response as the
non-streaming path, and `client.responses.create(stream=True)` yields events
that validate as the SDK's typed event classes. Replies are scripted on the
backend over HTTP (EDGE_RESPONSES_BACKEND_ORIGIN, set by tests/python_sdk.rs).
"""

import json
import os
import urllib.request

import openai
import pytest
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseReasoningTextDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

BASE_URL = os.environ["EDGE_RESPONSES_BASE_URL"]
BACKEND_ORIGIN = os.environ.get("EDGE_RESPONSES_BACKEND_ORIGIN")

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

EVENT_CLASSES = {
    "response.created": ResponseCreatedEvent,
    "response.in_progress": ResponseInProgressEvent,
    "response.output_item.added": ResponseOutputItemAddedEvent,
    "response.output_item.done": ResponseOutputItemDoneEvent,
    "response.content_part.added": ResponseContentPartAddedEvent,
    "response.content_part.done": ResponseContentPartDoneEvent,
    "response.output_text.delta": ResponseTextDeltaEvent,
    "response.output_text.done": ResponseTextDoneEvent,
    "response.reasoning_text.delta": ResponseReasoningTextDeltaEvent,
    "response.reasoning_text.done": ResponseReasoningTextDoneEvent,
    "response.function_call_arguments.delta": ResponseFunctionCallArgumentsDeltaEvent,
    "response.function_call_arguments.done": ResponseFunctionCallArgumentsDoneEvent,
    "response.completed": ResponseCompletedEvent,
    "response.incomplete": ResponseIncompleteEvent,
    "response.failed": ResponseFailedEvent,
    "error": ResponseErrorEvent,
}

@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0)


def queue(*specs):
    """Queues scripted backend replies (see tests/backend/src/control.rs)."""
    if BACKEND_ORIGIN is None:
        pytest.skip("EDGE_RESPONSES_BACKEND_ORIGIN is not set")
    request = urllib.request.Request(
        BACKEND_ORIGIN + "/_scripted/replies",
        data=json.dumps(list(specs)).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        assert json.load(answer)["queued"] == len(specs)


def shape(response):
    """The structure of a Response, without ids and timestamps."""
    items = []
    for item in response.output:
        entry = {"type": item.type, "status": item.status}
        if item.type == "message":
            entry["role"] = item.role
            entry["content"] = [(part.type, part.text) for part in item.content]
        elif item.type == "function_call":
            entry.update(call_id=item.call_id, name=item.name, arguments=item.arguments)
        elif item.type == "reasoning":
            entry["content"] = [(part.type, part.text) for part in item.content or []]
        items.append(entry)
    return {
        "status": response.status,
        "model": response.model,
        "output": items,
        "usage": response.usage.model_dump() if response.usage else None,
        "error": response.error,
        "incomplete_details": response.incomplete_details,
    }


def check_typed(events):
    """Every event is the SDK's class for its type and validates strictly."""
    assert events, "the stream yielded events"
    for number, event in enumerate(events):
        assert event.sequence_number == number
        expected = EVENT_CLASSES.get(event.type)
        assert expected is not None, f"unexpected event type {event.type}"
        assert isinstance(event, expected), (event.type, type(event))
        # The SDK builds events leniently; validate them strictly too.
        expected.model_validate(event.to_dict())
    assert events[0].type == "response.created"
    assert events[1].type == "response.in_progress"


def stream_helper(client, **kwargs):
    """Runs `client.responses.stream`; returns its events and final response."""
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    return events, final


def test_stream_helper_matches_non_streaming(client):
    plain = client.responses.create(model="test-model", input="compare me")
    events, final = stream_helper(client, model="test-model", input="compare me")

    assert final.status == "completed"
    assert final.output_text == plain.output_text == "Hello! You said: compare me"
    assert shape(final) == shape(plain)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text
    done = [e for e in events if e.type == "response.output_text.done"]
    assert len(done) == 1 and done[0].text == final.output_text
    assert done[0].item_id == final.output[0].id
    assert events[-1].type == "response.completed"

    fetched = client.responses.retrieve(final.id)
    assert fetched.id == final.id
    assert [item.id for item in fetched.output] == [item.id for item in final.output]
    assert shape(fetched) == shape(final)


def test_create_stream_true_yields_typed_events(client):
    queue({"text": "Because it is.", "reasoning": "Think about the sky", "usage": [4, 6]})
    events = list(client.responses.create(model="test-model", input="why is the sky blue?", stream=True))
    check_typed(events)
    types = [e.type for e in events]
    assert types[-1] == "response.completed"
    assert "response.reasoning_text.delta" in types
    reasoning = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert reasoning == "Think about the sky"
    completed = events[-1].response
    assert [item.type for item in completed.output] == ["reasoning", "message"]
    assert completed.output_text == "Because it is."
    assert completed.usage.total_tokens == 10
    assert client.responses.retrieve(completed.id).model_dump() == completed.model_dump()

    # The same reply, streamed by the helper: the same final response.
    queue({"text": "Because it is.", "reasoning": "Think about the sky", "usage": [4, 6]})
    _, final = stream_helper(client, model="test-model", input="why is the sky blue?")
    assert shape(final) == shape(completed)


def test_length_limit_and_failure_events_are_typed(client):
    queue({"text": "cut off here", "finish_reason": "length"})
    events = list(client.responses.create(model="test-model", input="long", max_output_tokens=3, stream=True))
    check_typed(events)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"

    queue({"error": {"status": 500, "message": "the model crashed"}})
    events = list(client.responses.create(model="test-model", input="crash", stream=True))
    check_typed(events)
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    failed = events[-1].response
    assert failed.status == "failed"
    assert failed.error.code == "server_error"
    assert "the model crashed" in failed.error.message
    assert "the model crashed" in events[-2].message
    assert client.responses.retrieve(failed.id).status == "failed"


def test_function_call_round_trip_streamed(client):
    arguments = '{"city":"Paris"}'
    call = {"tool_calls": [{"id": "call_weather", "name": "get_weather", "arguments": arguments}]}

    # The non-streaming path, for comparison.
    queue(call)
    plain = client.responses.create(model="test-model", input="weather in Paris?", tools=[WEATHER_TOOL])

    queue(call)
    events, first = stream_helper(client, model="test-model", input="weather in Paris?", tools=[WEATHER_TOOL])
    assert shape(first) == shape(plain)
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    assert "response.output_text.delta" not in types
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == arguments
    assert len(first.output) == 1
    function_call = first.output[0]
    assert function_call.type == "function_call"
    assert function_call.name == "get_weather"
    assert function_call.call_id == "call_weather"
    assert json.loads(function_call.arguments) == {"city": "Paris"}
    assert function_call.id.startswith("fc_")

    queue({"text": "It is sunny in Paris."})
    events, second = stream_helper(
        client,
        model="test-model",
        previous_response_id=first.id,
        tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": function_call.call_id, "output": "sunny, 24C"}],
    )
    assert events[-1].type == "response.completed"
    assert second.previous_response_id == first.id
    assert second.output_text == "It is sunny in Paris."
    items = client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["function_call_output"]
