//! Link settings for the component.
//!
//! The module starts with 4 MiB of linear memory instead of the 1 MiB stack
//! plus data the linker picks: a request then rarely grows its memory, and
//! hosts with pooled, copy-on-write instance memory (wasmtime's pooling
//! allocator, so Spin and this repository's host) skip the page-protection
//! changes a grow costs on every instantiation. Pages the guest never
//! touches cost nothing.

/// Initial linear memory, a multiple of the 64 KiB wasm page.
const INITIAL_MEMORY: u64 = 4 << 20;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--initial-memory={INITIAL_MEMORY}");
    }
}
