//! Runs the official `openai` Python SDK tests (tests/python) against the
//! component served by the host. `scripts/test` installs the SDK into
//! `.venv`; set EDGE_RESPONSES_PYTHON to use another interpreter.

mod common;

use std::path::Path;

use common::Harness;

fn python() -> String {
    if let Ok(python) = std::env::var("EDGE_RESPONSES_PYTHON") {
        return python;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test, which creates it",
        venv.display()
    );
    venv.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk() {
    let h = Harness::start().await;
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let output = tokio::process::Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .env("EDGE_RESPONSES_BASE_URL", h.server.url())
        .output()
        .await
        .expect("python runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "openai SDK tests failed:\n{report}");
    assert!(h.backend.chat_requests().len() >= 2, "the SDK calls reached the backend");
}
