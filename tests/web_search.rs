//! `web_search` tools run by the server, through the built component: a
//! scripted search provider (tests/python/search_provider.py, on loopback)
//! speaking SearXNG's, Brave's and Tavily's APIs, and the scripted backend
//! told to search and then to answer citing what it found.
//!
//! Covered: the search function offered to the model, `web_search_call`
//! items (with `action.sources` when included), the results fed back to the
//! model, `url_citation` annotations on the answer, allowed domains, the
//! three providers and their keys, provider failures (also streamed), a
//! forced search (the first call only; refused when it cannot run), and
//! the streaming events; the `openai` SDK and the Agents SDK's
//! `WebSearchTool` (tests/python/test_web_search.py).

mod common;

use common::search::SearchProvider;
use common::Harness;
use scripted_backend::Reply;
use serde_json::{json, Value};

async fn harness(provider: &SearchProvider, kind: &str, key: Option<&str>) -> Harness {
    let mut variables = vec![
        ("web_search_provider", kind),
        ("web_search_url", provider.url.as_str()),
    ];
    variables.extend(key.map(|k| ("web_search_api_key", k)));
    Harness::with_variables(&variables).await
}

fn types(response: &Value) -> Vec<&str> {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["type"].as_str().unwrap())
        .collect()
}

/// The model's answer: a markdown link to the first result and the third
/// result's bare URL, after non-ASCII text (indices count characters).
const ANSWER: &str = "Voilà, d’après [the docs](https://docs.example.org/rust-wasm/1) \
                      and https://news.example.com/rust-wasm/3 it works.";

fn search_then_answer(h: &Harness) {
    h.backend.push_all([
        Reply::new()
            .tool_call("call_1", "web_search", r#"{"query": "rust wasm"}"#)
            .usage(10, 3),
        Reply::text(ANSWER).usage(30, 12),
    ]);
}

/// What the model was told of the search, in its second call.
fn told_after_search(h: &Harness) -> String {
    let tool = h.backend.chat_requests()[1]
        .messages()
        .last()
        .unwrap()
        .clone();
    tool["content"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn searches_feeds_the_model_and_cites_its_sources() {
    let provider = SearchProvider::start(None);
    let h = harness(&provider, "searxng", None).await;
    search_then_answer(&h);
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "Does Rust run on wasm?",
                    "tools": [{"type": "web_search"}],
                    "include": ["web_search_call.action.sources"]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(types(&response), ["web_search_call", "message"]);
    let call = &response["output"][0];
    assert!(call["id"].as_str().unwrap().starts_with("ws_"));
    assert_eq!(call["status"], "completed");
    assert_eq!(call["action"]["type"], "search");
    assert_eq!(call["action"]["query"], "rust wasm");
    assert_eq!(
        call["action"]["sources"],
        json!([
            {"type": "url", "url": "https://docs.example.org/rust-wasm/1"},
            {"type": "url", "url": "https://docs.example.org/rust-wasm/2"},
            {"type": "url", "url": "https://news.example.com/rust-wasm/3"},
        ])
    );
    assert_eq!(response["usage"]["input_tokens"], 40);

    // The citations point into the text, in characters.
    let part = &response["output"][1]["content"][0];
    assert_eq!(part["text"], ANSWER);
    let annotations = part["annotations"].as_array().unwrap();
    assert_eq!(annotations.len(), 2, "{annotations:?}");
    let chars: Vec<char> = ANSWER.chars().collect();
    let cited = |a: &Value| -> String {
        let (start, end) = (
            a["start_index"].as_u64().unwrap() as usize,
            a["end_index"].as_u64().unwrap() as usize,
        );
        chars[start..end].iter().collect()
    };
    assert_eq!(annotations[0]["type"], "url_citation");
    assert_eq!(
        annotations[0]["url"],
        "https://docs.example.org/rust-wasm/1"
    );
    assert_eq!(annotations[0]["title"], "rust wasm documentation, part 1");
    assert_eq!(
        cited(&annotations[0]),
        "[the docs](https://docs.example.org/rust-wasm/1)"
    );
    assert_eq!(
        annotations[1]["url"],
        "https://news.example.com/rust-wasm/3"
    );
    assert_eq!(
        cited(&annotations[1]),
        "https://news.example.com/rust-wasm/3"
    );

    // The provider got the query; the model was offered the search and saw
    // the numbered results.
    let searches = provider.requests().await;
    assert_eq!(searches.len(), 1);
    assert_eq!(searches[0]["path"], "/search");
    assert_eq!(searches[0]["params"]["q"], "rust wasm");
    assert_eq!(searches[0]["params"]["format"], "json");
    let chats = h.backend.chat_requests();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0].tools()[0]["function"]["name"], "web_search");
    let messages = chats[1].messages();
    let result = messages.last().unwrap();
    assert_eq!(result["role"], "tool");
    let text = result["content"].as_str().unwrap();
    assert!(
        text.contains("[1] rust wasm documentation, part 1"),
        "{text}"
    );
    assert!(
        text.contains("URL: https://news.example.com/rust-wasm/3"),
        "{text}"
    );

    // A later turn replays the search as a call and what it found.
    let id = response["id"].as_str().unwrap();
    h.backend.push(Reply::text("Yes."));
    let (status, _) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "thanks", "previous_response_id": id}),
        )
        .await;
    assert_eq!(status, 200);
    let replay = h.backend.chat_requests().pop().unwrap();
    let roles: Vec<&str> = replay
        .messages()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant", "user"]);
    let searched = replay.messages()[2]["content"].as_str().unwrap();
    assert!(
        searched.contains("rust wasm") && searched.contains("https://docs.example.org/rust-wasm/1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_shows_the_search_and_the_citations() {
    let provider = SearchProvider::start(None);
    let h = harness(&provider, "searxng", None).await;
    search_then_answer(&h);
    let events: Vec<(String, Value)> = h
        .stream_events(&json!({"model": "m", "input": "wasm?", "stream": true,
                        "tools": [{"type": "web_search_preview"}]}))
        .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..7],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.web_search_call.in_progress",
            "response.web_search_call.searching",
            "response.web_search_call.completed",
            "response.output_item.done",
        ]
    );
    let tail: Vec<&str> = names.iter().rev().take(6).rev().copied().collect();
    assert_eq!(
        tail,
        [
            "response.output_text.annotation.added",
            "response.output_text.annotation.added",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let item_id = events[2].1["item"]["id"].clone();
    for (_, data) in &events[3..6] {
        assert_eq!(
            (&data["item_id"], &data["output_index"]),
            (&item_id, &json!(0))
        );
    }
    let done = &events[6].1["item"];
    assert_eq!(done["status"], "completed");
    assert!(
        done["action"].get("sources").is_none(),
        "not included: {done}"
    );
    let added = &events[names.len() - 6].1;
    assert_eq!(added["annotation_index"], 0);
    assert_eq!(added["output_index"], 1);
    assert_eq!(
        added["annotation"]["url"],
        "https://docs.example.org/rust-wasm/1"
    );
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(
        completed["output"][1]["content"][0]["annotations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_domains_and_each_provider() {
    let key = "key-1";
    let provider = SearchProvider::start(Some(key));
    for kind in ["searxng", "brave", "tavily"] {
        let h = harness(&provider, kind, Some(key)).await;
        h.backend.push_all([
            Reply::new().tool_call("call_1", "web_search", r#"{"query": "edge"}"#),
            Reply::text("See https://docs.example.org/edge/1."),
        ]);
        let (status, response) = h
            .post(
                "/v1/responses",
                &json!({"model": "m", "input": "edge?",
                        "tools": [{"type": "web_search",
                                   "filters": {"allowed_domains": ["docs.example.org"]},
                                   "user_location": {"type": "approximate", "country": "US"}}],
                        "include": ["web_search_call.action.sources"]}),
            )
            .await;
        assert_eq!(status, 200, "{kind}: {response}");
        let sources: Vec<&str> = response["output"][0]["action"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            sources,
            [
                "https://docs.example.org/edge/1",
                "https://docs.example.org/edge/2"
            ],
            "{kind}"
        );
        let annotations = &response["output"][1]["content"][0]["annotations"];
        assert_eq!(annotations.as_array().unwrap().len(), 1, "{kind}");
    }
    let requests = provider.requests().await;
    assert_eq!(requests.len(), 3);
    // SearXNG: site: terms in the query.
    assert!(requests[0]["params"]["q"]
        .as_str()
        .unwrap()
        .contains("site:docs.example.org"));
    // Brave: its key header, the country.
    assert_eq!(requests[1]["path"], "/res/v1/web/search");
    assert_eq!(requests[1]["headers"]["x-subscription-token"], key);
    assert_eq!(requests[1]["params"]["country"], "US");
    // Tavily: a bearer key, the domains in the body.
    assert_eq!(requests[2]["method"], "POST");
    assert_eq!(
        requests[2]["headers"]["authorization"],
        format!("Bearer {key}")
    );
    let body: Value = serde_json::from_str(requests[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["include_domains"], json!(["docs.example.org"]));
    assert_eq!(body["query"], "edge");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_search_reaches_the_model_not_the_client() {
    let provider = SearchProvider::start(Some("right"));
    // A wrong key: the provider answers 401.
    let h = harness(&provider, "brave", Some("wrong")).await;
    h.backend.push_all([
        Reply::new().tool_call("call_1", "web_search", r#"{"query": "edge"}"#),
        Reply::text("The search failed."),
    ]);
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "edge?", "tools": [{"type": "web_search"}]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["status"], "failed");
    let text = told_after_search(&h);
    assert!(
        text.starts_with("Web search failed:") && text.contains("401"),
        "{text}"
    );
    assert!(
        !text.contains("wrong"),
        "the key stays out of the model's view"
    );
    assert!(response["output"][1]["content"][0]["annotations"]
        .as_array()
        .unwrap()
        .is_empty());

    // A malformed tool is a 400 naming it.
    let (status, error) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x",
                    "tools": [{"type": "web_search", "filters": {"allowed_domains": "docs"}}]}),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"]["param"]
        .as_str()
        .unwrap()
        .starts_with("tools[0].filters"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forced_search_is_the_first_call_only() {
    let provider = SearchProvider::start(None);
    let h = harness(&provider, "searxng", None).await;
    let named = json!({"type": "function", "function": {"name": "web_search"}});
    for (choice, first) in [
        (json!({"type": "web_search_preview"}), named),
        (json!("required"), json!("required")),
    ] {
        search_then_answer(&h);
        let (status, response) = h
            .post(
                "/v1/responses",
                &json!({"model": "m", "input": "wasm?", "tool_choice": choice,
                        "tools": [{"type": "web_search_preview"},
                                  {"type": "function", "name": "f", "parameters": {"type": "object"}}]}),
            )
            .await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(types(&response), ["web_search_call", "message"]);
        let chats = h.backend.chat_requests();
        let (call, next) = (&chats[chats.len() - 2], &chats[chats.len() - 1]);
        assert_eq!(call.body["tool_choice"], first, "{choice}");
        assert_eq!(next.body["tool_choice"], "auto", "{choice}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_is_forced_only_when_it_can_run() {
    let provider = SearchProvider::start(None);
    let h = harness(&provider, "searxng", None).await;
    let function = json!({"type": "function", "name": "f", "parameters": {"type": "object"}});
    let cached = json!({"type": "web_search", "external_web_access": false});
    for (tools, choice) in [
        (json!([function]), json!({"type": "web_search_preview"})),
        (json!([function]), json!({"type": "web_search"})),
        (json!([function, cached]), json!({"type": "web_search"})),
    ] {
        let (status, error) = h
            .post(
                "/v1/responses",
                &json!({"model": "m", "input": "x", "tools": tools, "tool_choice": choice}),
            )
            .await;
        assert_eq!(status, 400, "{tools} {choice}: {error}");
        assert_eq!(error["error"]["param"], "tool_choice");
    }
    assert!(h.backend.chat_requests().is_empty());
    // external_web_access false: only cached results, which no provider
    // has; the tool is echoed and not offered.
    h.backend.push(Reply::text("From memory."));
    let (status, response) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "tools": [function, cached]}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["tools"][1], cached);
    let offered: Vec<Value> = h.backend.chat_requests()[0]
        .tools()
        .iter()
        .map(|t| t["function"]["name"].clone())
        .collect();
    assert_eq!(offered, [json!("f")]);
    assert!(provider.requests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_search_in_a_stream() {
    let provider = SearchProvider::start(None);
    let h = harness(&provider, "searxng", None).await;
    h.backend.push_all([
        Reply::new().tool_call("call_1", "web_search", r#"{"query": "edge status:503"}"#),
        Reply::text("The search failed."),
    ]);
    let events: Vec<(String, Value)> = h
        .stream_events(&json!({"model": "m", "input": "edge?", "stream": true,
                        "tools": [{"type": "web_search"}]}))
        .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[2..7],
        [
            "response.output_item.added",
            "response.web_search_call.in_progress",
            "response.web_search_call.searching",
            "response.web_search_call.completed",
            "response.output_item.done",
        ]
    );
    let added = &events[2].1["item"];
    assert_eq!(
        (&added["status"], &added["action"]["type"]),
        (&json!("in_progress"), &json!("search"))
    );
    let done = &events[6].1["item"];
    assert_eq!(done["status"], "failed");
    assert_eq!(done["action"]["query"], "edge status:503");
    assert_eq!(names.last(), Some(&"response.completed"));
    assert!(!names.contains(&"response.output_text.annotation.added"));
    let text = told_after_search(&h);
    assert!(
        text.starts_with("Web search failed:") && text.contains("503"),
        "{text}"
    );
}

/// The official `openai` SDK and the Agents SDK's `WebSearchTool`
/// (tests/python/test_web_search.py) against the component and the
/// scripted provider.
#[tokio::test(flavor = "multi_thread")]
async fn openai_sdk_and_agents_sdk() {
    let provider = SearchProvider::start(None);
    let h = harness(&provider, "searxng", None).await;
    let report = common::pytest(
        &h.server.url(),
        &h.backend.origin(),
        "test_web_search.py",
        &[],
        &[("EDGE_RESPONSES_WEB_SEARCH", "1")],
    )
    .await;
    assert!(report.contains("4 passed"), "{report}");
}
