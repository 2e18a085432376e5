"""WebSocket mode with the official `openai` SDK: `client.responses.connect()`
against `GET /v1/responses` upgraded, typed events, a `store=False` chain
kept in the connection's memory, and the `previous_response_not_found`
error after a reconnect.

Run by `tests/python_sdk.rs` against our host (Spin has no inbound
WebSocket).
"""

import asyncio
import os

import openai
import pytest

from scripted import script

BASE_URL = os.environ["EDGE_RESPONSES_BASE_URL"]
API_KEY = os.environ.get("EDGE_RESPONSES_API_KEY")
pytestmark = pytest.mark.skipif(API_KEY is not None, reason="runs against the open host")


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0)


def until_done(connection):
    """The events of one turn, to its terminal event (or protocol error)."""
    events = []
    for event in connection:
        events.append(event)
        if event.type in ("response.completed", "response.failed", "response.incomplete"):
            return events
        if event.type == "error" and getattr(event, "status", None) is not None:
            return events
    raise AssertionError("the connection closed mid-turn")


def test_turns_over_one_connection(client):
    script({"content": ["Hel", "lo."]}, {"content": ["Again."]})
    with client.responses.connect() as connection:
        connection.response.create(model="m", input="hi", store=False)
        first = until_done(connection)
        assert first[0].type == "response.created"
        done = first[-1]
        assert done.type == "response.completed"
        assert done.response.output_text == "Hello."
        deltas = [e.delta for e in first if e.type == "response.output_text.delta"]
        assert "".join(deltas) == "Hello."

        connection.response.create(
            model="m", input="more", store=False, previous_response_id=done.response.id
        )
        second = until_done(connection)[-1]
        assert second.type == "response.completed"
        assert second.response.previous_response_id == done.response.id
        assert second.response.output_text == "Again."


def test_lanes_are_echoed(client):
    with client.responses.connect() as connection:
        connection.response.create(model="m", input="x", stream_id="lane-7")
        events = until_done(connection)
        assert events[-1].type == "response.completed"
        assert {e.stream_id for e in events} == {"lane-7"}


def test_unstored_previous_response_after_reconnect(client):
    with client.responses.connect() as connection:
        connection.response.create(model="m", input="hi", store=False)
        first = until_done(connection)[-1].response.id
    with client.responses.connect() as connection:
        connection.response.create(
            model="m", input="again", store=False, previous_response_id=first
        )
        error = until_done(connection)[-1]
        assert error.type == "error"
        assert error.status == 400
        assert error.error.code == "previous_response_not_found"
        assert error.error.param == "previous_response_id"
        # Recovery: the full input, no previous response.
        connection.response.create(
            model="m",
            input=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello! You said: hi"},
                {"role": "user", "content": "again"},
            ],
            store=False,
        )
        assert until_done(connection)[-1].type == "response.completed"


def test_agents_sdk_runs_a_tool_loop_over_one_socket():
    """The Agents SDK's WebSocket transport: a function tool called and
    answered over one connection, turns chained as the SDK chains them."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}."

    script(
        {"tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]},
        {"content": ["It is ", "sunny."]},
    )

    async def run():
        async with agents.responses_websocket_session(
            api_key="unused", base_url=BASE_URL + "/v1"
        ) as session:
            agent = agents.Agent(
                name="weather", instructions="Use the tool.", model="m", tools=[get_weather]
            )
            return await session.run(agent, "Weather in Paris?")

    result = asyncio.run(run())
    assert calls == ["Paris"]
    assert result.final_output == "It is sunny."
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"], kinds
