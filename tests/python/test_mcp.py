"""Remote MCP tools through edge-responses, with the official `openai` SDK
and the OpenAI Agents SDK (`HostedMCPTool`).

Run by `tests/mcp.rs` (and by the Spin tests), which start a real MCP
server (tests/python/mcp_server.py) and pass its URL in
EDGE_RESPONSES_MCP_URL, next to EDGE_RESPONSES_BASE_URL and
EDGE_RESPONSES_BACKEND_ORIGIN. Without it, the module is skipped.
"""

import asyncio
import json
import os

import openai
import pydantic
import pytest
from openai.types.responses import ResponseItem

from scripted import script

MCP_URL = os.environ.get("EDGE_RESPONSES_MCP_URL")
if MCP_URL is None:
    pytest.skip("needs an MCP server (EDGE_RESPONSES_MCP_URL)", allow_module_level=True)

BASE_URL = os.environ["EDGE_RESPONSES_BASE_URL"]


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0)



def calls(*calls):
    return {"tool_calls": [{"id": f"call_{i}", "name": n, "arguments": json.dumps(a)} for i, (n, a) in enumerate(calls)]}


def mcp_tool(approval="never", label="calc"):
    return {"type": "mcp", "server_label": label, "server_url": MCP_URL, "require_approval": approval}


def test_list_call_and_answer(client):
    script(calls(("calc__add", {"a": 2, "b": 40})), {"text": "The sum is 42."})
    # Credentials go to the server, and are neither echoed nor stored.
    tool = dict(mcp_tool(), authorization="sk-never-echoed", headers={"X-Api-Key": "never-echoed"})
    response = client.responses.create(model="m", input="add 2 and 40", tools=[tool])
    echoed = response.tools[0]
    assert echoed.type == "mcp" and echoed.server_label == "calc"
    assert echoed.authorization is None and echoed.headers is None
    assert "never-echoed" not in client.responses.retrieve(response.id).model_dump_json()
    kinds = [item.type for item in response.output]
    assert kinds == ["mcp_list_tools", "mcp_call", "message"]
    listing, call, _ = response.output
    assert [t.name for t in listing.tools] == ["add", "fail", "slow"]
    assert listing.tools[0].input_schema["type"] == "object"
    assert call.output == "42" and call.error is None and call.status == "completed"
    assert call.server_label == "calc" and call.name == "add"
    assert response.output_text == "The sum is 42."
    assert client.responses.retrieve(response.id).output == response.output


def test_tool_errors_are_typed(client):
    script(calls(("calc__fail", {"reason": "sdk"})), {"text": "It failed."})
    response = client.responses.create(model="m", input="fail", tools=[mcp_tool()])
    call = response.output[1]
    assert call.type == "mcp_call" and call.status == "failed"
    assert call.error.type == "mcp_tool_execution_error"
    assert "failed on purpose: sdk" in json.dumps(call.error.content)
    assert response.status == "completed"


def test_streamed_events_parse(client):
    script(calls(("calc__add", {"a": 1, "b": 2})), {"text": "Three."})
    stream = client.responses.create(model="m", input="1+2", tools=[mcp_tool()], stream=True)
    events = list(stream)
    names = [e.type for e in events]
    for name in [
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
    ]:
        assert name in names, names
    # The SDK parsed each into its own typed event.
    done = next(e for e in events if e.type == "response.mcp_call_arguments.done")
    assert json.loads(done.arguments) == {"a": 1, "b": 2}
    assert type(done).__name__ == "ResponseMcpCallArgumentsDoneEvent"
    completed = events[-1].response
    assert [i.type for i in completed.output] == ["mcp_list_tools", "mcp_call", "message"]


def test_approval_flow(client):
    script(calls(("calc__add", {"a": 20, "b": 22})))
    first = client.responses.create(model="m", input="add", tools=[mcp_tool("always")])
    assert [i.type for i in first.output] == ["mcp_list_tools", "mcp_approval_request"]
    request = first.output[1]
    assert request.name == "add" and json.loads(request.arguments) == {"a": 20, "b": 22}

    script({"text": "It is 42."})
    second = client.responses.create(
        model="m",
        previous_response_id=first.id,
        tools=[mcp_tool("always")],
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
    )
    assert [i.type for i in second.output] == ["mcp_call", "message"]
    assert second.output[0].approval_request_id == request.id
    assert second.output[0].output == "42"
    items = client.responses.input_items.list(second.id).data
    assert [i.type for i in items] == ["mcp_approval_response"]
    # Validated strictly against the SDK's types (listing only constructs
    # them): every field it requires, the id among them.
    raw = client.responses.input_items.with_raw_response.list(second.id).http_response.json()
    strict = [pydantic.TypeAdapter(ResponseItem).validate_python(item) for item in raw["data"]]
    assert type(strict[0]).__name__ == "McpApprovalResponse"
    assert strict[0].id.startswith("mcpa_") and strict[0].id != request.id



def test_outside_the_allow_list(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="m",
            input="hi",
            tools=[{"type": "mcp", "server_label": "x", "server_url": "http://169.254.169.254/mcp"}],
        )
    assert refused.value.body["param"] == "tools[0].server_url"
    assert "mcp_allowed_servers" in refused.value.body["message"]


def test_agents_sdk_hosted_mcp_tool():
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    model = agents.OpenAIResponsesModel(
        model="m",
        openai_client=openai.AsyncOpenAI(base_url=BASE_URL + "/v1", api_key="unused", max_retries=0),
    )
    approvals = []

    def approve(request):
        approvals.append(request.data.name)
        return {"approve": True}

    agent = agents.Agent(
        name="calculator",
        instructions="Use the calc tools.",
        model=model,
        tools=[
            agents.HostedMCPTool(
                tool_config=mcp_tool("always"),
                on_approval_request=approve,
            )
        ],
    )
    script(calls(("calc__add", {"a": 5, "b": 6})), {"text": "5 + 6 = 11."})
    result = asyncio.run(agents.Runner.run(agent, "What is 5 + 6?"))
    assert result.final_output == "5 + 6 = 11."
    assert approvals == ["add"]
    kinds = [item.type for item in result.new_items]
    assert "mcp_list_tools_item" in kinds and "mcp_approval_request_item" in kinds, kinds
    raw = [item.raw_item for item in result.new_items if item.type == "tool_call_item"]
    outputs = [getattr(r, "output", None) or (r.get("output") if isinstance(r, dict) else None) for r in raw]
    assert "11" in outputs, (kinds, raw)
