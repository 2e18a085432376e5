"""Background responses with the official `openai` SDK: create with
`background=True`, poll with `retrieve`, resume a stream with
`retrieve(id, stream=True, starting_after=N)`, and `cancel`.

Run by `tests/python_sdk.rs` and the Spin tests, like test_openai_sdk.py.
"""

import os
import time

import openai
import pytest

from scripted import script

BASE_URL = os.environ["EDGE_RESPONSES_BASE_URL"]
API_KEY = os.environ.get("EDGE_RESPONSES_API_KEY")

pytestmark = pytest.mark.skipif(API_KEY is not None, reason="runs against the open host")


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0)



def settle(client, response_id, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        response = client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        assert time.monotonic() < deadline, f"{response_id} still {response.status}"
        time.sleep(0.1)


def test_create_in_the_background_and_poll(client):
    script({"content": ["slow ", "but ", "sure"], "delay_between_chunks_ms": 300})
    created = client.responses.create(model="m", input="take your time", background=True)
    assert created.status == "queued"
    assert created.background is True
    running = client.responses.retrieve(created.id)
    assert running.status in ("queued", "in_progress")
    done = settle(client, created.id)
    assert done.status == "completed"
    assert done.output_text == "slow but sure"


def test_resume_a_stream_after_a_cut(client):
    script({"content": ["a ", "b ", "c ", "d"], "delay_between_chunks_ms": 50})
    stream = client.responses.create(model="m", input="letters", background=True, stream=True)
    events = list(stream)
    assert events[-1].type == "response.completed"
    assert [e.type for e in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert events[1].response.status == "queued"
    response_id = events[0].response.id
    cut = 4
    resumed = list(
        client.responses.retrieve(response_id, stream=True, starting_after=events[cut].sequence_number)
    )
    assert [e.sequence_number for e in resumed] == [e.sequence_number for e in events[cut + 1 :]]
    assert [e.type for e in resumed] == [e.type for e in events[cut + 1 :]]
    assert resumed[-1].response.output_text == "a b c d"


def test_cancel(client):
    script({"content": [f"w{i} " for i in range(40)], "delay_between_chunks_ms": 100})
    created = client.responses.create(model="m", input="talk", background=True)
    time.sleep(0.8)
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert cancelled.output_text.startswith("w0 ")
    done = settle(client, created.id)
    assert done.status == "cancelled"
    assert done.output_text == cancelled.output_text
    assert "w39" not in done.output_text
    # Its stored events end with the cancelled response.
    resumed = list(client.responses.retrieve(created.id, stream=True))
    assert resumed[-1].type == "response.incomplete"
    assert resumed[-1].response.status == "cancelled"


def test_refusals(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="m", input="x", background=True, store=False)
    assert refused.value.body["param"] == "background"
    foreground = client.responses.create(model="m", input="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(foreground.id)
    with pytest.raises(openai.BadRequestError):
        list(client.responses.retrieve(foreground.id, stream=True))
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_" + "0" * 48)


def test_delete_while_it_runs(client):
    script({"content": [f"w{i} " for i in range(40)], "delay_between_chunks_ms": 100})
    created = client.responses.create(model="m", input="talk", background=True)
    time.sleep(0.5)
    assert client.responses.delete(created.id) is None
    time.sleep(1.5)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
