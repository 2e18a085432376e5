//! Compaction natively: the request the backend gets, the answer's shape,
//! the checks on compaction items, and their replay in a later create; on
//! [`MemoryKv`] and a backend that answers from a queue.

use std::rc::Rc;

use serde_json::{json, Value};

use super::*;
use crate::backend::replay::{self, ReplayBackend};
use crate::store::MemoryKv;

fn completion(text: &str) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49,
                  "prompt_tokens_details": {"cached_tokens": 8}}
    })
    .to_string()
}

struct Fixture {
    service: Service<MemoryKv, Rc<ReplayBackend>>,
    backend: Rc<ReplayBackend>,
}

fn fixture(pairs: &[(&str, &str)]) -> Fixture {
    let (service, backend, _clock) = replay::service(pairs, 1_800_000_000);
    Fixture { service, backend }
}

impl Fixture {
    fn answer(&self, text: &str) {
        self.backend
            .push_body(200, "application/json", completion(text));
    }

    fn compact(&self, key: Option<&str>, body: Value) -> Result<Value, ApiError> {
        let bytes = body.to_string().into_bytes();
        futures::executor::block_on(compact(&self.service, key, &bytes))
            .map(|c| serde_json::to_value(c).unwrap())
    }

    fn create(&self, key: Option<&str>, body: Value) -> Result<Value, ApiError> {
        let bytes = body.to_string().into_bytes();
        futures::executor::block_on(self.service.create(key, &bytes))
            .map(|r| serde_json::to_value(r).unwrap())
    }

    fn last_chat(&self) -> Value {
        self.backend.chats().last().cloned().unwrap()
    }
}

fn contents(chat: &Value) -> Vec<String> {
    chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn compacts_a_chain_into_its_latest_user_messages_and_a_summary() {
    let f = fixture(&[]);
    let mut previous = Value::Null;
    for turn in 1..=3 {
        f.answer(&format!("answer {turn}"));
        let mut body = json!({"model": "m", "input": format!("question {turn}")});
        if !previous.is_null() {
            body["previous_response_id"] = previous.clone();
        }
        previous = f.create(None, body).unwrap()["id"].clone();
    }
    f.answer("  Goal: answer three questions.  ");
    let compacted = f
        .compact(
            None,
            json!({"model": "m", "previous_response_id": previous, "instructions": "Be terse.",
                   "prompt_cache_key": "k1"}),
        )
        .unwrap();

    let chat = f.last_chat();
    assert_eq!(chat["stream"], false);
    assert_eq!(chat["model"], "m");
    assert_eq!(chat["prompt_cache_key"], "k1");
    assert!(chat.get("tools").is_none());
    let sent = contents(&chat);
    assert_eq!(
        sent[..7],
        [
            "system: Be terse.",
            "user: question 1",
            "assistant: answer 1",
            "user: question 2",
            "assistant: answer 2",
            "user: question 3",
            "assistant: answer 3",
        ]
    );
    assert_eq!(sent[7], format!("user: {}", prompt::COMPACTION_PROMPT));
    assert_eq!(sent.len(), 8);

    assert_eq!(compacted["object"], "response.compaction");
    assert!(compacted["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(compacted["created_at"], 1_800_000_000);
    assert_eq!(
        compacted["usage"],
        json!({"input_tokens": 40, "input_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 0},
               "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 49})
    );
    let output = compacted["output"].as_array().unwrap();
    assert_eq!(output.len(), KEPT_USER_MESSAGES + 1);
    for (item, text) in output.iter().zip(["question 2", "question 3"]) {
        assert_eq!(item["type"], "message");
        assert_eq!(item["role"], "user");
        assert_eq!(item["status"], "completed");
        assert!(item["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(
            item["content"],
            json!([{"type": "input_text", "text": text}])
        );
    }
    let last = &output[2];
    assert_eq!(last["type"], "compaction");
    assert!(last["id"].as_str().unwrap().starts_with("cmp_"));
    let blob = last["encrypted_content"].as_str().unwrap();
    let sealed = Seal::new(None, crate::auth::OPEN_TENANT)
        .open(blob)
        .unwrap();
    assert_eq!(sealed.summary, "Goal: answer three questions.");
    assert_eq!(sealed.model, "m");
    let keys: Vec<&String> = last.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{last}");

    // The output as the input of a new chain: the backend gets the kept
    // messages, the summary (not the blob), and the new message.
    let mut input = output.clone();
    input.push(json!({"role": "user", "content": "question 4"}));
    f.answer("answer 4");
    let created = f
        .create(None, json!({"model": "m", "input": input}))
        .unwrap();
    let sent = contents(&f.last_chat());
    assert_eq!(
        sent,
        [
            "user: question 2".to_owned(),
            "user: question 3".to_owned(),
            format!(
                "user: {}\n\nGoal: answer three questions.",
                prompt::REPLAY_HEADER
            ),
            "user: question 4".to_owned(),
        ]
    );
    // Stored and continued: the summary is replayed from the stored item.
    f.answer("answer 5");
    f.create(
        None,
        json!({"model": "m", "input": "question 5", "previous_response_id": created["id"]}),
    )
    .unwrap();
    let sent = contents(&f.last_chat());
    assert!(
        sent[2].ends_with("Goal: answer three questions."),
        "{sent:?}"
    );
    assert_eq!(sent.len(), 6);
}

#[test]
fn input_alone_and_a_compaction_in_it() {
    let f = fixture(&[]);
    f.answer("first summary");
    let first = f
        .compact(
            None,
            json!({"model": "m", "input": [
                {"role": "user", "content": "We launch on Tuesday."},
                {"role": "assistant", "content": "Understood."}]}),
        )
        .unwrap();
    let output = first["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["content"][0]["text"], "We launch on Tuesday.");

    // Compacting again: the earlier summary is part of the history.
    let mut input = output.clone();
    input.push(json!({"role": "user", "content": "And support?"}));
    f.answer("second summary");
    let second = f
        .compact(None, json!({"model": "m", "input": input}))
        .unwrap();
    let sent = contents(&f.last_chat());
    assert!(sent[1].ends_with("first summary"), "{sent:?}");
    let output = second["output"].as_array().unwrap();
    let texts: Vec<&Value> = output.iter().map(|i| &i["content"][0]["text"]).collect();
    assert_eq!(
        texts[..2],
        [&json!("We launch on Tuesday."), &json!("And support?")]
    );
    assert_eq!(output[2]["type"], "compaction");
}

#[test]
fn bad_compaction_items_are_400_before_the_backend() {
    let f = fixture(&[("api_keys", "a:k1,b:k2"), ("tenant_secret", "s3cret")]);
    f.answer("summary of a");
    let compacted = f
        .compact(Some("k1"), json!({"model": "m", "input": "hello"}))
        .unwrap();
    let item = compacted["output"][1].clone();
    let blob = item["encrypted_content"].as_str().unwrap().to_owned();
    let sent_before = f.backend.sent.borrow().len();

    let mut tampered = item.clone();
    let mut bytes = blob.clone().into_bytes();
    let i = bytes.len() / 3;
    bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
    tampered["encrypted_content"] = json!(String::from_utf8(bytes).unwrap());
    let foreign = json!({"type": "compaction", "encrypted_content": "gAAAAABpM0Yj-abc="});
    let missing = json!({"type": "compaction", "id": "cmp_1"});
    let cases = [
        (Some("k1"), tampered, "invalid_encrypted_content"),
        (Some("k2"), item.clone(), "invalid_encrypted_content"),
        (Some("k1"), foreign, "invalid_encrypted_content"),
        (Some("k1"), missing, "missing_required_parameter"),
    ];
    for (key, bad, code) in cases {
        let input =
            json!([{"role": "user", "content": "x"}, bad, {"role": "user", "content": "y"}]);
        for error in [
            f.compact(key, json!({"model": "m", "input": input}))
                .unwrap_err(),
            check_input(
                &f.service.settings,
                &f.service.tenant(key).unwrap(),
                CreateRequest::parse(json!({"model": "m", "input": input}).to_string().as_bytes())
                    .unwrap()
                    .input
                    .as_ref(),
            )
            .unwrap_err(),
        ] {
            assert_eq!(error.status, 400, "{}", error.message);
            assert_eq!(error.param.as_deref(), Some("input[1].encrypted_content"));
            assert_eq!(error.code.as_deref(), Some(code), "{}", error.message);
        }
    }
    assert_eq!(
        f.backend.sent.borrow().len(),
        sent_before,
        "nothing reached the backend"
    );

    // The tenant's own blob passes, and a secret change retires it.
    let input = json!([item, {"role": "user", "content": "y"}]);
    let own =
        CreateRequest::parse(json!({"model": "m", "input": input}).to_string().as_bytes()).unwrap();
    let tenant = f.service.tenant(Some("k1")).unwrap();
    assert!(check_input(&f.service.settings, &tenant, own.input.as_ref()).is_ok());
    let rotated = Settings {
        tenant_secret: Some("another".into()),
        ..f.service.settings.clone()
    };
    assert!(check_input(&rotated, &tenant, own.input.as_ref()).is_err());
}

#[test]
fn request_errors() {
    let f = fixture(&[]);
    let missing_model = f.compact(None, json!({"input": "x"})).unwrap_err();
    assert_eq!(missing_model.status, 400);
    assert_eq!(missing_model.param.as_deref(), Some("model"));
    for nothing in [
        json!({"model": "m"}),
        json!({"model": "m", "input": []}),
        json!({"model": "m", "input": " "}),
    ] {
        let error = f.compact(None, nothing.clone()).unwrap_err();
        assert_eq!(error.status, 400, "{nothing}");
        assert_eq!(error.param.as_deref(), Some("input"), "{nothing}");
    }
    let unknown = f
        .compact(
            None,
            json!({"model": "m", "input": "x", "previous_response_id": "resp_nope"}),
        )
        .unwrap_err();
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.param.as_deref(), Some("previous_response_id"));
    assert!(f.backend.sent.borrow().is_empty());

    // The backend's refusal is the client's error, as for a create; an
    // empty answer is the backend's.
    f.backend.push_body(
        400,
        "application/json",
        json!({"error": {"message": "context too long", "type": "invalid_request_error"}})
            .to_string(),
    );
    let refused = f
        .compact(None, json!({"model": "m", "input": "x"}))
        .unwrap_err();
    assert_eq!(refused.status, 400);
    assert!(
        refused.message.contains("context too long"),
        "{}",
        refused.message
    );
    f.answer("");
    assert_eq!(
        f.compact(None, json!({"model": "m", "input": "x"}))
            .unwrap_err()
            .status,
        502
    );
}

#[test]
fn a_streamed_answer_is_read_too() {
    let f = fixture(&[("backend_think_tags", "true")]);
    let frames = [
        json!({"choices": [{"index": 0, "delta": {"content": "<think>hm</think>The "}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "summary."}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}),
    ];
    let body: String = frames.iter().map(|f| format!("data: {f}\n\n")).collect();
    f.backend
        .push_body(200, "text/event-stream", body + "data: [DONE]\n\n");
    let compacted = f
        .compact(None, json!({"model": "m", "input": "x"}))
        .unwrap();
    let blob = compacted["output"][1]["encrypted_content"]
        .as_str()
        .unwrap();
    assert_eq!(seal::summary_unchecked(blob).unwrap(), "The summary.");
    assert_eq!(compacted["usage"]["total_tokens"], 8);
}
