"""Web search through edge-responses, with the official `openai` SDK and the
OpenAI Agents SDK (`WebSearchTool`).

Run by `tests/web_search.rs`, which configures the component with the
scripted search provider (tests/python/search_provider.py) and sets
EDGE_RESPONSES_WEB_SEARCH, next to EDGE_RESPONSES_BASE_URL and
EDGE_RESPONSES_BACKEND_ORIGIN. Without it, the module is skipped.

Every answer is checked twice: as the SDK reads it (leniently, building
its typed objects) and validated strictly against the SDK's types, which
fails on any missing or mistyped field.
"""

import asyncio
import json
import os

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseFunctionWebSearch, ResponseStreamEvent
from openai.types.responses.response_output_text import AnnotationURLCitation

from scripted import script

if os.environ.get("EDGE_RESPONSES_WEB_SEARCH") is None:
    pytest.skip("needs a search provider (EDGE_RESPONSES_WEB_SEARCH)", allow_module_level=True)

BASE_URL = os.environ["EDGE_RESPONSES_BASE_URL"]

ANSWER = "See [the docs](https://docs.example.org/rust-wasm/1) and https://news.example.com/rust-wasm/3."
SOURCES = [
    "https://docs.example.org/rust-wasm/1",
    "https://docs.example.org/rust-wasm/2",
    "https://news.example.com/rust-wasm/3",
]


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0)


def search_then_answer(query="rust wasm", answer=ANSWER):
    call = {"id": "call_1", "name": "web_search", "arguments": json.dumps({"query": query})}
    script({"tool_calls": [call]}, {"text": answer})


def test_search_items_and_citations_are_typed(client):
    search_then_answer()
    raw = client.responses.with_raw_response.create(
        model="m",
        input="Does Rust run on wasm?",
        tools=[{"type": "web_search"}],
        include=["web_search_call.action.sources"],
    )
    strict = Response.model_validate(raw.http_response.json())
    response = raw.parse()
    for checked in (response, strict):
        call, message = checked.output
        assert isinstance(call, ResponseFunctionWebSearch)
        assert call.status == "completed" and call.id.startswith("ws_")
        assert call.action.type == "search" and call.action.query == "rust wasm"
        assert [s.url for s in call.action.sources] == SOURCES
        annotations = message.content[0].annotations
        assert [type(a) for a in annotations] == [AnnotationURLCitation] * 2
        assert [a.url for a in annotations] == [SOURCES[0], SOURCES[2]]
        first = annotations[0]
        assert ANSWER[first.start_index : first.end_index] == f"[the docs]({SOURCES[0]})"
        assert first.title == "rust wasm documentation, part 1"
    assert response.output_text == ANSWER
    assert client.responses.retrieve(response.id).output == response.output

    # Without the include, no sources.
    search_then_answer()
    bare = client.responses.create(model="m", input="wasm?", tools=[{"type": "web_search_preview"}])
    assert bare.output[0].action.sources is None
    assert bare.output[0].action.query == "rust wasm"


def test_stream_events_are_typed(client):
    search_then_answer()
    events = list(
        client.responses.create(model="m", input="wasm?", tools=[{"type": "web_search"}], stream=True)
    )
    names = [type(e).__name__ for e in events]
    for name in [
        "ResponseWebSearchCallInProgressEvent",
        "ResponseWebSearchCallSearchingEvent",
        "ResponseWebSearchCallCompletedEvent",
        "ResponseOutputTextAnnotationAddedEvent",
        "ResponseCompletedEvent",
    ]:
        assert name in names, names
    added = next(e for e in events if e.type == "response.output_item.added")
    assert isinstance(added.item, ResponseFunctionWebSearch) and added.item.status == "in_progress"
    annotation = next(e for e in events if e.type == "response.output_text.annotation.added")
    # The event module has its own AnnotationURLCitation class.
    assert type(annotation.annotation).__name__ == "AnnotationURLCitation"
    assert annotation.annotation.url == SOURCES[0]
    assert events[-1].response.output[0].action.query == "rust wasm"

    # Every event, strictly.
    search_then_answer()
    body = {"model": "m", "input": "wasm?", "tools": [{"type": "web_search"}], "stream": True}
    with httpx.stream("POST", BASE_URL + "/v1/responses", json=body, timeout=30) as answer:
        lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
    data = [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]
    adapter = pydantic.TypeAdapter(ResponseStreamEvent)
    strict = [adapter.validate_python(event) for event in data]
    assert [e.type for e in strict] == [e.type for e in events]


def test_a_failed_search_is_a_failed_call(client):
    # The scripted provider answers `status:503` with HTTP 503.
    search_then_answer(query="edge status:503", answer="The search failed.")
    raw = client.responses.with_raw_response.create(
        model="m", input="edge?", tools=[{"type": "web_search"}]
    )
    strict = Response.model_validate(raw.http_response.json())
    call = strict.output[0]
    assert isinstance(call, ResponseFunctionWebSearch) and call.status == "failed"
    assert strict.status == "completed"
    assert strict.output[1].content[0].annotations == []


def test_agents_sdk_web_search_tool():
    agents = pytest.importorskip("agents")
    if not hasattr(agents, "WebSearchTool"):
        pytest.skip("this Agents SDK has no WebSearchTool")
    agents.set_tracing_disabled(True)
    model = agents.OpenAIResponsesModel(
        model="m",
        openai_client=openai.AsyncOpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0),
    )
    agent = agents.Agent(
        name="researcher",
        instructions="Search the web, then answer citing your sources.",
        model=model,
        tools=[agents.WebSearchTool(search_context_size="low")],
    )
    search_then_answer()
    result = asyncio.run(agents.Runner.run(agent, "Does Rust run on wasm?"))
    assert result.final_output == ANSWER
    searches = [
        item.raw_item
        for item in result.new_items
        if item.type == "tool_call_item" and getattr(item.raw_item, "type", None) == "web_search_call"
    ]
    assert len(searches) == 1, [item.type for item in result.new_items]
    assert searches[0].status == "completed" and searches[0].action.query == "rust wasm"
    message = next(item for item in result.new_items if item.type == "message_output_item")
    annotations = message.raw_item.content[0].annotations
    assert [a.url for a in annotations] == [SOURCES[0], SOURCES[2]]
