"""`client.responses.compact` of the official `openai` SDK against
edge-responses, and the compacted output sent back through
`client.responses.create`.

Run by `tests/python_sdk.rs` with the rest of this directory (see
test_openai_sdk.py for the environment it gets).
"""

import base64
import json
import os
import urllib.request

import openai
import pytest
from openai.types.responses import CompactedResponse

BASE_URL = os.environ["EDGE_RESPONSES_BASE_URL"]
BACKEND_ORIGIN = os.environ.get("EDGE_RESPONSES_BACKEND_ORIGIN")
API_KEY = os.environ.get("EDGE_RESPONSES_API_KEY")

open_only = pytest.mark.skipif(API_KEY is not None, reason="runs against the open host")

SUMMARY = "Goal: plan the launch. Decided: Tuesday, support told first."


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0)


def control(method, path, body=None):
    assert BACKEND_ORIGIN, "EDGE_RESPONSES_BACKEND_ORIGIN is not set"
    request = urllib.request.Request(
        BACKEND_ORIGIN + "/_scripted/" + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


@pytest.fixture(autouse=True)
def recording():
    """The tests read what the backend received."""
    control("POST", "recording", {"recording": True})


def chat_requests():
    """The JSON bodies of the chat requests the backend has received."""
    log = control("GET", "requests")["requests"]
    bodies = [json.loads(base64.b64decode(entry["body_base64"]) or b"null") for entry in log]
    return [b for b in bodies if isinstance(b, dict) and "messages" in b]


def check_compacted(compacted, kept_texts):
    assert isinstance(compacted, CompactedResponse)
    assert compacted.object == "response.compaction"
    assert isinstance(compacted.created_at, int)
    assert compacted.id
    last = compacted.output[-1]
    assert last.type == "compaction"
    assert last.id.startswith("cmp_")
    assert last.encrypted_content and SUMMARY not in last.encrypted_content
    kept = [item.content[0].text for item in compacted.output[:-1]]
    assert kept == kept_texts
    assert all(item.type == "message" and item.role == "user" for item in compacted.output[:-1])
    assert compacted.usage.total_tokens == compacted.usage.input_tokens + compacted.usage.output_tokens
    assert compacted.usage.input_tokens > 0


# The SDK types `CompactedResponse.output` as output items, so the user
# messages in it are assistant-shaped models that pydantic warns about when
# they are sent back; they go out as they came in.
@open_only
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_compact_input_and_continue_with_its_output(client):
    control("POST", "replies", [{"text": SUMMARY}])
    compacted = client.responses.compact(
        model="test-model",
        input=[
            {"role": "user", "content": "We launch on Tuesday."},
            {"role": "assistant", "content": "Noted: Tuesday."},
            {"role": "user", "content": "Tell support first."},
            {"role": "assistant", "content": "Will do."},
        ],
    )
    check_compacted(compacted, ["We launch on Tuesday.", "Tell support first."])

    created = client.responses.create(
        model="test-model",
        input=[*compacted.output, {"role": "user", "content": "compaction follow-up"}],
    )
    assert created.status == "completed"
    assert created.output_text == "Hello! You said: compaction follow-up"
    sent = next(
        r for r in reversed(chat_requests()) if r["messages"][-1]["content"] == "compaction follow-up"
    )
    contents = [m["content"] for m in sent["messages"]]
    assert contents[:2] == ["We launch on Tuesday.", "Tell support first."]
    assert contents[2].endswith(SUMMARY), contents
    assert compacted.output[-1].encrypted_content not in json.dumps(sent)


@open_only
def test_compact_a_stored_chain(client):
    first = client.responses.create(model="test-model", input="compaction chain one")
    second = client.responses.create(
        model="test-model", input="compaction chain two", previous_response_id=first.id
    )
    control("POST", "replies", [{"text": SUMMARY, "usage": [50, 10]}])
    compacted = client.responses.compact(model="test-model", previous_response_id=second.id)
    check_compacted(compacted, ["compaction chain one", "compaction chain two"])
    assert compacted.usage.input_tokens == 50 and compacted.usage.output_tokens == 10
    sent = chat_requests()[-1]
    assert sent["stream"] is False
    assert [m["content"] for m in sent["messages"][:2]] == [
        "compaction chain one",
        "Hello! You said: compaction chain one",
    ]


@open_only
def test_compact_errors(client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.compact(model="test-model", previous_response_id="resp_not_there")
    assert missing.value.body["param"] == "previous_response_id"

    forged = {"type": "compaction", "encrypted_content": "gAAAAABpM0Yj-not-ours="}
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.compact(model="test-model", input=[forged, {"role": "user", "content": "x"}])
    assert bad.value.body["param"] == "input[0].encrypted_content"
    assert bad.value.body["code"] == "invalid_encrypted_content"

    with pytest.raises(openai.BadRequestError) as no_model:
        client.responses.compact(model=None, input="x")
    assert no_model.value.body["param"] == "model"


@open_only
def test_context_management_compacts_on_the_server(client):
    first = client.responses.create(model="test-model", input="managed turn one " + "words " * 40)
    control("POST", "replies", [{"text": SUMMARY}])
    second = client.responses.create(
        model="test-model",
        input="managed turn two",
        previous_response_id=first.id,
        context_management=[{"type": "compaction", "compact_threshold": 20}],
    )
    assert second.output[0].type == "compaction"
    assert second.output_text == "Hello! You said: managed turn two"
    third = client.responses.create(
        model="test-model", input="managed turn three", previous_response_id=second.id
    )
    contents = [m["content"] for m in chat_requests()[-1]["messages"]]
    assert contents[0].endswith(SUMMARY), contents
    assert contents[1:] == [
        "managed turn two",
        "Hello! You said: managed turn two",
        "managed turn three",
    ]
    assert third.output_text == "Hello! You said: managed turn three"
