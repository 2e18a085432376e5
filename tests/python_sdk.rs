//! Runs the official `openai` Python SDK tests (tests/python) against the
//! component served by the host. `scripts/test` installs the SDK into
//! `.venv`; set EDGE_RESPONSES_PYTHON to use another interpreter.

mod common;

use common::Harness;

/// Runs pytest over `target` (relative to tests/python) against `h`.
async fn pytest(h: &Harness, target: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    common::pytest(&h.server.url(), &h.backend.origin(), target, args, env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk() {
    let h = Harness::start().await;
    pytest(&h, "", &[], &[]).await;
    assert!(
        h.backend.chat_requests().len() >= 2,
        "the SDK calls reached the backend"
    );

    // The chain test's last backend request carried every earlier turn.
    let last_turn = h
        .backend
        .chat_requests()
        .into_iter()
        .find(|r| {
            r.messages()
                .last()
                .is_some_and(|m| m["content"] == "chain turn 4")
        })
        .expect("the chain test ran");
    let texts: Vec<&str> = last_turn
        .messages()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    let expected: Vec<String> = (0..5)
        .flat_map(|turn| {
            let text = format!("chain turn {turn}");
            let answer = format!("Hello! You said: {text}");
            [text, answer]
        })
        .take(9)
        .collect();
    assert_eq!(texts, expected);
}

/// The SDK's authentication errors, against a host with `api_keys`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_with_api_keys() {
    let h = Harness::with_variables(&[("api_keys", "sk-sdk-test,sk-sdk-other")]).await;
    let env = [
        ("EDGE_RESPONSES_API_KEY", "sk-sdk-test"),
        ("EDGE_RESPONSES_OTHER_KEY", "sk-sdk-other"),
    ];
    let report = pytest(&h, "test_openai_sdk.py", &["-k", "auth"], &env).await;
    assert!(report.contains("3 passed"), "{report}");
}
