//! Remote MCP tools run by the server, through the built component: a real
//! MCP server (the official Python SDK's FastMCP on Streamable HTTP, with
//! SSE answers and with JSON answers), the scripted backend told to call
//! its tools, and the host's outbound HTTP in between.
//!
//! Covered: listing (and reusing an earlier turn's listing), calls and
//! their results fed back to the model, tool errors, JSON-RPC and HTTP
//! errors on a call, timeouts, unreachable servers, calls of tools not
//! offered, `allowed_tools` and the approval filters, the approval flow
//! (approve and decline, a decline replayed once in its place, streamed),
//! `tool_choice` (forcing the first call only, refused when it names what
//! no server offers), credentials (sent to the server, never echoed or
//! stored), refused headers, function tools mixed in, `max_tool_calls`,
//! clients that keep their own history (`store: false`), streaming event
//! sequences, the allow-list (a server outside it is refused with no
//! outbound connection), and the bounds on what servers send: a call's
//! output, a response's output in all, calls per answer, answers past
//! 8 MiB, listings past their limits, and tool names that come out alike.

mod common;

use common::mcp::McpServer;
use common::Harness;
use scripted_backend::Reply;
use serde_json::{json, Value};

/// A host allowed to call `server`, with `extra` settings.
async fn harness(server: &McpServer, extra: &[(&str, &str)]) -> Harness {
    let allowed = format!("http://127.0.0.1:{}", server.port);
    let mut variables = vec![("mcp_allowed_servers", allowed.as_str())];
    variables.extend_from_slice(extra);
    Harness::with_variables(&variables).await
}

fn mcp_tool(server: &McpServer, approval: Value) -> Value {
    json!({"type": "mcp", "server_label": "calc", "server_url": server.url,
           "require_approval": approval, "authorization": "token-1",
           "server_description": "arithmetic for tests"})
}

fn types(response: &Value) -> Vec<String> {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["type"].as_str().unwrap().to_owned())
        .collect()
}

/// The last chat messages the backend was sent.
fn last_messages(h: &Harness) -> Vec<Value> {
    h.backend
        .chat_requests()
        .last()
        .unwrap()
        .messages()
        .to_vec()
}

async fn list_call_and_answer(json_answers: bool) {
    let Some(server) = McpServer::start(json_answers).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    h.backend.push_all([
        Reply::new()
            .tool_call("call_1", "calc__add", r#"{"a": 2, "b": 40}"#)
            .usage(10, 5),
        Reply::text("The sum is 42.").usage(20, 4),
    ]);
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "add 2 and 40",
                    "tools": [mcp_tool(&server, json!("never"))]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(types(&response), ["mcp_list_tools", "mcp_call", "message"]);
    let listing = &response["output"][0];
    assert_eq!(listing["server_label"], "calc");
    assert!(listing["error"].is_null());
    let names: Vec<&str> = listing["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "fail", "slow"]);
    assert_eq!(listing["tools"][0]["input_schema"]["type"], "object");
    assert_eq!(listing["tools"][0]["annotations"]["readOnlyHint"], true);
    let call = &response["output"][1];
    assert_eq!(
        (
            &call["name"],
            &call["server_label"],
            &call["output"],
            &call["status"]
        ),
        (
            &json!("add"),
            &json!("calc"),
            &json!("42"),
            &json!("completed")
        )
    );
    assert!(call["id"].as_str().unwrap().starts_with("mcp_"));
    assert!(call["error"].is_null());
    assert_eq!(common::output_text(&response), "The sum is 42.");
    // Both calls' usage.
    assert_eq!(response["usage"]["input_tokens"], 30);
    assert_eq!(response["usage"]["output_tokens"], 9);

    // The model was offered the server's tools, then shown the result.
    let chats = h.backend.chat_requests();
    assert_eq!(chats.len(), 2);
    let offered: Vec<&str> = chats[0]
        .tools()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["calc__add", "calc__fail", "calc__slow"]);
    assert_eq!(
        chats[0].tools()[0]["function"]["parameters"]["properties"]["a"]["type"],
        "integer"
    );
    // The request's server_description reaches the model with each tool.
    let description = chats[0].tools()[0]["function"]["description"]
        .as_str()
        .unwrap();
    assert!(
        description.starts_with("Adds two integers."),
        "{description}"
    );
    assert!(
        description.contains("arithmetic for tests"),
        "{description}"
    );
    let messages = chats[1].messages();
    let n = messages.len();
    assert_eq!(messages[n - 2]["role"], "assistant");
    assert_eq!(
        messages[n - 2]["tool_calls"][0]["function"]["name"],
        "calc__add"
    );
    assert_eq!(messages[n - 1]["role"], "tool");
    assert_eq!(messages[n - 1]["content"], "42");
    assert_eq!(
        messages[n - 1]["tool_call_id"],
        messages[n - 2]["tool_calls"][0]["id"]
    );

    // The server saw one session: initialize, then the rest with its id,
    // the client's token on every request.
    assert_eq!(
        server.methods(),
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call"
        ]
    );
    let requests = server.requests();
    assert!(requests
        .iter()
        .all(|r| r["headers"]["authorization"] == "Bearer token-1"));
    let session = requests[1]["headers"]["mcp-session-id"].clone();
    assert!(session.is_string(), "{requests:?}");
    assert!(requests[1..]
        .iter()
        .all(|r| r["headers"]["mcp-session-id"] == session));
    assert!(requests[1..]
        .iter()
        .all(|r| r["headers"]["mcp-protocol-version"].is_string()));
    // Once the client has its answer, the session is ended.
    let mut ended = false;
    for _ in 0..100 {
        ended = server
            .requests()
            .iter()
            .any(|r| r["method"] == "DELETE" && r["headers"]["mcp-session-id"] == session);
        if ended {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ended, "no DELETE of {session}: {:?}", server.requests());

    // GET returns what was answered; the next turn reuses the listing and
    // replays the call.
    let id = response["id"].as_str().unwrap();
    let (_, stored) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(stored["output"], response["output"]);
    h.backend.push(Reply::text("Done."));
    let (status, next) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "thanks", "previous_response_id": id,
                    "tools": [mcp_tool(&server, json!("never"))]}),
        )
        .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(types(&next), ["message"]);
    assert_eq!(server.methods().len(), 4, "no new listing");
    let chat = h.backend.chat_requests().pop().unwrap();
    assert_eq!(chat.tools().len(), 3);
    let replayed: Vec<&str> = chat
        .messages()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(replayed, ["user", "assistant", "tool", "assistant", "user"]);
}

/// A harness allowing `server` and a loopback port where nothing listens;
/// that port.
async fn with_closed_server(server: &McpServer) -> (Harness, u16) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let allowed = format!("http://127.0.0.1:{port}, http://127.0.0.1:{}", server.port);
    let h = Harness::with_variables(&[("mcp_allowed_servers", &allowed)]).await;
    (h, port)
}

/// Scripts the backend to call `calc__add` with `a` and `b`, then to
/// answer with the sum.
fn add_then_answer(h: &Harness, a: i64, b: i64) {
    h.backend.push_all([
        Reply::new().tool_call("call_1", "calc__add", format!(r#"{{"a": {a}, "b": {b}}}"#)),
        Reply::text(format!("{}.", a + b)),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_calls_and_answers_with_an_sse_server() {
    list_call_and_answer(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_calls_and_answers_with_a_json_server() {
    list_call_and_answer(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_shows_each_step() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    h.backend.push_all([
        Reply::new()
            .tool_call("call_1", "calc__add", r#"{"a": 1, "b": 2}"#)
            .argument_fragment_chars(4),
        Reply::chunks(["It is ", "3."]),
    ]);
    let events = h
        .stream_events(&json!({"model": "m", "input": "1+2", "stream": true,
                "tools": [mcp_tool(&server, json!("never"))]}))
        .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.output_item.done",
        "response.output_item.added",
        "response.mcp_call.in_progress",
    ];
    let deltas = names
        .iter()
        .filter(|n| **n == "response.mcp_call_arguments.delta")
        .count();
    assert!(deltas >= 3, "{names:?}");
    expected.extend(std::iter::repeat_n(
        "response.mcp_call_arguments.delta",
        deltas,
    ));
    expected.extend([
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    let call_id = events[6].1["item"]["id"].clone();
    assert_eq!(events[6].1["item"]["type"], "mcp_call");
    assert_eq!(events[6].1["item"]["status"], "in_progress");
    assert_eq!(events[7].1["item_id"], call_id);
    assert_eq!(events[7].1["output_index"], 1);
    let arguments: String = events
        .iter()
        .filter(|(n, _)| n == "response.mcp_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(arguments, r#"{"a": 1, "b": 2}"#);
    let done = &events[8 + deltas + 2].1["item"];
    assert_eq!(
        (&done["output"], &done["status"]),
        (&json!("3"), &json!("completed"))
    );
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["output"][1], *done);
    assert_eq!(completed["output"][0]["tools"].as_array().unwrap().len(), 3);
}

/// Failures on servers answering with event streams and with JSON: a JSON
/// answer's head comes only with the result, so a timeout there gives up
/// on a call still waiting for its head.
#[tokio::test(flavor = "multi_thread")]
async fn failures_reach_the_model_not_the_client() {
    for json_answers in [false, true] {
        failures_on(json_answers).await;
    }
}

async fn failures_on(json_answers: bool) {
    let Some(server) = McpServer::start(json_answers).await else {
        return;
    };
    let h = harness(&server, &[("mcp_timeout_seconds", "1")]).await;
    h.backend.push_all([
        Reply::new()
            .tool_call("call_1", "calc__fail", r#"{"reason": "testing"}"#)
            .tool_call("call_2", "calc__slow", r#"{"seconds": 5}"#)
            .tool_call("call_3", "calc__add", "not json"),
        Reply::text("Nothing worked."),
    ]);
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "try",
                    "tools": [mcp_tool(&server, json!("never"))]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["status"], "completed");
    assert_eq!(
        types(&response),
        [
            "mcp_list_tools",
            "mcp_call",
            "mcp_call",
            "mcp_call",
            "message"
        ]
    );
    let failed = &response["output"][1];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["type"], "mcp_tool_execution_error");
    assert!(failed["output"].is_null());
    let error_text = failed["error"]["content"].to_string();
    assert!(
        error_text.contains("failed on purpose: testing"),
        "{error_text}"
    );
    let slow = &response["output"][2]["error"];
    assert_eq!(
        (&slow["type"], &slow["code"]),
        (&json!("http_error"), &json!(504))
    );
    let bad = &response["output"][3]["error"];
    assert_eq!(
        (&bad["type"], &bad["code"]),
        (&json!("mcp_protocol_error"), &json!(-32602))
    );
    // The model saw each error as the result of its call.
    let tool_messages: Vec<String> = last_messages(&h)
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tool_messages.len(), 3);
    assert!(
        tool_messages[0].starts_with("Error: ") && tool_messages[0].contains("failed on purpose")
    );
    assert!(
        tool_messages[1].contains("within 1 s"),
        "{}",
        tool_messages[1]
    );
    assert!(
        tool_messages[2].contains("not JSON"),
        "{}",
        tool_messages[2]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_fails_its_listing_only() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    // Allowed, but nothing listens there.
    let (h, port) = with_closed_server(&server).await;
    h.backend.push(Reply::text("No tools today."));
    let tool = json!({"type": "mcp", "server_label": "gone",
                      "server_url": format!("http://127.0.0.1:{port}/mcp")});
    let events = h
        .stream_events(&json!({"model": "m", "input": "hi", "stream": true, "tools": [tool]}))
        .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[2..6],
        [
            "response.output_item.added",
            "response.mcp_list_tools.in_progress",
            "response.mcp_list_tools.failed",
            "response.output_item.done",
        ]
    );
    let item = &events[5].1["item"];
    assert!(
        item["error"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{item}"
    );
    assert_eq!(events.last().unwrap().0, "response.completed");
    assert!(h.backend.chat_requests()[0].tools().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_run_or_decline_the_call() {
    let Some(server) = McpServer::start(true).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let tools = json!([mcp_tool(
        &server,
        json!({"never": {"tool_names": ["fail"]}})
    )]);
    h.backend
        .push(Reply::new().tool_call("call_1", "calc__add", r#"{"a": 20, "b": 22}"#));
    let (status, first) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "add", "tools": tools}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(types(&first), ["mcp_list_tools", "mcp_approval_request"]);
    let request = &first["output"][1];
    let request_id = request["id"].as_str().unwrap();
    assert!(request_id.starts_with("mcpr_"));
    assert_eq!(request["arguments"], r#"{"a": 20, "b": 22}"#);
    assert_eq!(h.backend.chat_requests().len(), 1);
    assert!(!server.methods().contains(&"tools/call".to_owned()));

    // Approved: the call runs before the model is called again.
    h.backend.push(Reply::text("It is 42."));
    let (status, second) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "previous_response_id": first["id"], "tools": tools,
                    "input": [{"type": "mcp_approval_response",
                               "approval_request_id": request_id, "approve": true}]}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(types(&second), ["mcp_call", "message"]);
    assert_eq!(second["output"][0]["approval_request_id"], request_id);
    assert_eq!(second["output"][0]["output"], "42");
    assert_eq!(
        server
            .methods()
            .iter()
            .filter(|m| *m == "tools/call")
            .count(),
        1
    );
    let messages = last_messages(&h);
    let n = messages.len();
    assert_eq!(messages[n - 2]["tool_calls"][0]["id"], request_id);
    assert_eq!(messages[n - 1]["tool_call_id"], request_id);
    assert_eq!(messages[n - 1]["content"], "42");

    // Answering it again does not run it again.
    h.backend.push(Reply::text("Still 42."));
    let (status, again) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "previous_response_id": second["id"], "tools": tools,
                    "input": [{"type": "mcp_approval_response",
                               "approval_request_id": request_id, "approve": true}]}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(types(&again), ["message"]);
    assert_eq!(
        server
            .methods()
            .iter()
            .filter(|m| *m == "tools/call")
            .count(),
        1
    );

    // Declined: nothing runs; the model is told.
    h.backend
        .push(Reply::new().tool_call("call_2", "calc__add", r#"{"a": 1, "b": 1}"#));
    let (_, third) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "add again", "tools": tools}),
        )
        .await;
    assert_eq!(types(&third), ["mcp_list_tools", "mcp_approval_request"]);
    let declined_id = third["output"][1]["id"].clone();
    h.backend.push(Reply::text("Fine."));
    let (status, fourth) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "previous_response_id": third["id"], "tools": tools,
                    "input": [{"type": "mcp_approval_response", "approval_request_id": declined_id,
                               "approve": false, "reason": "not now"}]}),
        )
        .await;
    assert_eq!(status, 200, "{fourth}");
    assert_eq!(types(&fourth), ["message"]);
    assert_eq!(
        server
            .methods()
            .iter()
            .filter(|m| *m == "tools/call")
            .count(),
        1
    );
    let last = last_messages(&h).pop().unwrap();
    assert_eq!(last["tool_call_id"], declined_id);
    assert!(last["content"].as_str().unwrap().contains("declined"));
    assert!(last["content"].as_str().unwrap().contains("not now"));

    // An answer to no request is refused before anything runs.
    let (status, error) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "tools": tools, "input": [{"type": "mcp_approval_response",
                    "approval_request_id": "mcpr_nope", "approve": true}]}),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "input[0].approval_request_id");
}

#[tokio::test(flavor = "multi_thread")]
async fn function_tools_mix_in_and_max_tool_calls_counts_both() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let tools = json!([mcp_tool(&server, json!("never")),
                       {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    // An MCP call and a function call: the MCP call runs, the function
    // call goes to the client and ends the response.
    h.backend.push(
        Reply::new()
            .tool_call("call_1", "calc__add", r#"{"a": 1, "b": 1}"#)
            .tool_call("call_2", "get_weather", r#"{"city": "Oslo"}"#),
    );
    let (status, mixed) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "go", "tools": tools}),
        )
        .await;
    assert_eq!(status, 200, "{mixed}");
    assert_eq!(
        types(&mixed),
        ["mcp_list_tools", "mcp_call", "function_call"]
    );
    assert_eq!(mixed["output"][1]["output"], "2");
    assert_eq!(mixed["output"][2]["call_id"], "call_2");
    assert_eq!(h.backend.chat_requests().len(), 1);

    // max_tool_calls 1: the second call of the answer is dropped, and the
    // next call offers no more tool calls.
    h.backend.push_all([
        Reply::new()
            .tool_call("call_1", "calc__add", r#"{"a": 1, "b": 2}"#)
            .tool_call("call_2", "calc__add", r#"{"a": 3, "b": 4}"#),
        Reply::text("3."),
    ]);
    let (status, limited) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "go", "tools": tools, "max_tool_calls": 1}),
        )
        .await;
    assert_eq!(status, 200, "{limited}");
    assert_eq!(types(&limited), ["mcp_list_tools", "mcp_call", "message"]);
    let last = h.backend.chat_requests().pop().unwrap();
    assert_eq!(last.body["tool_choice"], "none");

    // parallel_tool_calls false: one call per answer.
    h.backend.push_all([
        Reply::new()
            .tool_call("call_1", "calc__add", r#"{"a": 1, "b": 2}"#)
            .tool_call("call_2", "calc__add", r#"{"a": 3, "b": 4}"#),
        Reply::text("3."),
    ]);
    let (status, one) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "go", "tools": tools, "parallel_tool_calls": false}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(types(&one), ["mcp_list_tools", "mcp_call", "message"]);
    assert_eq!(one["output"][1]["output"], "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_object_lists_once() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let (_, conversation) = h.post("/v1/conversations", &json!({})).await;
    let id = conversation["id"].as_str().unwrap();
    let tools = json!([mcp_tool(&server, json!("never"))]);
    for turn in 0..2 {
        add_then_answer(&h, 2, 2);
        let (status, response) = h
            .post(
                "/v1/responses",
                &json!({"model": "m", "input": "2+2", "conversation": id, "tools": tools}),
            )
            .await;
        assert_eq!(status, 200, "{response}");
        let expected: &[&str] = match turn {
            0 => &["mcp_list_tools", "mcp_call", "message"],
            _ => &["mcp_call", "message"],
        };
        assert_eq!(types(&response), expected);
    }
    let listings = server
        .methods()
        .iter()
        .filter(|m| *m == "tools/list")
        .count();
    assert_eq!(listings, 1);
    let (_, items) = h
        .get(&format!("/v1/conversations/{id}/items?order=asc"))
        .await;
    let kinds: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message",
            "mcp_list_tools",
            "mcp_call",
            "message",
            "message",
            "mcp_call",
            "message"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_outside_the_allow_list_are_never_called() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    // A listener the request points at, which counts connections.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_port = trap.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = trap.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let h = harness(&server, &[]).await;
    let urls = [
        format!("http://127.0.0.1:{trap_port}/mcp"),
        format!("http://localhost:{}/mcp", server.port),
        format!(
            "http://user@127.0.0.1:{}@127.0.0.1:{trap_port}/mcp",
            server.port
        ),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "file:///etc/passwd".to_owned(),
    ];
    for url in urls {
        for stream in [false, true] {
            let tool = json!({"type": "mcp", "server_label": "x", "server_url": url});
            let (status, error) = h
                .post(
                    "/v1/responses",
                    &json!({"model": "m", "input": "hi", "stream": stream, "tools": [tool]}),
                )
                .await;
            assert_eq!(status, 400, "{url}: {error}");
            assert_eq!(error["error"]["param"], "tools[0].server_url");
            assert!(error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("mcp_allowed_servers"));
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(server.requests().is_empty());
    assert!(h.backend.chat_requests().is_empty());

    // Without the setting, no server at all.
    let closed = Harness::start().await;
    let (status, error) = closed
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "hi",
                    "tools": [{"type": "mcp", "server_label": "x", "server_url": server.url}]}),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    assert!(server.requests().is_empty());
}

/// The official `openai` SDK and the Agents SDK's `HostedMCPTool`
/// (tests/python/test_mcp.py) against the component and a real MCP server.
#[tokio::test(flavor = "multi_thread")]
async fn openai_sdk_and_agents_sdk() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let report = common::pytest(
        &h.server.url(),
        &h.backend.origin(),
        "test_mcp.py",
        &[],
        &[("EDGE_RESPONSES_MCP_URL", &server.url)],
    )
    .await;
    assert!(report.contains("6 passed"), "{report}");
}

/// The names of the functions a chat request offered.
fn offered(chat: &scripted_backend::RecordedRequest) -> Vec<String> {
    chat.tools()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// How many `tools/call` requests the server received.
fn tool_calls(server: &McpServer) -> usize {
    server
        .methods()
        .iter()
        .filter(|m| *m == "tools/call")
        .count()
}

/// Whether any value in the host's key-value store holds `needle`.
fn store_holds(h: &Harness, needle: &str) -> bool {
    let db = rusqlite::Connection::open(h.server.store_path()).expect("the store opens");
    let mut query = db
        .prepare("SELECT value FROM spin_key_value")
        .expect("the store has Spin's table");
    let values: Vec<Vec<u8>> = query
        .query_map([], |row| row.get(0))
        .expect("the table reads")
        .map(|row| row.expect("a row"))
        .collect();
    values
        .iter()
        .any(|v| v.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// The body of a request that streams, as text.
async fn streamed_text(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_reach_the_server_and_nothing_else() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let (token, key) = ("sk-token-7f3a9", "hdr-value-91c2e");
    let tool = json!({"type": "mcp", "server_label": "calc", "server_url": server.url,
                      "require_approval": "never", "authorization": token,
                      "headers": {"X-Api-Key": key, "X-Team": "edge"}});
    let script = || {
        h.backend.push_all([
            Reply::new().tool_call("call_1", "calc__add", r#"{"a": 1, "b": 2}"#),
            Reply::text("3."),
        ])
    };
    script();
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "1+2", "tools": [tool]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(types(&response), ["mcp_list_tools", "mcp_call", "message"]);
    let echoed = &response["tools"][0];
    assert_eq!(
        (&echoed["server_label"], &echoed["require_approval"]),
        (&json!("calc"), &json!("never"))
    );
    assert!(echoed.get("authorization").is_none() && echoed.get("headers").is_none());
    let id = response["id"].as_str().unwrap();
    let (_, stored) = h.get(&format!("/v1/responses/{id}")).await;

    // A background response: its events are stored, and read back.
    script();
    let streamed = streamed_text(h.client.post(h.url("/v1/responses")).json(&json!({
            "model": "m", "input": "1+2", "tools": [tool], "background": true, "stream": true})))
    .await;
    let events = common::parse_sse(&streamed);
    let created: Value = serde_json::from_str(&events[0].1).unwrap();
    let background = created["response"]["id"].as_str().unwrap().to_owned();
    assert!(streamed.contains("response.completed"), "{streamed}");
    let replayed = streamed_text(
        h.client
            .get(h.url(&format!("/v1/responses/{background}?stream=true"))),
    )
    .await;
    assert!(
        replayed.contains("response.mcp_call.completed"),
        "{replayed}"
    );

    for (what, text) in [
        ("the answer", response.to_string()),
        ("GET", stored.to_string()),
        ("the stream", streamed),
        ("the stored events", replayed),
    ] {
        assert!(
            !text.contains(token) && !text.contains(key),
            "{what}: {text}"
        );
    }
    assert!(store_holds(&h, "calc__add"), "the store is read");
    assert!(!store_holds(&h, token) && !store_holds(&h, key));

    // The server had both with every request.
    let posts: Vec<Value> = server
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert_eq!(posts.len(), 8, "{posts:?}");
    for request in posts {
        let headers = &request["headers"];
        assert_eq!(headers["authorization"], format!("Bearer {token}"));
        assert_eq!(headers["x-api-key"], key);
        assert_eq!(headers["x-team"], "edge");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forced_choice_forces_the_first_call_only() {
    let Some(server) = McpServer::start(true).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let tools = json!([mcp_tool(&server, json!("never")),
                       {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let named = json!({"type": "function", "function": {"name": "calc__add"}});
    let cases = [
        (json!("required"), json!("required")),
        (
            json!({"type": "mcp", "server_label": "calc", "name": "add"}),
            named,
        ),
        (
            json!({"type": "mcp", "server_label": "calc"}),
            json!("required"),
        ),
    ];
    for (choice, first) in cases {
        add_then_answer(&h, 1, 1);
        let (status, response) = h
            .post(
                "/v1/responses",
                &json!({"model": "m", "input": "1+1", "tools": tools, "tool_choice": choice}),
            )
            .await;
        assert_eq!(status, 200, "{choice}: {response}");
        assert_eq!(types(&response), ["mcp_list_tools", "mcp_call", "message"]);
        assert_eq!(response["tool_choice"], choice);
        let chats = h.backend.chat_requests();
        let (call, next) = (&chats[chats.len() - 2], &chats[chats.len() - 1]);
        assert_eq!(call.body["tool_choice"], first, "{choice}");
        assert_eq!(next.body["tool_choice"], "auto", "{choice}");
        let all = ["calc__add", "calc__fail", "calc__slow", "get_weather"];
        // A server alone restricts the model to its tools.
        let expected = match choice.get("name") {
            None if choice.is_object() => &all[..3],
            _ => &all[..],
        };
        let mut names = offered(call);
        names.sort();
        assert_eq!(names, expected, "{choice}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_choice_names_a_server_and_a_tool_it_offers() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let mut filtered = mcp_tool(&server, json!("never"));
    filtered["allowed_tools"] = json!(["add"]);
    let cases = [
        (
            json!({"type": "mcp", "server_label": "nope"}),
            "tool_choice.server_label",
        ),
        (
            json!({"type": "mcp", "server_label": "calc", "name": "mul"}),
            "tool_choice.name",
        ),
        (
            json!({"type": "mcp", "server_label": "calc", "name": "fail"}),
            "tool_choice.name",
        ),
    ];
    for (choice, param) in cases {
        let (status, error) = h
            .post(
                "/v1/responses",
                &json!({"model": "m", "input": "x", "tools": [filtered], "tool_choice": choice}),
            )
            .await;
        assert_eq!(status, 400, "{choice}: {error}");
        assert_eq!(error["error"]["param"], param, "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    assert!(h.backend.chat_requests().is_empty());
    // An unknown label is refused before any server is contacted.
    assert_eq!(
        server
            .methods()
            .iter()
            .filter(|m| *m == "tools/list")
            .count(),
        2
    );
    // A stream has begun when the listing says so: it fails.
    let events = h
        .stream_events(
            &json!({"model": "m", "input": "x", "stream": true, "tools": [filtered],
                "tool_choice": {"type": "mcp", "server_label": "calc", "name": "mul"}}),
        )
        .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[names.len() - 2..], ["error", "response.failed"]);
    assert_eq!(events[names.len() - 2].1["param"], "tool_choice.name");
    assert!(h.backend.chat_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_call_is_shown_once_in_its_place() {
    let Some(server) = McpServer::start(true).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let tools = json!([mcp_tool(&server, json!("always"))]);
    h.backend
        .push(Reply::new().tool_call("call_1", "calc__add", r#"{"a": 1, "b": 1}"#));
    let (_, first) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "add", "tools": tools}),
        )
        .await;
    let request_id = first["output"][1]["id"].as_str().unwrap().to_owned();
    h.backend.push(Reply::text("Not adding, then."));
    let (status, second) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "previous_response_id": first["id"], "tools": tools,
                    "input": [{"type": "mcp_approval_response", "approval_request_id": request_id,
                               "approve": false, "reason": "not now"}]}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    let second_id = second["id"].as_str().unwrap();
    // Two more turns: the decline stays where it was, once.
    let mut previous = second_id.to_owned();
    for (turn, question) in ["what now?", "and now?"].iter().enumerate() {
        h.backend.push(Reply::text("Nothing."));
        let (status, next) = h
            .post(
                "/v1/responses",
                &json!({"model": "m", "previous_response_id": previous, "tools": tools,
                        "input": question}),
            )
            .await;
        assert_eq!(status, 200, "{next}");
        assert_eq!(types(&next), ["message"]);
        let messages = last_messages(&h);
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        let mut expected = vec!["user", "assistant", "tool", "assistant", "user"];
        if turn == 1 {
            expected.extend(["assistant", "user"]);
        }
        assert_eq!(roles, expected, "{messages:?}");
        assert_eq!(messages[1]["tool_calls"][0]["id"], request_id);
        assert_eq!(
            messages[1]["tool_calls"][0]["function"]["name"],
            "calc__add"
        );
        assert_eq!(messages[2]["tool_call_id"], request_id);
        assert_eq!(
            messages[2]["content"],
            "The user declined this call. Their reason: not now"
        );
        assert_eq!(messages.last().unwrap()["content"], *question);
        previous = next["id"].as_str().unwrap().to_owned();
    }
    assert_eq!(tool_calls(&server), 0);
    // The answer is listed with an id of its own.
    let (_, items) = h
        .get(&format!("/v1/responses/{second_id}/input_items"))
        .await;
    let answer = &items["data"][0];
    assert_eq!(answer["type"], "mcp_approval_response");
    let answer_id = answer["id"].as_str().unwrap();
    assert!(answer_id.starts_with("mcpa_"), "{answer}");
    assert_ne!(answer_id, request_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_of_tools_not_offered_fail_on_the_server() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    // A second server, allowed, where nothing listens: its listing fails.
    let (h, port) = with_closed_server(&server).await;
    let mut calc = mcp_tool(&server, json!("never"));
    calc["allowed_tools"] = json!(["add"]);
    let gone = json!({"type": "mcp", "server_label": "gone", "require_approval": "never",
                      "server_url": format!("http://127.0.0.1:{port}/mcp")});
    h.backend.push_all([
        Reply::new()
            .tool_call("call_1", "calc__fail", r#"{"reason": "x"}"#)
            .tool_call("call_2", "gone__add", r#"{"a": 1, "b": 1}"#),
        Reply::text("Neither is there."),
    ]);
    let events = h
        .stream_events(&json!({"model": "m", "input": "go", "stream": true, "tools": [calc, gone]}))
        .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "response.mcp_call.failed")
            .count(),
        2,
        "{names:?}"
    );
    assert!(!names.contains(&"response.function_call_arguments.done"));
    let response = &events.last().unwrap().1["response"];
    assert_eq!(response["status"], "completed");
    assert_eq!(
        types(response),
        [
            "mcp_list_tools",
            "mcp_list_tools",
            "mcp_call",
            "mcp_call",
            "message"
        ]
    );
    for (call, (label, name)) in response["output"].as_array().unwrap()[2..4]
        .iter()
        .zip([("calc", "fail"), ("gone", "add")])
    {
        assert_eq!(
            (&call["server_label"], &call["name"]),
            (&json!(label), &json!(name))
        );
        assert_eq!(call["status"], "failed");
        assert_eq!(call["error"]["type"], "mcp_protocol_error");
        let message = call["error"]["message"].as_str().unwrap();
        assert!(message.contains("not available"), "{message}");
    }
    // Each failed event closes its call.
    for (i, name) in names.iter().enumerate() {
        if *name == "response.mcp_call.failed" {
            let id = &events[i].1["item_id"];
            let done = &events[i + 1].1;
            assert_eq!(events[i + 1].0, "response.output_item.done");
            assert_eq!(
                (&done["item"]["id"], &done["item"]["status"]),
                (id, &json!("failed"))
            );
        }
    }
    assert_eq!(tool_calls(&server), 0);
    let shown: Vec<Value> = last_messages(&h)
        .into_iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(shown.len(), 2);
    assert!(shown
        .iter()
        .all(|m| m["content"].as_str().unwrap().contains("not available")));
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_stream_their_events() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let tools = json!([mcp_tool(&server, json!("always"))]);
    h.backend.push(
        Reply::new()
            .tool_call("call_1", "calc__add", r#"{"a": 4, "b": 5}"#)
            .argument_fragment_chars(4),
    );
    let events = h
        .stream_events(&json!({"model": "m", "input": "4+5", "stream": true, "tools": tools}))
        .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.mcp_list_tools.in_progress",
            "response.mcp_list_tools.completed",
            "response.output_item.done",
            "response.output_item.added",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let request = &events[7].1["item"];
    assert_eq!(request["type"], "mcp_approval_request");
    assert_eq!(request["arguments"], r#"{"a": 4, "b": 5}"#);
    assert_eq!(events[6].1["item"]["id"], request["id"]);
    let first = &events.last().unwrap().1["response"];

    h.backend.push(Reply::text("Nine."));
    let events = h.stream_events(
        &json!({"model": "m", "stream": true, "tools": tools, "previous_response_id": first["id"],
                "input": [{"type": "mcp_approval_response", "approval_request_id": request["id"],
                           "approve": true}]}),
    )
    .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.mcp_call.in_progress",
            "response.mcp_call.completed",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let call = &events[5].1["item"];
    assert_eq!(
        (&call["type"], &call["approval_request_id"], &call["output"]),
        (&json!("mcp_call"), &request["id"], &json!("9"))
    );
    for (name, data) in &events[2..6] {
        if name != "response.output_item.added" && name != "response.output_item.done" {
            assert_eq!(data["item_id"], call["id"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_servers_errors_on_a_call_are_typed() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    h.backend.push_all([
        Reply::new()
            .tool_call("call_1", "calc__fail", r#"{"reason": "rpc-error"}"#)
            .tool_call("call_2", "calc__fail", r#"{"reason": "http-503"}"#),
        Reply::text("The server is unwell."),
    ]);
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "tools": [mcp_tool(&server, json!("never"))]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["status"], "completed");
    let rpc = &response["output"][1];
    assert_eq!(rpc["status"], "failed");
    assert_eq!(
        (&rpc["error"]["type"], &rpc["error"]["code"]),
        (&json!("mcp_protocol_error"), &json!(-32603))
    );
    assert!(rpc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("scripted JSON-RPC failure"));
    let http = &response["output"][2];
    assert_eq!(
        (&http["error"]["type"], &http["error"]["code"]),
        (&json!("http_error"), &json!(503))
    );
    let shown: Vec<String> = last_messages(&h)
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        shown[0].contains("-32603") || shown[0].contains("scripted"),
        "{shown:?}"
    );
    assert!(shown[1].contains("503"), "{shown:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_tools_and_approval_filters() {
    let Some(server) = McpServer::start(true).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let cases = [
        (json!(["add", "slow"]), vec!["calc__add", "calc__slow"]),
        (json!({"read_only": true}), vec!["calc__add"]),
        (
            json!({"tool_names": ["add", "fail"], "read_only": false}),
            vec!["calc__fail"],
        ),
    ];
    for (allowed, expected) in cases {
        let mut tool = mcp_tool(&server, json!("never"));
        tool["allowed_tools"] = allowed.clone();
        h.backend.push(Reply::text("ok"));
        let (status, response) = h
            .post(
                "/v1/responses",
                &json!({"model": "m", "input": "x", "tools": [tool]}),
            )
            .await;
        assert_eq!(status, 200, "{response}");
        // The listing shows every tool; the model is offered the allowed.
        assert_eq!(response["output"][0]["tools"].as_array().unwrap().len(), 3);
        let chat = h.backend.chat_requests().pop().unwrap();
        assert_eq!(offered(&chat), expected, "{allowed}");
    }

    // Read-only tools run at once, the others wait for approval.
    let tool = mcp_tool(&server, json!({"never": {"read_only": true}}));
    h.backend.push(
        Reply::new()
            .tool_call("call_1", "calc__add", r#"{"a": 1, "b": 2}"#)
            .tool_call("call_2", "calc__fail", r#"{"reason": "r"}"#),
    );
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "tools": [tool]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        types(&response),
        ["mcp_list_tools", "mcp_call", "mcp_approval_request"]
    );
    assert_eq!(response["output"][1]["output"], "3");
    assert_eq!(response["output"][2]["name"], "fail");
    assert_eq!(tool_calls(&server), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_mcp_tools_are_refused_before_any_connection() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let with = |extra: Value| {
        let mut tool = json!({"type": "mcp", "server_label": "calc", "server_url": server.url});
        for (k, v) in extra.as_object().unwrap() {
            tool[k] = v.clone();
        }
        tool
    };
    let headers = [
        json!({"Content-Type": "text/plain"}),
        json!({"Mcp-Session-Id": "s"}),
        json!({"Host": "evil.test"}),
        json!({"Transfer-Encoding": "chunked"}),
        json!({"Connection": "close"}),
        json!({"bad header": "v"}),
        json!({"x-key": "a\u{7}b"}),
    ];
    let mut cases: Vec<(Value, &str)> = headers
        .into_iter()
        .map(|headers| (with(json!({"headers": headers})), "tools[1].headers"))
        .collect();
    cases.extend([
        (
            json!({"type": "mcp", "server_label": "g", "connector_id": "connector_gmail"}),
            "tools[1].connector_id",
        ),
        (
            json!({"type": "mcp", "server_label": "t", "tunnel_id": "tunnel_1"}),
            "tools[1].tunnel_id",
        ),
        (with(json!({"authorization": 5})), "tools[1].authorization"),
        (
            with(json!({"authorization": ["token"]})),
            "tools[1].authorization",
        ),
    ]);
    for (tool, param) in cases {
        for stream in [false, true] {
            let tools = json!([{"type": "function", "name": "f"}, tool]);
            let (status, error) = h
                .post(
                    "/v1/responses",
                    &json!({"model": "m", "input": "x", "stream": stream, "tools": tools}),
                )
                .await;
            assert_eq!(status, 400, "{tool}: {error}");
            assert_eq!(error["error"]["param"], param, "{error}");
        }
    }
    assert!(server.requests().is_empty());
    assert!(h.backend.chat_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_keeps_its_own_history() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let question = json!({"role": "user", "content": "2+40"});
    // Calls that need no approval, the items passed back by the client.
    add_then_answer(&h, 2, 40);
    let never = json!([mcp_tool(&server, json!("never"))]);
    let (_, first) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "store": false, "input": [question], "tools": never}),
        )
        .await;
    assert_eq!(types(&first), ["mcp_list_tools", "mcp_call", "message"]);
    let mut input = vec![question.clone()];
    input.extend(first["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"role": "user", "content": "thanks"}));
    h.backend.push(Reply::text("You're welcome."));
    let (status, second) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "store": false, "input": input, "tools": never}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(types(&second), ["message"], "the listing is reused");
    let roles: Vec<String> = last_messages(&h)
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant", "user"]);
    assert_eq!(tool_calls(&server), 1);

    // An approval, answered with the items passed back: the call runs
    // once, however often the answer is sent again.
    let always = json!([mcp_tool(&server, json!("always"))]);
    h.backend
        .push(Reply::new().tool_call("call_1", "calc__add", r#"{"a": 1, "b": 1}"#));
    let (_, asked) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "store": false, "input": [question], "tools": always}),
        )
        .await;
    assert_eq!(types(&asked), ["mcp_list_tools", "mcp_approval_request"]);
    let request_id = asked["output"][1]["id"].clone();
    let mut input = vec![question.clone()];
    input.extend(asked["output"].as_array().unwrap().iter().cloned());
    input.push(
        json!({"type": "mcp_approval_response", "approval_request_id": request_id,
                      "approve": true}),
    );
    h.backend.push(Reply::text("2."));
    let (_, ran) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "store": false, "input": input, "tools": always}),
        )
        .await;
    assert_eq!(types(&ran), ["mcp_call", "message"]);
    assert_eq!(tool_calls(&server), 2);
    input.extend(ran["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"role": "user", "content": "thanks"}));
    h.backend.push(Reply::text("Welcome."));
    let (status, after) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "store": false, "input": input, "tools": always}),
        )
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(types(&after), ["message"]);
    assert_eq!(tool_calls(&server), 2);
    let messages = last_messages(&h);
    let calls: Vec<&Value> = messages
        .iter()
        .flat_map(|m| m["tool_calls"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(calls.len(), 1, "{messages:?}");
    assert_eq!(calls[0]["id"], request_id);
}

/// An `mcp` tool, labelled `label`, on the server's extra FastMCP server at
/// `path` (`extra` or `many`), needing no approval.
fn extra_tool(server: &McpServer, label: &str, path: &str) -> Value {
    json!({"type": "mcp", "server_label": label, "require_approval": "never",
           "server_url": format!("http://127.0.0.1:{}/{path}/mcp", server.port)})
}

/// The `tool` messages of the last chat request, as text.
fn shown_results(h: &Harness) -> Vec<String> {
    last_messages(h)
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// One call's output is cut at 1 MiB (at a character boundary, with a
/// note), and a response keeps 8 MiB of output in all: the calls past it
/// do not run. Stored items and the next backend request stay bounded.
#[tokio::test(flavor = "multi_thread")]
async fn call_output_is_bounded_per_call_and_per_response() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    const MIB: usize = 1 << 20;
    let mut reply = Reply::new();
    for i in 0..10 {
        // 1,200 KiB of '€' (three bytes each), then cut within a '€'.
        reply = reply.tool_call(
            format!("call_{i}"),
            "big__big",
            r#"{"kib": 1200, "char": "€"}"#,
        );
    }
    h.backend.push_all([reply, Reply::text("Plenty.")]);
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "tools": [extra_tool(&server, "big", "extra")]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["output"].as_array().unwrap().len(), 12);
    let calls = &response["output"].as_array().unwrap()[1..11];
    let mut kept = 0;
    for call in &calls[..8] {
        assert_eq!(call["status"], "completed", "{}", call["error"]);
        let output = call["output"].as_str().unwrap();
        let (text, note) = output.split_once("\n[output cut: ").unwrap();
        assert!(note.contains("more bytes not shown"), "{note}");
        assert!(text.chars().all(|c| c == '€'));
        assert!(text.len() <= MIB);
        assert!(note.contains("kept to 1048576 bytes"), "{note}");
        kept += output.len();
    }
    // The first call is cut at the last whole '€' within 1 MiB.
    let first = calls[0]["output"].as_str().unwrap();
    assert_eq!(first.find('\n'), Some(MIB - MIB % 3));
    assert!(kept <= 8 * MIB + 8 * 200, "{kept}");
    for call in &calls[8..] {
        assert_eq!(call["status"], "failed");
        assert_eq!(call["error"]["type"], "mcp_protocol_error");
        let message = call["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("8388608 bytes of tool output"),
            "{message}"
        );
    }
    assert_eq!(tool_calls(&server), 8);
    // The model saw what the items hold, no more.
    let shown = shown_results(&h);
    assert_eq!(shown.len(), 10);
    assert!(shown.iter().map(String::len).sum::<usize>() < kept + 1000);
    let id = response["id"].as_str().unwrap();
    let (_, stored) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(stored["output"], response["output"]);
}

/// An answer past 8 MiB fails its call as too large, as an event stream
/// and as JSON.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_past_8_mib_is_too_large() {
    for json_answers in [false, true] {
        let Some(server) = McpServer::start(json_answers).await else {
            return;
        };
        let h = harness(&server, &[]).await;
        h.backend.push_all([
            Reply::new().tool_call("call_1", "big__big", r#"{"kib": 8200}"#),
            Reply::text("Too much."),
        ]);
        let (status, response) = h
            .post(
                "/v1/responses",
                &json!({"model": "m", "input": "x", "tools": [extra_tool(&server, "big", "extra")]}),
            )
            .await;
        assert_eq!(status, 200, "{response}");
        let call = &response["output"][1];
        assert_eq!(call["status"], "failed", "{json_answers}");
        let message = call["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("too large: more than 8388608 bytes"),
            "{json_answers}: {message}"
        );
        assert!(shown_results(&h)[0].contains("too large"));
    }
}

/// One answer runs at most 32 calls of the server's tools; the rest fail
/// without reaching the server, and the model is told why.
#[tokio::test(flavor = "multi_thread")]
async fn one_answer_runs_at_most_32_calls() {
    let Some(server) = McpServer::start(true).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let mut reply = Reply::new();
    for i in 0..34 {
        reply = reply.tool_call(
            format!("call_{i}"),
            "calc__add",
            format!(r#"{{"a": {i}, "b": 1}}"#),
        );
    }
    // The next answer may call again.
    h.backend.push_all([
        reply,
        Reply::new().tool_call("call_34", "calc__add", r#"{"a": 1, "b": 1}"#),
        Reply::text("Done."),
    ]);
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "tools": [mcp_tool(&server, json!("never"))]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 1 + 34 + 1 + 1);
    for (i, call) in output[1..33].iter().enumerate() {
        assert_eq!(call["output"], json!((i + 1).to_string()));
    }
    for call in &output[33..35] {
        assert_eq!(call["status"], "failed");
        let message = call["error"]["message"].as_str().unwrap();
        assert!(message.contains("at most 32 calls"), "{message}");
    }
    assert_eq!(output[35]["output"], "2");
    assert_eq!(tool_calls(&server), 33);
    let chats = h.backend.chat_requests();
    let shown: Vec<&Value> = chats[1]
        .messages()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert!(shown[33]["content"]
        .as_str()
        .unwrap()
        .contains("at most 32 calls"));
}

/// A listing of more than 512 tools fails: the model goes on without them,
/// and a `tool_choice` naming one of them leaves the model free.
#[tokio::test(flavor = "multi_thread")]
async fn a_listing_past_its_limits_fails() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    h.backend.push(Reply::text("No tools."));
    let tools = json!([
        extra_tool(&server, "many", "many"),
        mcp_tool(&server, json!("never"))
    ]);
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "tools": tools,
                    "tool_choice": {"type": "mcp", "server_label": "many", "name": "t1"}}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        types(&response),
        ["mcp_list_tools", "mcp_list_tools", "message"]
    );
    let listing = &response["output"][0];
    assert_eq!(listing["server_label"], "many");
    assert_eq!(listing["tools"], json!([]));
    let error = listing["error"].as_str().unwrap();
    assert!(error.contains("more than 512 tools"), "{error}");
    assert!(response["output"][1]["error"].is_null());
    let chat = &h.backend.chat_requests()[0];
    assert_eq!(offered(chat), ["calc__add", "calc__fail", "calc__slow"]);
    assert_eq!(chat.body["tool_choice"], "auto");
}

/// Tool names that come out alike as function names get names of their
/// own: each is offered, callable, and reached; `tool_choice` may name any.
#[tokio::test(flavor = "multi_thread")]
async fn tool_names_that_come_out_alike_are_each_offered() {
    let Some(server) = McpServer::start(false).await else {
        return;
    };
    let h = harness(&server, &[]).await;
    let long = "x".repeat(58);
    let long_2 = format!("{}_2", "x".repeat(56));
    h.backend.push_all([
        Reply::new()
            .tool_call("call_1", "evil__repos_get_file", "{}")
            .tool_call("call_2", "evil__repos_get_file_2", "{}")
            .tool_call("call_3", format!("evil__{long}"), "{}")
            .tool_call("call_4", format!("evil__{long_2}"), "{}"),
        Reply::text("Four."),
    ]);
    let tools = json!([extra_tool(&server, "evil", "extra")]);
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "tools": tools,
                    "tool_choice": {"type": "mcp", "server_label": "evil", "name": "repos.get_file"}}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    let chat = &h.backend.chat_requests()[0];
    let names = offered(chat);
    assert_eq!(
        names,
        [
            "evil__big".to_owned(),
            "evil__repos_get_file".to_owned(),
            "evil__repos_get_file_2".to_owned(),
            format!("evil__{long}"),
            format!("evil__{long_2}"),
        ]
    );
    assert!(names.iter().all(|n| n.len() <= 64));
    assert_eq!(
        chat.body["tool_choice"]["function"]["name"],
        "evil__repos_get_file_2"
    );
    let listed = [
        "repos.get/file".to_owned(),
        "repos.get_file".to_owned(),
        format!("{}a", "x".repeat(69)),
        format!("{}b", "x".repeat(69)),
    ];
    for (call, name) in response["output"].as_array().unwrap()[1..5]
        .iter()
        .zip(&listed)
    {
        assert_eq!(call["name"], json!(name));
        assert_eq!(call["status"], "completed", "{}", call["error"]);
        // Each tool answers with its own name: the call reached it.
        assert_eq!(call["output"], json!(name));
    }
    assert_eq!(tool_calls(&server), 4);
}
