//! What the host's integration tests share.

use std::path::PathBuf;

/// The built component: `EDGE_RESPONSES_COMPONENT`, else the workspace's
/// build of it (`cargo build -p edge-responses --target wasm32-wasip2
/// --profile component`).
pub fn component() -> PathBuf {
    let path = std::env::var_os("EDGE_RESPONSES_COMPONENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(edge_responses_host::DEFAULT_COMPONENT)
        });
    assert!(
        path.is_file(),
        "no component at {}: build it with `cargo build -p edge-responses --target wasm32-wasip2 --profile component`",
        path.display()
    );
    path
}
