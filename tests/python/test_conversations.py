"""The Conversations API through the official `openai` Python SDK:
`client.conversations.*` and `client.responses.create(conversation=...)`.

Run by `tests/python_sdk.rs` with the other SDK tests (see
test_openai_sdk.py for the environment).
"""

import os

import openai
import pytest

BASE_URL = os.environ["EDGE_RESPONSES_BASE_URL"]
API_KEY = os.environ.get("EDGE_RESPONSES_API_KEY")

pytestmark = pytest.mark.skipif(API_KEY is not None, reason="runs against the open host")


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0)


def test_conversation_lifecycle(client):
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "remember the number 7"}],
        metadata={"topic": "numbers"},
    )
    assert conversation.id.startswith("conv_")
    assert conversation.object == "conversation"
    assert conversation.metadata == {"topic": "numbers"}

    fetched = client.conversations.retrieve(conversation.id)
    assert fetched.model_dump() == conversation.model_dump()

    updated = client.conversations.update(conversation.id, metadata={"topic": "digits"})
    assert updated.metadata == {"topic": "digits"}

    added = client.conversations.items.create(
        conversation.id,
        items=[
            {"type": "message", "role": "user", "content": "and the number 8"},
            {"type": "message", "role": "assistant", "content": "noted"},
        ],
    )
    assert [item.role for item in added.data] == ["user", "assistant"]

    items = client.conversations.items.list(conversation.id, order="asc")
    texts = [item.content[0].text for item in items.data]
    assert texts == ["remember the number 7", "and the number 8", "noted"]
    assert items.data[0].type == "message"

    # Pagination follows the cursors.
    page = client.conversations.items.list(conversation.id, limit=2)
    assert page.has_more is True
    everything = [item.id for item in client.conversations.items.list(conversation.id, limit=1)]
    assert len(everything) == 3

    one = client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert one.id == added.data[0].id
    after_delete = client.conversations.items.delete(added.data[1].id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id
    assert len(client.conversations.items.list(conversation.id).data) == 2

    deleted = client.conversations.delete(conversation.id)
    assert deleted.deleted is True and deleted.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)


def test_responses_in_a_conversation(client):
    conversation = client.conversations.create()
    first = client.responses.create(model="test-model", input="first turn", conversation=conversation.id)
    assert first.output_text == "Hello! You said: first turn"
    assert first.conversation is not None and first.conversation.id == conversation.id

    with client.responses.stream(
        model="test-model", input="second turn", conversation={"id": conversation.id}
    ) as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello! You said: second turn"

    items = client.conversations.items.list(conversation.id, order="asc")
    roles = [item.role for item in items.data]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert items.data[3].id == final.output[0].id

    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            model="test-model", input="x", conversation=conversation.id, previous_response_id=first.id
        )
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="test-model", input="x", conversation="conv_missing")
