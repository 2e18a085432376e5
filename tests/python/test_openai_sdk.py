"""The official `openai` Python SDK against edge-responses.

Run by `tests/python_sdk.rs`, which starts the scripted backend and the host
and passes the base URL in EDGE_RESPONSES_BASE_URL and the scripted backend's
origin in EDGE_RESPONSES_BACKEND_ORIGIN. The `auth` tests run against a
second host configured with `api_keys`; they need EDGE_RESPONSES_API_KEY.
"""

import json
import os

import openai
import pydantic
import pytest

from scripted import script

BASE_URL = os.environ["EDGE_RESPONSES_BASE_URL"]
API_KEY = os.environ.get("EDGE_RESPONSES_API_KEY")

keyed = pytest.mark.skipif(API_KEY is None, reason="needs a host with api_keys")
open_only = pytest.mark.skipif(API_KEY is not None, reason="runs against the open host")


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key=API_KEY or "unused", max_retries=0)



def words(text):
    return len(text.split())


@open_only
def test_create_and_retrieve(client):
    created = client.responses.create(model="test-model", input="hello there")
    assert created.id.startswith("resp_")
    assert created.status == "completed"
    assert created.output_text == "Hello! You said: hello there"
    assert isinstance(created.created_at, (int, float))
    assert created.usage is not None and created.usage.total_tokens > 0

    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id
    assert fetched.output_text == created.output_text
    assert fetched.model_dump() == created.model_dump()


@open_only
def test_message_input(client):
    created = client.responses.create(
        model="test-model",
        instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "ping"}]}],
    )
    assert created.output_text == "Hello! You said: ping"
    assert created.instructions == "Be brief."


@open_only
def test_unknown_response_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_does_not_exist")


@open_only
def test_delete_and_input_items(client):
    created = client.responses.create(
        model="test-model",
        input=[{"role": "user", "content": f"message {i}"} for i in range(5)],
        metadata={"suite": "sdk"},
    )
    assert created.metadata == {"suite": "sdk"}

    page = client.responses.input_items.list(created.id, limit=2, order="asc")
    assert [item.content[0].text for item in page.data] == ["message 0", "message 1"]
    assert page.has_more is True
    assert page.first_id == page.data[0].id and page.last_id == page.data[1].id
    everything = [item.content[0].text for item in client.responses.input_items.list(created.id, order="asc")]
    assert everything == [f"message {i}" for i in range(5)]
    # The SDK's auto-pagination follows `after` cursors.
    paged = [item.id for item in client.responses.input_items.list(created.id, limit=2)]
    assert len(paged) == 5 and len(set(paged)) == 5
    newest_first = client.responses.input_items.list(created.id)
    assert newest_first.data[0].content[0].text == "message 4"

    deleted = client.responses.delete(created.id)
    assert deleted is None  # the SDK returns nothing for a successful delete
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@open_only
def test_function_tool_round_trip(client):
    script(
        {"text": "Let me look.", "tool_calls": [{"id": "call_w1", "name": "get_weather", "arguments": '{"city":"Paris"}'}]},
        {"text": "It is sunny in Paris."},
    )
    first = client.responses.create(model="test-model", input="Weather in Paris?", tools=[WEATHER_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.id.startswith("fc_")
    assert call.call_id == "call_w1"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.status == "completed"
    assert first.output_text == "Let me look."
    assert first.tools[0].name == "get_weather"

    second = client.responses.create(
        model="test-model",
        previous_response_id=first.id,
        tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"sky": "sunny"})}],
    )
    assert second.output_text == "It is sunny in Paris."
    assert second.previous_response_id == first.id
    items = client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["function_call_output"]


@open_only
def test_chain_of_turns_replays_everything(client):
    previous = None
    history_words = 0
    for turn in range(5):
        text = f"chain turn {turn}"
        response = client.responses.create(
            model="test-model",
            input=text,
            previous_response_id=previous,
        )
        assert response.output_text == f"Hello! You said: {text}"
        # The scripted backend counts the words of every message it got.
        history_words += words(text)
        assert response.usage.input_tokens == history_words
        history_words += words(response.output_text)
        previous = response.id


@open_only
def test_store_false_is_not_retrievable(client):
    response = client.responses.create(model="test-model", input="forget me", store=False)
    assert response.store is False
    assert response.output_text == "Hello! You said: forget me"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="test-model", input="again", previous_response_id=response.id)
    assert raised.value.body["param"] == "previous_response_id"


class Person(pydantic.BaseModel):
    name: str
    age: int


@open_only
def test_json_schema_output(client):
    script({"text": '{"name": "Ada", "age": 36}'})
    parsed = client.responses.parse(model="test-model", input="Who wrote the first program?", text_format=Person)
    assert parsed.output_parsed == Person(name="Ada", age=36)
    assert parsed.text.format.type == "json_schema"

    script({"text": '{"ok": true}'})
    raw = client.responses.create(
        model="test-model",
        input="answer in JSON",
        text={"format": {"type": "json_schema", "name": "ok", "strict": True, "schema": {
            "type": "object", "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"], "additionalProperties": False}}},
    )
    assert json.loads(raw.output_text) == {"ok": True}


@open_only
def test_parameters_are_echoed(client):
    response = client.responses.create(
        model="test-model",
        input="hi",
        temperature=0.5,
        top_p=0.8,
        max_output_tokens=64,
        reasoning={"effort": "low"},
        parallel_tool_calls=False,
        tool_choice="none",
        tools=[WEATHER_TOOL, {"type": "web_search"}],
        safety_identifier="user-1",
        prompt_cache_key="cache",
    )
    assert response.temperature == 0.5
    assert response.top_p == 0.8
    assert response.max_output_tokens == 64
    assert response.reasoning.effort == "low"
    assert response.parallel_tool_calls is False
    assert response.tool_choice == "none"
    assert [tool.type for tool in response.tools] == ["function", "web_search"]
    assert response.safety_identifier == "user-1"


@open_only
def test_length_limit_is_incomplete(client):
    script({"text": "cut", "finish_reason": "length"})
    response = client.responses.create(model="test-model", input="long story", max_output_tokens=1)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"


@open_only
def test_invalid_requests_are_bad_request(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="test-model", input="hi", temperature=5)
    assert raised.value.status_code == 400
    assert raised.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="test-model", input="hi", metadata={f"k{i}": "v" for i in range(17)})
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="test-model", input="hi",
                                tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}],
                                tool_choice={"type": "file_search"})
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="test-model", input=[{"role": "user", "content": 5}])
    assert raised.value.body["param"].startswith("input[0]")


@open_only
def test_unknown_previous_response_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="test-model", input="hi", previous_response_id="resp_missing")
    assert raised.value.body["param"] == "previous_response_id"


@open_only
def test_backend_errors(client):
    script({"error": {"status": 404, "message": "The model `nope` does not exist", "code": "model_not_found"}})
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="nope", input="hi")
    assert raised.value.code == "model_not_found"

    script({"error": {"status": 500, "message": "GPU on fire"}})
    with pytest.raises(openai.InternalServerError) as raised:
        client.responses.create(model="test-model", input="hi")
    assert raised.value.status_code == 502
    assert "GPU on fire" in raised.value.message
    assert isinstance(raised.value, openai.APIStatusError)


@open_only
def test_models_list(client):
    models = client.models.list()
    assert [model.id for model in models.data] == ["test-model"]


@keyed
def test_auth_with_the_right_key(client):
    created = client.responses.create(model="test-model", input="keyed")
    assert client.responses.retrieve(created.id).id == created.id


@keyed
def test_auth_missing_or_wrong_key():
    wrong = openai.OpenAI(base_url=BASE_URL + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.responses.create(model="test-model", input="hi")
    assert raised.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        wrong.responses.retrieve("resp_anything")
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    # The SDK refuses to send no key at all; a raw request without one is 401.
    with pytest.raises(openai.AuthenticationError):
        wrong.responses.create(model="test-model", input="hi",
                               extra_headers={"Authorization": openai.Omit()})


@keyed
def test_auth_keys_see_only_their_own_responses(client):
    other = openai.OpenAI(base_url=BASE_URL + "/v1", api_key=os.environ["EDGE_RESPONSES_OTHER_KEY"],
                          max_retries=0)
    mine = client.responses.create(model="test-model", input="mine")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="test-model", input="steal", previous_response_id=mine.id)
    assert client.responses.retrieve(mine.id).id == mine.id
