//! The non-streaming Responses API surface over the built component: what
//! requests are accepted, how they reach the backend, what comes back, and
//! how failures are reported.

mod common;

use common::{output_text, Harness};
use scripted_backend::Reply;
use serde_json::{json, Value};

/// Keys of the Response object that must always be present.
const RESPONSE_KEYS: &[&str] = edge_responses::api::response::Response::KEYS;

async fn create(h: &Harness, body: Value) -> Value {
    let (status, response) = h.post("/v1/responses", &body).await;
    assert_eq!(status, 200, "{response}");
    response
}

async fn error(h: &Harness, body: Value, expected: u16) -> Value {
    let (status, response) = h.post("/v1/responses", &body).await;
    assert_eq!(status, expected, "{response}");
    let error = response["error"].clone();
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{response}"
    );
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{response}"
    );
    error
}

/// A catalogue of cases: every case runs, and each failure names its case.
#[derive(Default)]
struct Catalogue(Vec<String>);

impl Catalogue {
    fn check(&mut self, case: impl std::fmt::Display, ok: bool, detail: impl std::fmt::Display) {
        if !ok {
            self.0.push(format!("{case}: {detail}"));
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} case(s) failed:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

fn sent(h: &Harness) -> Value {
    h.backend
        .last_request()
        .expect("the backend was called")
        .body
}

/// An id of `prefix` followed by at least 128 random bits in hex.
fn assert_id(id: &Value, prefix: &str) {
    let id = id
        .as_str()
        .unwrap_or_else(|| panic!("id is not a string: {id}"));
    let rest = id
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .unwrap_or_else(|| panic!("{id} does not start with {prefix}_"));
    assert!(
        rest.len() >= 32 && rest.chars().all(|c| c.is_ascii_alphanumeric()),
        "{id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_has_every_key_and_well_formed_items() {
    let h = Harness::start().await;
    h.backend.push(
        Reply::text("Hi there")
            .usage(5, 2)
            .cached_tokens(1)
            .reasoning_tokens(0),
    );
    let response = create(&h, json!({"model": "m", "input": "hello"})).await;
    for key in RESPONSE_KEYS {
        assert!(response.get(*key).is_some(), "missing {key}: {response}");
    }
    assert_id(&response["id"], "resp");
    assert_eq!(response["object"], "response");
    assert!(response["created_at"].is_i64(), "{response}");
    assert!(response["completed_at"].is_i64(), "{response}");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["error"], Value::Null);
    assert_eq!(response["incomplete_details"], Value::Null);
    assert_eq!(response["instructions"], Value::Null);
    assert_eq!(response["tools"], json!([]));
    assert_eq!(response["tool_choice"], "auto");
    assert_eq!(response["parallel_tool_calls"], true);
    assert_eq!(response["metadata"], json!({}));
    assert_eq!(response["store"], true);
    assert_eq!(response["text"]["format"], json!({"type": "text"}));
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 0},
               "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 7})
    );
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    let message = &output[0];
    assert_id(&message["id"], "msg");
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["status"], "completed");
    assert_eq!(
        message["content"],
        json!([{"type": "output_text", "text": "Hi there", "annotations": [], "logprobs": []}])
    );
    // Two responses never share an id.
    let other = create(&h, json!({"model": "m", "input": "hello"})).await;
    assert_ne!(other["id"], response["id"]);
    assert_ne!(other["output"][0]["id"], message["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_form_is_accepted_and_translated() {
    let h = Harness::start().await;
    let input = json!([
        {"role": "system", "content": "sys"},
        {"role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
        {"role": "user", "content": "plain"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        ]},
        {"type": "message", "role": "assistant", "phase": "commentary", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_a", "name": "lookup", "arguments": "{\"q\":1}"},
        {"type": "function_call", "call_id": "call_b", "name": "create_issue",
         "namespace": "mcp__github__", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "found"},
        {"type": "function_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": "made "}, {"type": "input_text", "text": "#1"}]},
        {"type": "custom_tool_call", "call_id": "call_c", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "call_c", "output": "patched"},
        {"role": "assistant", "phase": "final_answer", "content": [{"type": "refusal", "refusal": "No."}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
        {"role": "user", "content": "go on"},
    ]);
    let response = create(&h, json!({"model": "m", "input": input})).await;
    assert_eq!(output_text(&response), "Hello! You said: go on");
    let messages = sent(&h)["messages"].clone();
    assert_eq!(
        messages,
        json!([
            {"role": "system", "content": "sys"},
            {"role": "system", "content": "dev"},
            {"role": "user", "content": "plain"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}},
                {"id": "call_b", "type": "function", "function": {"name": "mcp__github__create_issue", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "found"},
            {"role": "tool", "tool_call_id": "call_b", "content": "made #1"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_c", "type": "function", "function": {"name": "apply_patch",
                 "arguments": "{\"input\":\"*** Begin Patch\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_c", "content": "patched"},
            {"role": "assistant", "content": "No."},
            {"role": "user", "content": "go on"},
        ])
    );
    // The input items are kept as given, with ids.
    let id = response["id"].as_str().unwrap();
    let (status, items) = h
        .get(&format!(
            "/v1/responses/{id}/input_items?order=asc&limit=100"
        ))
        .await;
    assert_eq!(status, 200, "{items}");
    let data = items["data"].as_array().unwrap();
    assert_eq!(data.len(), 14);
    assert!(data.iter().all(|item| item["id"].is_string()), "{items}");
    assert_eq!(data[4]["phase"], "commentary");
    assert_eq!(data[6]["namespace"], "mcp__github__");
    assert_eq!(data[12]["type"], "web_search_call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_from_other_servers_with_nulls_are_accepted() {
    let h = Harness::start().await;
    let input = json!([
        {"type": "message", "role": "user", "id": null, "status": null,
         "content": [{"type": "input_image", "image_url": "https://example.com/a.png", "detail": null}]},
        {"type": "message", "role": "assistant", "id": "msg_x", "status": "completed", "phase": null,
         "content": [{"type": "output_text", "text": "Sure.", "annotations": null, "logprobs": null}]},
        {"type": "reasoning", "id": "rs_x", "summary": null, "content": null, "encrypted_content": null},
        {"type": "function_call", "id": null, "call_id": "c1", "name": "f", "arguments": "{}", "status": null},
        {"type": "function_call_output", "id": null, "call_id": "c1", "output": "ok", "status": null},
        {"role": "user", "content": "next"},
    ]);
    let response = create(&h, json!({"model": "m", "input": input})).await;
    assert_eq!(output_text(&response), "Hello! You said: next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_items_are_dropped_unless_the_backend_takes_them() {
    let input = json!([
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "short"}],
         "encrypted_content": "opaque"},
        {"type": "reasoning", "id": "rs_2", "summary": [],
         "content": [{"type": "reasoning_text", "text": "thinking"}]},
        {"type": "message", "role": "assistant", "content": "a"},
        {"role": "user", "content": "again"},
    ]);
    let h = Harness::start().await;
    create(&h, json!({"model": "m", "input": input})).await;
    let messages = sent(&h)["messages"].clone();
    assert_eq!(messages[1], json!({"role": "assistant", "content": "a"}));

    let h = Harness::with_variables(&[("backend_reasoning", "true")]).await;
    create(&h, json!({"model": "m", "input": input})).await;
    let messages = sent(&h)["messages"].clone();
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": "a", "reasoning_content": "short\nthinking"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_reach_the_backend_and_are_echoed() {
    let h = Harness::start().await;
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}},
                        "required": ["name"], "additionalProperties": false});
    let metadata = json!({"team": "search", "run": "42"});
    let request = json!({
        "model": "m",
        "input": "hi",
        "instructions": "Be terse.",
        "temperature": 0.3,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "max_output_tokens": 77,
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "person", "strict": true, "schema": schema}},
        "metadata": metadata,
        "safety_identifier": "user-123",
        "prompt_cache_key": "cache-1",
        "service_tier": "auto",
        "truncation": "auto",
        "store": true,
    });
    let response = create(&h, request).await;
    let body = sent(&h);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "Be terse."})
    );
    assert_eq!(body["temperature"], 0.3);
    assert_eq!(body["top_p"], 0.9);
    assert_eq!(body["frequency_penalty"], 0.5);
    assert_eq!(body["presence_penalty"], -0.5);
    assert_eq!(body["max_tokens"], 77);
    assert_eq!(body["reasoning_effort"], "high");
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}})
    );
    assert_eq!(body["user"], "user-123");
    assert_eq!(body["prompt_cache_key"], "cache-1");
    assert!(body.get("tools").is_none());

    assert_eq!(response["instructions"], "Be terse.");
    assert_eq!(response["temperature"], 0.3);
    assert_eq!(response["top_p"], 0.9);
    assert_eq!(response["frequency_penalty"], 0.5);
    assert_eq!(response["presence_penalty"], -0.5);
    assert_eq!(response["max_output_tokens"], 77);
    assert_eq!(response["reasoning"]["effort"], "high");
    assert_eq!(response["reasoning"]["summary"], "auto");
    assert_eq!(response["text"]["format"]["type"], "json_schema");
    assert_eq!(response["text"]["format"]["name"], "person");
    assert_eq!(response["metadata"], metadata);
    assert_eq!(response["safety_identifier"], "user-123");
    assert_eq!(response["prompt_cache_key"], "cache-1");
    assert_eq!(response["truncation"], "auto");

    create(
        &h,
        json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}},
                      "user": "legacy-user"}),
    )
    .await;
    let body = sent(&h);
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert_eq!(body["user"], "legacy-user");

    create(
        &h,
        json!({"model": "m", "input": "x", "text": {"format": {"type": "text"}}}),
    )
    .await;
    assert!(sent(&h).get("response_format").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_400_with_param() {
    let h = Harness::start().await;
    let (status, body) = h
        .post_raw("/v1/responses", "{\"model\": \"m\", \"input\": ")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = h.post_raw("/v1/responses", "[1, 2]").await;
    assert_eq!(status, 400, "{body}");

    let cases = [
        (json!({"input": "x"}), "model"),
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": 5}), "input"),
        (
            json!({"model": "m", "input": "x", "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "m", "input": "x", "temperature": 3}),
            "temperature",
        ),
        (json!({"model": "m", "input": "x", "top_p": 1.5}), "top_p"),
        (
            json!({"model": "m", "input": "x", "frequency_penalty": 9}),
            "frequency_penalty",
        ),
        (
            json!({"model": "m", "input": "x", "presence_penalty": -9}),
            "presence_penalty",
        ),
        (
            json!({"model": "m", "input": "x", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (
            json!({"model": "m", "input": "x", "top_logprobs": 21}),
            "top_logprobs",
        ),
        (json!({"model": "m", "input": "x", "store": "yes"}), "store"),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
            "text.format.type",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}),
            "text.format.schema",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"name": "f"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}),
            "tools[0].name",
        ),
        (
            json!({"model": "m", "input": "x", "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output"}]}),
            "input",
        ),
        (
            json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
            "input",
        ),
    ];
    let mut catalogue = Catalogue::default();
    for (request, param) in cases {
        let (status, body) = h.post("/v1/responses", &request).await;
        let error = &body["error"];
        let got = error["param"].as_str().unwrap_or_default();
        let ok = status == 400
            && error["type"] == "invalid_request_error"
            && error["message"].is_string()
            && got.starts_with(param);
        catalogue.check(
            &request,
            ok,
            format!("{status} {body}, expected param {param}"),
        );
    }
    catalogue.finish();
    assert_eq!(
        h.backend.chat_requests().len(),
        0,
        "nothing reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_validated() {
    let h = Harness::start().await;
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let sixteen: serde_json::Map<String, Value> =
        (0..16).map(|i| (format!("k{i}"), json!("v"))).collect();
    let mut catalogue = Catalogue::default();
    for (case, metadata) in [
        ("17 pairs", Value::Object(many)),
        ("a 65-character key", json!({"k".repeat(65): "v"})),
        ("a 513-character value", json!({"k": "v".repeat(513)})),
        ("a number value", json!({"k": 5})),
    ] {
        let request = json!({"model": "m", "input": "x", "metadata": metadata});
        let (status, body) = h.post("/v1/responses", &request).await;
        let ok = status == 400 && body["error"]["param"] == "metadata";
        catalogue.check(case, ok, format!("{status} {body}"));
    }
    catalogue.finish();
    let edge = json!({"k".repeat(64): "v".repeat(512)});
    let response = create(&h, json!({"model": "m", "input": "x", "metadata": edge})).await;
    assert_eq!(response["metadata"], edge);
    let response = create(&h, json!({"model": "m", "input": "x", "metadata": sixteen})).await;
    assert_eq!(response["metadata"].as_object().unwrap().len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_and_client_extras_are_accepted() {
    let h = Harness::start().await;
    let response = create(
        &h,
        json!({
            "model": "m",
            "input": "hi",
            "something_new": {"nested": [1, 2, 3]},
            "client_metadata": {"session": "abc"},
            "include": ["reasoning.encrypted_content", "message.output_text.logprobs.nonsense"],
            "reasoning": {"effort": "low", "summary": "detailed", "generate_summary": null},
            "stream_options": {"include_obfuscation": false},
            "prompt_cache_key": "k",
            "parallel_tool_calls": false,
            "background": false,
            "user": null,
            "metadata": null,
        }),
    )
    .await;
    assert_eq!(response["status"], "completed");
    assert_eq!(response["parallel_tool_calls"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_custom_and_namespace_tools() {
    let h = Harness::start().await;
    h.backend.push(
        Reply::new()
            .tool_call("call_1", "get_weather", r#"{"city":"Paris"}"#)
            .tool_call(
                "call_2",
                "apply_patch",
                r#"{"input":"*** Begin Patch\n*** End Patch"}"#,
            )
            .tool_call("call_3", "mcp__github__create_issue", r#"{"title":"bug"}"#),
    );
    let tools = json!([
        {"type": "function", "name": "get_weather", "description": "Weather",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true},
        {"type": "custom", "name": "apply_patch", "description": "Patch files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
        {"type": "namespace", "name": "mcp__github__", "description": "GitHub", "tools": [
            {"type": "function", "name": "create_issue", "parameters": {"type": "object"}},
            {"type": "function", "name": "list_issues"},
        ]},
    ]);
    let response = create(
        &h,
        json!({"model": "m", "input": "do things", "tools": tools}),
    )
    .await;
    let body = sent(&h);
    let offered: Vec<&str> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        [
            "get_weather",
            "apply_patch",
            "mcp__github__create_issue",
            "mcp__github__list_issues"
        ]
    );
    assert!(body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["type"] == "function"));
    assert_eq!(body["tools"][0]["function"]["strict"], true);
    assert_eq!(
        body["tools"][1]["function"]["parameters"]["properties"]["input"]["type"],
        "string"
    );

    assert_eq!(response["tools"], tools, "tools are echoed as sent");
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 3, "{response}");
    let call = &output[0];
    assert_eq!(call["type"], "function_call");
    assert_id(&call["id"], "fc");
    assert_eq!(call["call_id"], "call_1");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(call["status"], "completed");
    assert!(call.get("namespace").is_none_or(Value::is_null));
    let custom = &output[1];
    assert_eq!(custom["type"], "custom_tool_call");
    assert_eq!(custom["call_id"], "call_2");
    assert_eq!(custom["name"], "apply_patch");
    assert_eq!(custom["input"], "*** Begin Patch\n*** End Patch");
    assert!(custom["id"].is_string());
    let member = &output[2];
    assert_eq!(member["type"], "function_call");
    assert_eq!(member["name"], "create_issue");
    assert_eq!(member["namespace"], "mcp__github__");
    assert_eq!(member["arguments"], r#"{"title":"bug"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_tools_are_echoed_not_offered() {
    let h = Harness::start().await;
    let tools = json!([
        {"type": "web_search"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "image_generation"},
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "tool_search"},
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
    ]);
    let response = create(&h, json!({"model": "m", "input": "hi", "tools": tools})).await;
    assert_eq!(response["status"], "completed");
    let mut echoed = tools.clone();
    echoed[5]["description"] = Value::Null;
    echoed[5]["strict"] = Value::Null;
    assert_eq!(response["tools"], echoed);
    let body = sent(&h);
    assert_eq!(body["tools"].as_array().unwrap().len(), 1);
    assert_eq!(body["tools"][0]["function"]["name"], "f");

    // Only hosted tools: nothing is offered at all.
    create(
        &h,
        json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}],
                      "tool_choice": "required"}),
    )
    .await;
    let body = sent(&h);
    assert!(
        body.get("tools").is_none() && body.get("tool_choice").is_none(),
        "{body}"
    );

    for choice in [
        json!({"type": "web_search"}),
        json!({"type": "file_search"}),
    ] {
        let error = error(
            &h,
            json!({"model": "m", "input": "hi", "tools": tools,
                                     "tool_choice": choice}),
            400,
        )
        .await;
        assert_eq!(error["param"], "tool_choice");
        assert!(
            error["message"].as_str().unwrap().contains("hosted"),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_choice_variants() {
    let h = Harness::start().await;
    let tools = json!([
        {"type": "function", "name": "a", "parameters": {"type": "object"}},
        {"type": "function", "name": "b", "parameters": {"type": "object"}},
        {"type": "custom", "name": "c"},
        {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "d"}]},
    ]);
    let request =
        |choice: Value| json!({"model": "m", "input": "hi", "tools": tools, "tool_choice": choice});
    let offered = |body: &Value| -> Vec<String> {
        body["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };

    for mode in ["auto", "none", "required"] {
        let response = create(&h, request(json!(mode))).await;
        assert_eq!(response["tool_choice"], mode);
        let body = sent(&h);
        assert_eq!(body["tool_choice"], mode);
        assert_eq!(offered(&body).len(), 4);
    }

    let named = json!({"type": "function", "name": "b"});
    let response = create(&h, request(named.clone())).await;
    assert_eq!(response["tool_choice"], named);
    assert_eq!(
        sent(&h)["tool_choice"],
        json!({"type": "function", "function": {"name": "b"}})
    );

    create(&h, request(json!({"type": "custom", "name": "c"}))).await;
    assert_eq!(
        sent(&h)["tool_choice"],
        json!({"type": "function", "function": {"name": "c"}})
    );

    create(
        &h,
        request(json!({"type": "function", "name": "d", "namespace": "ns"})),
    )
    .await;
    assert_eq!(
        sent(&h)["tool_choice"],
        json!({"type": "function", "function": {"name": "ns__d"}})
    );

    let allowed = json!({"type": "allowed_tools", "mode": "required", "tools": [
        {"type": "function", "name": "a"}, {"type": "custom", "name": "c"}]});
    let response = create(&h, request(allowed.clone())).await;
    assert_eq!(response["tool_choice"], allowed);
    let body = sent(&h);
    assert_eq!(offered(&body), ["a", "c"]);
    assert_eq!(body["tool_choice"], "required");

    let allowed_auto = json!({"type": "allowed_tools", "mode": "auto", "tools": [
        {"type": "function", "name": "b"}]});
    create(&h, request(allowed_auto)).await;
    let body = sent(&h);
    assert_eq!(offered(&body), ["b"]);
    assert_eq!(body["tool_choice"], "auto");

    // The model cannot be steered to a tool that is not allowed: a call to
    // one comes back as-is but was never offered.
    let error = error(&h, request(json!({"type": "function", "name": "zzz"})), 400).await;
    assert_eq!(error["param"], "tool_choice");

    create(
        &h,
        json!({"model": "m", "input": "hi", "tools": tools, "parallel_tool_calls": false}),
    )
    .await;
    assert_eq!(sent(&h)["parallel_tool_calls"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tool_calls_limits_what_the_model_may_call() {
    let h = Harness::start().await;
    let tools = json!([{"type": "function", "name": "a", "parameters": {"type": "object"}}]);
    let response = create(
        &h,
        json!({"model": "m", "input": "hi", "tools": tools, "max_tool_calls": 0}),
    )
    .await;
    assert_eq!(response["max_tool_calls"], 0);
    assert!(
        sent(&h).get("tools").is_none(),
        "no call allowed, no tool offered"
    );

    h.backend.push(
        Reply::new()
            .tool_call("c1", "a", "{}")
            .tool_call("c2", "a", "{}"),
    );
    let response = create(
        &h,
        json!({"model": "m", "input": "hi", "tools": tools, "max_tool_calls": 1}),
    )
    .await;
    assert_eq!(sent(&h)["parallel_tool_calls"], false);
    let calls: Vec<&Value> = response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call")
        .collect();
    assert_eq!(calls.len(), 1, "{response}");
    assert_eq!(calls[0]["call_id"], "c1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_parallel_tool_calls_are_kept_in_order() {
    let h = Harness::start().await;
    h.backend.push(
        Reply::text("Let me check both.")
            .reasoning("Two cities.")
            .tool_call("call_p", "get_weather", r#"{"city":"Paris"}"#)
            .tool_call("call_l", "get_weather", r#"{"city":"Lyon"}"#)
            .interleave_tool_calls(),
    );
    let tools =
        json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let response = create(
        &h,
        json!({"model": "m", "input": "weather?", "tools": tools}),
    )
    .await;
    let kinds: Vec<&str> = response["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["reasoning", "message", "function_call", "function_call"]
    );
    assert_eq!(response["output"][0]["content"][0]["text"], "Two cities.");
    assert_eq!(response["output"][0]["summary"], json!([]));
    assert_id(&response["output"][0]["id"], "rs");
    assert_eq!(output_text(&response), "Let me check both.");
    assert_eq!(response["output"][2]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(response["output"][3]["arguments"], r#"{"city":"Lyon"}"#);
    assert_eq!(response["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_from_either_backend_field() {
    let h = Harness::start().await;
    h.backend.push(
        Reply::text("42")
            .reasoning("deep thought")
            .reasoning_field("reasoning"),
    );
    let response = create(&h, json!({"model": "m", "input": "q"})).await;
    assert_eq!(response["output"][0]["type"], "reasoning");
    assert_eq!(
        response["output"][0]["content"][0],
        json!({"type": "reasoning_text", "text": "deep thought"})
    );
    assert_eq!(output_text(&response), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_stop_is_incomplete() {
    let h = Harness::start().await;
    h.backend
        .push(Reply::text("cut sh").finish_reason("length"));
    let response = create(
        &h,
        json!({"model": "m", "input": "write a lot", "max_output_tokens": 2}),
    )
    .await;
    assert_eq!(response["status"], "incomplete");
    assert_eq!(
        response["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(output_text(&response), "cut sh");
    assert_eq!(response["output"][0]["status"], "incomplete");
    let id = response["id"].as_str().unwrap();
    let (_, fetched) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(fetched["status"], "incomplete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_are_passed_through() {
    let h = Harness::start().await;
    h.backend.push(Reply::text("one two"));
    let response = create(
        &h,
        json!({"model": "m", "input": "q", "top_logprobs": 2,
               "include": ["message.output_text.logprobs"]}),
    )
    .await;
    let body = sent(&h);
    assert_eq!(body["logprobs"], true);
    assert_eq!(body["top_logprobs"], 2);
    assert_eq!(response["top_logprobs"], 2);
    let logprobs = response["output"][0]["content"][0]["logprobs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(logprobs.len(), 2, "{response}");
    let tokens: String = logprobs
        .iter()
        .map(|l| l["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, "one two");
    assert!(logprobs.iter().all(|l| l["logprob"].is_f64()));
    assert_eq!(logprobs[0]["top_logprobs"].as_array().unwrap().len(), 2);

    // Not asked for: not requested from the backend.
    create(&h, json!({"model": "m", "input": "q"})).await;
    assert!(sent(&h).get("logprobs").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_style_stateless_request() {
    let h = Harness::start().await;
    h.backend
        .push(Reply::new().tool_call("call_9", "mcp__fs__read_file", r#"{"path":"a"}"#));
    let request = json!({
        "model": "gpt-5-codex",
        "instructions": "You are a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "env"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix it"}]},
            {"type": "reasoning", "id": "rs_prev", "summary": [{"type": "summary_text", "text": "plan"}],
             "content": null, "encrypted_content": "gAAAA"},
            {"type": "message", "role": "assistant", "id": "msg_prev", "phase": "commentary",
             "content": [{"type": "output_text", "text": "Looking."}]},
            {"type": "custom_tool_call", "id": "ctc_prev", "status": "completed", "call_id": "call_1",
             "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done!"},
        ],
        "tools": [
            {"type": "function", "name": "shell", "parameters": {"type": "object",
             "properties": {"command": {"type": "array", "items": {"type": "string"}}}}, "strict": false},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark",
             "definition": "start: begin_patch"}},
            {"type": "namespace", "name": "mcp__fs__", "description": "fs", "tools": [
                {"type": "function", "name": "read_file", "parameters": {"type": "object"}}]},
            {"type": "web_search", "external_web_access": false},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "stream": false,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "conv-123",
        "client_metadata": {"x-codex-turn": "1"},
        "text": {"verbosity": "low"},
    });
    let before = h.server.kv_stats();
    let response = create(&h, request).await;
    assert_eq!(response["store"], false);
    let call = &response["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "read_file");
    assert_eq!(call["namespace"], "mcp__fs__");
    let body = sent(&h);
    assert_eq!(body["prompt_cache_key"], "conv-123");
    assert_eq!(body["reasoning_effort"], "medium");
    // The commentary and the patch call it announces are one assistant
    // message; the reasoning before them is not passed on.
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 5, "{body}");
    assert_eq!(messages[3]["content"], "Looking.");
    assert_eq!(messages[3]["tool_calls"][0]["id"], "call_1");
    assert!(messages[3].get("reasoning_content").is_none());
    let delta = h.server.kv_stats().since(&before);
    assert_eq!(
        delta.set + delta.set_many + delta.increment,
        0,
        "store:false writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_references_resolve_from_the_store() {
    let h = Harness::start().await;
    h.backend.push(Reply::text("First answer."));
    let first = create(&h, json!({"model": "m", "input": "first question"})).await;
    let answer_id = first["output"][0]["id"].as_str().unwrap().to_owned();
    let first_id = first["id"].as_str().unwrap();
    let (_, items) = h
        .get(&format!("/v1/responses/{first_id}/input_items"))
        .await;
    let question_id = items["data"][0]["id"].as_str().unwrap().to_owned();

    // Through previous_response_id's history.
    create(
        &h,
        json!({"model": "m", "previous_response_id": first_id,
                      "input": [{"type": "item_reference", "id": question_id}]}),
    )
    .await;
    let messages = sent(&h)["messages"].clone();
    assert_eq!(messages.as_array().unwrap().len(), 3);
    assert_eq!(
        messages[2],
        json!({"role": "user", "content": "first question"})
    );

    // Without previous_response_id: looked up in the store.
    create(
        &h,
        json!({"model": "m", "input": [
        {"type": "item_reference", "id": question_id},
        {"type": "item_reference", "id": answer_id},
        {"role": "user", "content": "and then?"}]}),
    )
    .await;
    assert_eq!(
        sent(&h)["messages"],
        json!([{"role": "user", "content": "first question"},
               {"role": "assistant", "content": "First answer."},
               {"role": "user", "content": "and then?"}])
    );

    let error = error(
        &h,
        json!({"model": "m", "input": [
        {"role": "user", "content": "x"}, {"type": "item_reference", "id": "msg_nope"}]}),
        404,
    )
    .await;
    assert_eq!(error["param"], "input[1].id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_delete() {
    let h = Harness::start().await;
    let created = create(&h, json!({"model": "m", "input": "keep me"})).await;
    let id = created["id"].as_str().unwrap();
    let (status, fetched) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!((status, &fetched), (200, &created));

    let (status, deleted) = h.delete(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted,
        json!({"id": id, "object": "response.deleted", "deleted": true})
    );

    for path in [
        format!("/v1/responses/{id}"),
        format!("/v1/responses/{id}/input_items"),
    ] {
        let (status, body) = h.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, body) = h.delete(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404, "{body}");
    let error = error(
        &h,
        json!({"model": "m", "input": "x", "previous_response_id": id}),
        404,
    )
    .await;
    assert_eq!(error["param"], "previous_response_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_items_pagination() {
    let h = Harness::start().await;
    let input: Vec<Value> = (0..25)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let created = create(&h, json!({"model": "m", "input": input})).await;
    let id = created["id"].as_str().unwrap();
    let h = &h;
    let list = |query: String| {
        let path = format!("/v1/responses/{id}/input_items{query}");
        async move { h.get(&path).await }
    };
    let texts = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["content"][0]["text"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, page) = list(String::new()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["object"], "list");
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        20,
        "default limit is 20"
    );
    assert_eq!(texts(&page)[0], "m24", "default order is desc");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["first_id"], page["data"][0]["id"]);
    assert_eq!(page["last_id"], page["data"][19]["id"]);
    assert!(page["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["type"] == "message"));

    let (_, asc) = list("?order=asc&limit=10".into()).await;
    assert_eq!(
        texts(&asc),
        (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let after = asc["last_id"].as_str().unwrap();
    let (_, next) = list(format!("?order=asc&limit=10&after={after}")).await;
    assert_eq!(texts(&next)[0], "m10");
    assert_eq!(next["has_more"], true);
    let after = next["last_id"].as_str().unwrap();
    let (_, last) = list(format!("?order=asc&limit=10&after={after}")).await;
    assert_eq!(texts(&last).len(), 5);
    assert_eq!(last["has_more"], false);

    let before = asc["data"][5]["id"].as_str().unwrap();
    let (_, earlier) = list(format!("?order=asc&before={before}")).await;
    assert_eq!(texts(&earlier), ["m0", "m1", "m2", "m3", "m4"]);

    let (_, all) = list("?limit=100".into()).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 25);
    assert_eq!(all["has_more"], false);

    for query in ["?limit=0", "?limit=101", "?limit=x", "?order=sideways"] {
        let (status, body) = list(query.into()).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_passed_through() {
    let h = Harness::start().await;
    h.backend.set_models(["llama3.2", "qwen3"]);
    let (status, body) = h.get("/v1/models").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["llama3.2", "qwen3"]);
    assert_eq!(h.backend.last_request().unwrap().path, "/v1/models");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_map_to_the_right_status() {
    let h = Harness::start().await;
    let request = json!({"model": "m", "input": "hi"});
    let nope = json!({"model": "nope", "input": "hi"});
    // (case, backend reply, request, status, code, words the message holds)
    let cases = [
        (
            "400 keeps message and param",
            Reply::error(400, "max_tokens is too large").param("max_tokens"),
            &request,
            400,
            None,
            "max_tokens is too large",
        ),
        (
            "404 model_not_found",
            Reply::error(404, "The model `nope` does not exist").code("model_not_found"),
            &nope,
            404,
            Some("model_not_found"),
            "nope",
        ),
        (
            "Ollama's 404 shape",
            Reply::raw(
                404,
                "application/json",
                r#"{"error":"model \"nope\" not found, try pulling it first"}"#,
            ),
            &nope,
            404,
            Some("model_not_found"),
            "nope",
        ),
        (
            "429",
            Reply::error(429, "slow down"),
            &request,
            429,
            None,
            "slow down",
        ),
        (
            "500 is a 502",
            Reply::error(500, "GPU on fire"),
            &request,
            502,
            Some("backend_error"),
            "GPU on fire",
        ),
        (
            "an HTML 503",
            Reply::raw(503, "text/html", "<html>Bad gateway</html>"),
            &request,
            502,
            Some("backend_error"),
            "503",
        ),
        (
            "cut mid-stream",
            Reply::text("partial answer").cut_after(2),
            &request,
            502,
            Some("backend_error"),
            "backend",
        ),
        (
            "a malformed chunk",
            Reply::text("bad").malformed_after(1),
            &request,
            502,
            Some("backend_error"),
            "malformed",
        ),
        (
            "an in-stream error",
            Reply::text("x").error_after(1, "out of memory"),
            &request,
            502,
            Some("backend_error"),
            "out of memory",
        ),
    ];
    let mut catalogue = Catalogue::default();
    for (case, reply, body, status, code, words) in cases {
        h.backend.push(reply);
        let (got, answer) = h.post("/v1/responses", body).await;
        let error = &answer["error"];
        let ok = got == status
            && code.is_none_or(|code| error["code"] == code)
            && error["message"].as_str().is_some_and(|m| m.contains(words))
            && error.get("param").is_some();
        catalogue.check(case, ok, format!("{got} {answer}"));
    }
    catalogue.finish();

    // Nothing failed is stored: the store holds only the turn that follows.
    assert!(common::stored_values(h.server.store_path()).is_empty());
    let response = create(&h, request).await;
    assert_eq!(response["status"], "completed");
    assert!(!common::stored_values(h.server.store_path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_requests_are_answered_never_with_a_500() {
    let h = Harness::start().await;
    let requests = [
        json!({"model": "m", "input": []}),
        json!({"model": "m", "input": "x", "tools": null, "tool_choice": null, "text": null,
               "reasoning": null, "include": null, "instructions": null, "metadata": null,
               "temperature": null, "top_p": null, "store": null, "stream": null, "user": null,
               "max_output_tokens": null, "previous_response_id": null, "truncation": null}),
        json!({"model": "m", "input": "x", "text": {"format": null}}),
        json!({"model": "m", "input": "x", "text": "plain"}),
        json!({"model": "m", "input": "x", "reasoning": "high"}),
        json!({"model": "m", "input": "x", "reasoning": {"effort": null}}),
        json!({"model": "m", "input": "x", "tool_choice": {"type": "allowed_tools"}}),
        json!({"model": "m", "input": "x", "tool_choice": {}}),
        json!({"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "ns"}]}),
        json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": null}]}),
        json!({"model": "m", "input": "x", "tools": ["web_search"]}),
        json!({"model": "m", "input": [{"type": "message", "role": "user", "content": []}]}),
        json!({"model": "m", "input": [{"role": "user", "content": null}]}),
        json!({"model": "m", "input": [{"type": "item_reference", "id": ""}]}),
        json!({"model": "m", "input": [{}]}),
        json!({"model": "m", "input": [5]}),
        json!({"model": "m", "input": {"role": "user", "content": "x"}}),
        json!({"model": "m", "input": "x", "max_output_tokens": -1}),
        json!({"model": "m", "input": "x", "top_logprobs": -1}),
        json!({"model": "m", "input": "x", "max_tool_calls": -1}),
        json!({"model": 5, "input": "x"}),
        json!({"model": "", "input": "x"}),
        json!({"model": "m", "input": "x", "previous_response_id": ""}),
        json!({"model": "m", "input": "x", "background": true}),
        json!({"model": "m", "input": "x", "include": ["file_search_call.results", 3]}),
        json!({"model": "m", "input": "x", "metadata": []}),
        json!({"model": "m", "input": "x", "service_tier": "flex", "truncation": "auto"}),
        json!({"model": "m", "input": "x", "conversation": "conv_1", "prompt": {"id": "pmpt_1"}}),
    ];
    let mut catalogue = Catalogue::default();
    for request in requests {
        let (status, body) = h.post("/v1/responses", &request).await;
        let ok =
            status == 200 || ((400..500).contains(&status) && body["error"]["message"].is_string());
        catalogue.check(&request, ok, format!("{status} {body}"));
    }
    for path in [
        "/v1/responses/..%2F..",
        "/v1/responses/%00",
        "/v1/responses/x/input_items?after=nope",
        "/v1/responses/x/input_items?limit=99999999999999999999",
    ] {
        let (status, body) = h.get(path).await;
        catalogue.check(
            path,
            (400..500).contains(&status),
            format!("{status} {body}"),
        );
    }
    catalogue.finish();
}
