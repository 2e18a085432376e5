//! What real chat-completions servers need, end to end through the built
//! component and the host: request framing, answers that are not event
//! streams, parameter names learned from rejections, reasoning and usage
//! fields, URLs with a query, fixed headers, routing by model, and errors
//! that name the failure without the backend's address or secrets.

mod common;

use common::{output_text, Harness};
use scripted_backend::{Backend, Reply};
use serde_json::{json, Value};

async fn create(h: &Harness, body: Value) -> Value {
    let (status, response) = h.post("/v1/responses", &body).await;
    assert_eq!(status, 200, "{response}");
    response
}

async fn failure(h: &Harness, body: Value, expected: u16) -> Value {
    let (status, response) = h.post("/v1/responses", &body).await;
    assert_eq!(status, expected, "{response}");
    for key in ["message", "type", "param", "code"] {
        assert!(response["error"].get(key).is_some(), "{key}: {response}");
    }
    response["error"].clone()
}

fn hello() -> Value {
    json!({"model": "m", "input": "hello"})
}

/// The OpenAI answer to `max_tokens` on a reasoning model, verbatim.
fn openai_rejects_max_tokens() -> Reply {
    Reply::error(
        400,
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
    )
    .param("max_tokens")
    .code("unsupported_parameter")
}

/// vLLM's answer to a field it does not know (pydantic's `extra_forbidden`).
fn vllm_rejects(field: &str) -> Reply {
    let message = format!(
        "[{{'type': 'extra_forbidden', 'loc': ('body', '{field}'), 'msg': 'Extra inputs are not permitted', 'input': 50}}]"
    );
    let body = json!({"object": "error", "message": message, "type": "BadRequestError",
                      "param": null, "code": 400});
    Reply::raw(400, "application/json", body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_carry_content_length() {
    let h = Harness::start().await;
    h.backend.require_content_length(true);
    let response = create(&h, hello()).await;
    assert_eq!(output_text(&response), "Hello! You said: hello");
    let sent = h.backend.last_request().expect("the backend was called");
    assert!(!sent.chunked, "the body went out chunked");
    assert_eq!(sent.content_length, Some(sent.raw_body.len() as u64));
    assert_eq!(sent.header("accept-encoding"), Some("identity"));
    // Streamed creates send the same way.
    let frames = h
        .stream(&json!({"model": "m", "input": "again", "stream": true}))
        .await;
    assert!(frames
        .iter()
        .any(|(event, _)| event == "response.completed"));
    assert!(!h.backend.last_request().unwrap().chunked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_completion_answers_a_stream_request() {
    let h = Harness::start().await;
    h.backend.push(
        Reply::text("Plain JSON.")
            .reasoning("short")
            .usage(3, 2)
            .json_despite_stream(),
    );
    let response = create(&h, hello()).await;
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["type"], "reasoning");
    assert_eq!(output_text(&response), "Plain JSON.");
    assert_eq!(response["usage"]["total_tokens"], 5);
    let (status, stored) = h
        .get(&format!(
            "/v1/responses/{}",
            response["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!((status, &stored), (200, &response));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_sent_with_status_200_is_an_error() {
    let h = Harness::start().await;
    let body = json!({"error": {"message": "Rate limit reached for requests", "code": 429}});
    h.backend
        .push(Reply::raw(200, "application/json", body.to_string()));
    let error = failure(&h, hello(), 429).await;
    assert_eq!(error["message"], "Rate limit reached for requests");
    h.backend.push(Reply::raw(
        200,
        "application/json",
        r#"{"error": {"message": "upstream model crashed"}}"#,
    ));
    let error = failure(&h, hello(), 502).await;
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("upstream model crashed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_neither_events_nor_json_says_what_arrived() {
    let h = Harness::start().await;
    h.backend.push(Reply::raw(
        200,
        "text/html",
        "<html><body>Gateway says hi</body></html>",
    ));
    let error = failure(&h, hello(), 502).await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("text/html"), "{message}");
    assert!(message.contains("<html><body>Gateway says hi"), "{message}");
    assert!(!message.contains("closed the stream"), "{message}");
    // A stream request gets the same failure as `response.failed`.
    h.backend
        .push(Reply::raw(200, "text/plain", "Service starting up"));
    let frames = h
        .stream(&json!({"model": "m", "input": "x", "stream": true}))
        .await;
    let failed = frames
        .iter()
        .find(|(event, _)| event == "response.failed")
        .expect("response.failed");
    let failed: Value = serde_json::from_str(&failed.1).unwrap();
    let message = failed["response"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("text/plain") && message.contains("Service starting up"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_rejected_by_name_is_sent_as_max_completion_tokens() {
    let h = Harness::start().await;
    h.backend
        .reject_param("max_tokens", openai_rejects_max_tokens());
    let body = json!({"model": "o3", "input": "hi", "max_output_tokens": 50});
    for _ in 0..2 {
        h.backend.clear_requests();
        let response = create(&h, body.clone()).await;
        assert_eq!(response["max_output_tokens"], 50);
        let sent = h.backend.chat_requests();
        let last = &sent.last().expect("a request").body;
        assert_eq!(last["max_completion_tokens"], 50);
        assert!(last.get("max_tokens").is_none(), "{last}");
        // The first request of an instance learns; an instance that lives
        // on (a host that reuses instances) sends the right name at once.
        assert!(sent.len() <= 2, "{} requests", sent.len());
        assert_eq!(sent[0].body["max_tokens"], 50);
    }
    // Requests without a limit send neither name and are never retried.
    h.backend.clear_requests();
    create(&h, hello()).await;
    assert_eq!(h.backend.chat_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_limit_name_is_a_setting_and_falls_back_both_ways() {
    let h = Harness::with_variables(&[("backend_max_tokens_param", "max_completion_tokens")]).await;
    let body = json!({"model": "m", "input": "hi", "max_output_tokens": 7});
    create(&h, body.clone()).await;
    let sent = h.backend.chat_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["max_completion_tokens"], 7);

    // An older server that knows only `max_tokens`, with vLLM's error body.
    h.backend.reject_param(
        "max_completion_tokens",
        vllm_rejects("max_completion_tokens"),
    );
    h.backend.clear_requests();
    create(&h, body).await;
    let sent = h.backend.chat_requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].body["max_tokens"], 7);
    assert!(sent[1].body.get("max_completion_tokens").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_usage_and_effort_are_left_out() {
    let h = Harness::start().await;
    h.backend.reject_param(
        "stream_options",
        Reply::error(
            400,
            "Unrecognized request argument supplied: stream_options",
        ),
    );
    h.backend
        .reject_param("reasoning_effort", vllm_rejects("reasoning_effort"));
    let body = json!({"model": "m", "input": "hi", "stream": true,
                      "reasoning": {"effort": "high"}});
    let frames = h.stream(&body).await;
    assert!(
        frames
            .iter()
            .any(|(event, _)| event == "response.completed"),
        "{frames:?}"
    );
    let sent = h.backend.chat_requests();
    let last = &sent.last().unwrap().body;
    assert!(
        last.get("stream_options").is_none() && last.get("reasoning_effort").is_none(),
        "{last}"
    );
    assert_eq!(sent.len(), 3, "one retry per rejected parameter");
    // A rejection that names nothing we can change is the client's error.
    h.backend.clear_rejections();
    h.backend
        .push(Reply::error(400, "temperature must be at most 2").param("temperature"));
    h.backend.clear_requests();
    let error = failure(
        &h,
        json!({"model": "m", "input": "hi", "temperature": 1.5}),
        400,
    )
    .await;
    assert_eq!(error["param"], "temperature");
    assert_eq!(h.backend.chat_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_from_either_field_and_usage_details() {
    let h = Harness::start().await;
    for field in ["reasoning_content", "reasoning"] {
        for json_answer in [false, true] {
            let mut reply = Reply::text("Done.")
                .reasoning("Thinking hard")
                .reasoning_field(field)
                .usage(20, 10)
                .cached_tokens(12)
                .reasoning_tokens(6);
            if json_answer {
                reply = reply.json_despite_stream();
            }
            h.backend.push(reply);
            let response = create(&h, hello()).await;
            let case = format!("{field}, json {json_answer}");
            assert_eq!(
                response["output"][0]["content"][0]["text"], "Thinking hard",
                "{case}"
            );
            let usage = &response["usage"];
            assert_eq!(usage["input_tokens_details"]["cached_tokens"], 12, "{case}");
            assert_eq!(
                usage["output_tokens_details"]["reasoning_tokens"], 6,
                "{case}"
            );
            assert_eq!(usage["total_tokens"], 30, "{case}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_usage_is_no_failure() {
    let h = Harness::start().await;
    h.backend.push(Reply::text("No counts.").no_usage());
    let response = create(&h, hello()).await;
    assert_eq!(response["status"], "completed");
    assert_eq!(response["usage"], Value::Null);
    h.backend.push(Reply::text("No counts.").no_usage());
    let frames = h
        .stream(&json!({"model": "m", "input": "x", "stream": true}))
        .await;
    let (_, completed) = frames
        .iter()
        .find(|(event, _)| event == "response.completed")
        .expect("response.completed");
    let completed: Value = serde_json::from_str(completed).unwrap();
    assert_eq!(completed["response"]["usage"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_tags_in_a_plain_create() {
    let h = Harness::with_variables(&[("backend_think_tags", "true")]).await;
    h.backend
        .push(Reply::text("<think>Count the letters.</think>\nThree.").json_despite_stream());
    let response = create(&h, hello()).await;
    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "Count the letters."
    );
    assert_eq!(output_text(&response), "Three.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_style_url_with_query_and_api_key_header() {
    let h = Harness::start().await;
    let query = "api-version=2024-10-21";
    let url = format!("{}/openai/deployments/gpt4o?{query}", h.backend.origin());
    let h = h
        .restart_with(&[
            ("backend_url", url.as_str()),
            ("backend_headers", r#"{"api-key": "azure-secret"}"#),
        ])
        .await;
    h.backend.require_query(query);
    h.backend.require_header("api-key", "azure-secret");
    h.backend.set_models(["gpt4o"]);
    let response = create(&h, hello()).await;
    assert_eq!(output_text(&response), "Hello! You said: hello");
    let sent = h.backend.last_request().unwrap();
    assert_eq!(sent.path, "/openai/deployments/gpt4o/chat/completions");
    assert_eq!(sent.query.as_deref(), Some(query));
    assert_eq!(sent.header("api-key"), Some("azure-secret"));
    let (status, models) = h.get("/v1/models").await;
    assert_eq!(status, 200, "{models}");
    assert_eq!(models["data"][0]["id"], "gpt4o");
    assert_eq!(
        h.backend.last_request().unwrap().path,
        "/openai/deployments/gpt4o/models"
    );

    // Without the header the backend refuses, and the client hears why,
    // without the key.
    let h = h
        .restart_with(&[("backend_headers", "api-key: wrong-key")])
        .await;
    let error = failure(&h, hello(), 401).await;
    let text = error.to_string();
    assert!(
        !text.contains("wrong-key") && !text.contains("azure-secret"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_route_to_their_backends() {
    let h = Harness::start().await;
    let cloud = common::start_backend();
    cloud.set_models(["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]);
    h.backend.set_models(["llama3.2", "gpt-4o"]);
    cloud.push(Reply::text("From the cloud."));
    let routes = json!([{"models": ["gpt-*", "o3"], "url": cloud.url(), "api_key": "sk-cloud"}]);
    let h = h.restart_with(&[("backends", &routes.to_string())]).await;

    let response = create(&h, json!({"model": "gpt-4o", "input": "hi"})).await;
    assert_eq!(output_text(&response), "From the cloud.");
    let sent = cloud.last_request().expect("the cloud backend was called");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-cloud"));
    let response = create(&h, json!({"model": "llama3.2", "input": "hi"})).await;
    assert_eq!(output_text(&response), "Hello! You said: hi");
    assert!(h
        .backend
        .last_request()
        .unwrap()
        .header("authorization")
        .is_none());

    let (status, models) = h.get("/v1/models").await;
    assert_eq!(status, 200, "{models}");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o", "gpt-4o-mini", "llama3.2"]);

    // Only routed models: anything else is unknown before a byte is sent.
    let h = h.restart_with(&[("backend_url", "")]).await;
    h.backend.clear_requests();
    cloud.clear_requests();
    let error = failure(&h, json!({"model": "llama3.2", "input": "hi"}), 404).await;
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    assert_eq!(h.backend.request_count() + cloud.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_failure_not_the_backend() {
    // Nothing listens on port 1, and no test process can be handed it.
    let closed = 1;
    let url = format!("http://127.0.0.1:{closed}/secret-path/v1?token=hunter2");
    let h = Harness::with_variables(&[
        ("backend_url", url.as_str()),
        ("backend_api_key", "sk-very-secret"),
        ("backend_headers", "X-Gateway-Key: gw-secret"),
    ])
    .await;
    for stream in [false, true] {
        let body = json!({"model": "m", "input": "hi", "stream": stream});
        let text = if stream {
            let frames = h.stream(&body).await;
            let failed = frames
                .iter()
                .find(|(e, _)| e == "response.failed")
                .expect("failed");
            failed.1.clone()
        } else {
            failure(&h, body, 502).await.to_string()
        };
        assert!(text.contains("refused"), "{text}");
        for secret in [
            ":1/",
            "127.0.0.1",
            "secret-path",
            "hunter2",
            "sk-very-secret",
            "gw-secret",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    let (status, models) = h.get("/v1/models").await;
    assert_eq!(status, 502);
    assert!(!models.to_string().contains("secret"), "{models}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_function_tools_have_every_key() {
    let h = Harness::start().await;
    let tools = json!([{"type": "function", "name": "f"},
                       {"type": "function", "name": "g", "strict": true,
                        "description": "G.", "parameters": {"type": "object"}}]);
    let response = create(&h, json!({"model": "m", "input": "hi", "tools": tools})).await;
    assert_eq!(
        response["tools"],
        json!([{"type": "function", "name": "f", "description": null, "parameters": null,
                "strict": null},
               {"type": "function", "name": "g", "strict": true, "description": "G.",
                "parameters": {"type": "object"}}])
    );
}

/// What one real server does that matters to us, as the README's backend
/// table lists it.
struct Profile {
    name: &'static str,
    /// Path and query of its base URL after the origin.
    base: &'static str,
    settings: &'static [(&'static str, &'static str)],
    /// Its answer to a request, before the test adds text.
    reply: fn() -> Reply,
    /// Rules the backend enforces.
    quirks: fn(&Backend),
}

const PROFILES: &[Profile] = &[
    Profile {
        name: "vLLM",
        base: "/v1",
        settings: &[],
        reply: || {
            Reply::text("Paris.")
                .reasoning("Capital of France")
                .reasoning_field("reasoning")
        },
        quirks: |_| {},
    },
    Profile {
        name: "SGLang",
        base: "/v1",
        settings: &[],
        reply: || Reply::text("Paris.").reasoning("Capital of France"),
        quirks: |_| {},
    },
    Profile {
        name: "llama.cpp server",
        base: "/v1",
        settings: &[("backend_think_tags", "true")],
        reply: || Reply::chunks(["<think>", "Capital of", " France</think>", "Paris."]),
        quirks: |_| {},
    },
    Profile {
        name: "Ollama",
        base: "/v1",
        settings: &[],
        reply: || {
            Reply::text("Paris.")
                .reasoning("Capital of France")
                .reasoning_field("reasoning")
                .finish_on_last_delta()
        },
        quirks: |b| {
            b.reject_param(
                "max_completion_tokens",
                vllm_rejects("max_completion_tokens"),
            )
        },
    },
    Profile {
        name: "LM Studio",
        base: "/v1",
        settings: &[],
        reply: || {
            Reply::text("Paris.")
                .reasoning("Capital of France")
                .no_usage()
        },
        quirks: |_| {},
    },
    Profile {
        name: "OpenAI",
        base: "/v1",
        settings: &[("backend_api_key", "sk-openai")],
        reply: || Reply::text("Paris.").reasoning_tokens(4),
        quirks: |b| {
            b.require_header("authorization", "Bearer sk-openai");
            b.reject_param("max_tokens", openai_rejects_max_tokens());
        },
    },
    Profile {
        name: "Azure OpenAI",
        base: "/openai/deployments/gpt-4o?api-version=2024-10-21",
        settings: &[("backend_headers", "api-key: azure-key")],
        reply: || Reply::text("Paris."),
        quirks: |b| {
            b.require_query("api-version=2024-10-21");
            b.require_header("api-key", "azure-key");
            b.reject_param("max_tokens", openai_rejects_max_tokens());
        },
    },
    Profile {
        name: "OpenRouter",
        base: "/api/v1",
        settings: &[
            ("backend_api_key", "sk-or"),
            (
                "backend_headers",
                r#"{"HTTP-Referer": "https://example.com", "X-Title": "demo"}"#,
            ),
        ],
        reply: || {
            Reply::text("Paris.")
                .reasoning("Capital of France")
                .reasoning_field("reasoning")
        },
        quirks: |b| {
            b.require_header("authorization", "Bearer sk-or");
            b.require_header("http-referer", "https://example.com");
        },
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_backend_works() {
    for profile in PROFILES {
        let h = Harness::start().await;
        let url = format!("{}{}", h.backend.origin(), profile.base);
        let mut settings = vec![("backend_url", url.as_str())];
        settings.extend(profile.settings.iter().copied());
        let h = h.restart_with(&settings).await;
        (profile.quirks)(&h.backend);
        h.backend.set_default((profile.reply)());
        let name = profile.name;
        let first = create(
            &h,
            json!({"model": "m", "input": "Capital of France?",
                                      "max_output_tokens": 64}),
        )
        .await;
        assert_eq!(output_text(&first), "Paris.", "{name}");
        let reasoned = first["output"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["type"] == "reasoning");
        let expects_reasoning = !matches!(name, "OpenAI" | "Azure OpenAI");
        assert_eq!(reasoned, expects_reasoning, "{name}: {first}");
        let body = json!({"model": "m", "input": "And Italy?", "stream": true,
                          "previous_response_id": first["id"], "max_output_tokens": 64});
        let frames = h.stream(&body).await;
        let (_, completed) = frames
            .iter()
            .find(|(event, _)| event == "response.completed")
            .unwrap_or_else(|| panic!("{name}: {frames:?}"));
        let completed: Value = serde_json::from_str(completed).unwrap();
        assert_eq!(output_text(&completed["response"]), "Paris.", "{name}");
        let last = h.backend.last_request().unwrap();
        assert_eq!(
            last.messages().len(),
            3,
            "{name}: the first turn is replayed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_falls_back_to_json_object_with_the_schema_in_the_prompt() {
    let h = Harness::start().await;
    h.backend.reject_param(
        "response_format.json_schema",
        Reply::error(400, "response_format of type json_schema is not supported")
            .param("response_format"),
    );
    h.backend.push(Reply::text(r#"{"name":"Ada"}"#));
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}});
    let response = create(
        &h,
        json!({"model": "m", "input": "Who?", "instructions": "Be brief.",
               "text": {"format": {"type": "json_schema", "name": "person", "schema": schema}}}),
    )
    .await;
    assert_eq!(output_text(&response), r#"{"name":"Ada"}"#);
    // The response still says what the client asked for.
    assert_eq!(response["text"]["format"]["type"], "json_schema");
    let sent = h.backend.chat_requests();
    assert_eq!(sent.len(), 2);
    let retried = &sent[1].body;
    assert_eq!(retried["response_format"], json!({"type": "json_object"}));
    let system = retried["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("Be brief."), "{system}");
    assert!(system.contains(&schema.to_string()), "{system}");
}
