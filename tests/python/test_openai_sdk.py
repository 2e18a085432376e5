"""The official `openai` Python SDK against edge-responses.

Run by `tests/python_sdk.rs`, which starts the scripted backend and the host
and passes the base URL in EDGE_RESPONSES_BASE_URL.
"""

import os

import openai
import pytest

BASE_URL = os.environ["EDGE_RESPONSES_BASE_URL"]


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0)


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


def test_message_input(client):
    created = client.responses.create(
        model="test-model",
        instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "ping"}]}],
    )
    assert created.output_text == "Hello! You said: ping"
    assert created.instructions == "Be brief."


def test_unknown_response_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_does_not_exist")
