//! Remote MCP tools run by the server, through the built component: a real
//! MCP server (the official Python SDK's FastMCP on Streamable HTTP, with
//! SSE answers and with JSON answers), the scripted backend told to call
//! its tools, and the host's outbound HTTP in between.
//!
//! Covered: listing (and reusing an earlier turn's listing), calls and
//! their results fed back to the model, tool errors, timeouts, unreachable
//! servers, the approval flow (approve and decline), function tools mixed
//! in, `max_tool_calls`, streaming event sequences, and the allow-list
//! (a server outside it is refused with no outbound connection).

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

#[tokio::test(flavor = "multi_thread")]
async fn lists_calls_and_answers_with_an_sse_server() {
    list_call_and_answer(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_calls_and_answers_with_a_json_server() {
    list_call_and_answer(true).await;
}

/// The events of a stream, without keep-alives.
async fn stream_events(h: &Harness, body: &Value) -> Vec<(String, Value)> {
    h.stream(body)
        .await
        .into_iter()
        .filter(|(_, data)| data != "[DONE]")
        .map(|(name, data)| (name, serde_json::from_str(&data).unwrap()))
        .collect()
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
    let events = stream_events(
        &h,
        &json!({"model": "m", "input": "1+2", "stream": true,
                "tools": [mcp_tool(&server, json!("never"))]}),
    )
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

#[tokio::test(flavor = "multi_thread")]
async fn failures_reach_the_model_not_the_client() {
    let Some(server) = McpServer::start(false).await else {
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
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let allowed = format!("http://127.0.0.1:{port}, http://127.0.0.1:{}", server.port);
    let h = Harness::with_variables(&[("mcp_allowed_servers", &allowed)]).await;
    h.backend.push(Reply::text("No tools today."));
    let tool = json!({"type": "mcp", "server_label": "gone",
                      "server_url": format!("http://127.0.0.1:{port}/mcp")});
    let events = stream_events(
        &h,
        &json!({"model": "m", "input": "hi", "stream": true, "tools": [tool]}),
    )
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
        h.backend.push_all([
            Reply::new().tool_call("call_1", "calc__add", r#"{"a": 2, "b": 2}"#),
            Reply::text("4."),
        ]);
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
