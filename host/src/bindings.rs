//! Host bindings for the `edge:responses/edge-responses` world, generated from
//! the repository's WIT (`wit/`), the same files the component is built from.
//!
//! `wasi:http`, `wasi:io` and `wasi:clocks` are mapped onto the bindings of
//! `wasmtime-wasi-http` and `wasmtime-wasi`, which implement them; this module
//! generates only what this crate implements itself (`wasi:keyvalue` draft2
//! and `wasi:config` draft-2024-09-27) and the typed `responses` export.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "edge:responses/edge-responses",
    imports: { default: async | trappable },
    exports: { default: async },
    require_store_data_send: true,
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
        "wasi:keyvalue/atomics.cas": crate::keyvalue::Cas,
    },
});
