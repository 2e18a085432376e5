//! The component's world: exactly the standard WASI imports Spin and plain
//! wasmtime hosts provide, and the two exports. Nothing Spin-only.

mod common;

use std::collections::BTreeSet;

use wit_component::DecodedWasm;
use wit_parser::{Resolve, WorldId, WorldItem, WorldKey};

fn names<'a>(
    resolve: &Resolve,
    items: impl IntoIterator<Item = (&'a WorldKey, &'a WorldItem)>,
) -> BTreeSet<String> {
    items
        .into_iter()
        .filter_map(|(key, item)| match (key, item) {
            (WorldKey::Interface(id), WorldItem::Interface { .. }) => resolve.id_of(*id),
            (WorldKey::Name(name), _) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn decode() -> (Resolve, WorldId) {
    let bytes = std::fs::read(common::component()).expect("component is readable");
    match wit_component::decode(&bytes).expect("a valid component") {
        DecodedWasm::Component(resolve, world) => (resolve, world),
        DecodedWasm::WitPackage(..) => panic!("expected a component, got a WIT package"),
    }
}

/// Every import, with its full version. spin-sdk 5.2 binds outbound HTTP
/// at `wasi:http@0.2.6` and the incoming handler at `@0.2.0`; the component
/// encoder merges each 0.2.x interface into its newest version, so every
/// WASI 0.2 import is `@0.2.6` while the export stays `@0.2.0`. Wasmtime, and
/// so Spin, links 0.2.x imports by their `0.2` semver track.
const IMPORTS: &[&str] = &[
    "wasi:cli/environment@0.2.6",
    "wasi:cli/exit@0.2.6",
    "wasi:cli/stderr@0.2.6",
    "wasi:cli/stdin@0.2.6",
    "wasi:cli/stdout@0.2.6",
    "wasi:cli/terminal-input@0.2.6",
    "wasi:cli/terminal-output@0.2.6",
    "wasi:cli/terminal-stderr@0.2.6",
    "wasi:cli/terminal-stdin@0.2.6",
    "wasi:cli/terminal-stdout@0.2.6",
    "wasi:clocks/monotonic-clock@0.2.6",
    "wasi:clocks/wall-clock@0.2.6",
    "wasi:config/store@0.2.0-draft-2024-09-27",
    "wasi:http/outgoing-handler@0.2.6",
    "wasi:http/types@0.2.6",
    "wasi:io/error@0.2.6",
    "wasi:io/poll@0.2.6",
    "wasi:io/streams@0.2.6",
    "wasi:keyvalue/atomics@0.2.0-draft2",
    "wasi:keyvalue/batch@0.2.0-draft2",
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:random/insecure-seed@0.2.6",
    "wasi:random/random@0.2.6",
];

#[test]
fn imports_are_standard_wasi_only() {
    let (resolve, world) = decode();
    let imports = names(&resolve, &resolve.worlds[world].imports);
    let expected: BTreeSet<String> = IMPORTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        imports, expected,
        "the component's imports changed: every host it runs on must provide them"
    );
    for name in &imports {
        assert!(!name.starts_with("fermyon:") && !name.starts_with("spin:"));
    }
}

#[test]
fn exports_the_http_handler_and_the_typed_interface() {
    let (resolve, world) = decode();
    let exports = names(&resolve, &resolve.worlds[world].exports);
    let expected: BTreeSet<String> = [
        "wasi:http/incoming-handler@0.2.0",
        "edge:responses/responses@0.1.0",
    ]
    .map(String::from)
    .into();
    assert_eq!(exports, expected);
}

#[test]
fn typed_interface_matches_the_wit_source() {
    let (resolve, world) = decode();
    let exported = resolve.worlds[world]
        .exports
        .iter()
        .find_map(|(key, _)| match key {
            WorldKey::Interface(id)
                if resolve.id_of(*id).as_deref() == Some("edge:responses/responses@0.1.0") =>
            {
                Some(*id)
            }
            _ => None,
        })
        .expect("responses is exported");
    let signature = |resolve: &Resolve, id| {
        let mut functions: Vec<String> = resolve.interfaces[id]
            .functions
            .values()
            .map(|f| {
                let params: Vec<&str> = f.params.iter().map(|(name, _)| name.as_str()).collect();
                format!("{}({})", f.name, params.join(", "))
            })
            .collect();
        functions.sort();
        functions
    };
    let built = signature(&resolve, exported);
    assert_eq!(
        built,
        [
            "[method]event-stream.next(self)",
            "[method]event-stream.remembered(self)",
            "authenticate(api-key)",
            "create(api-key, request)",
            "create-stream(api-key, request-id, request, remembered)",
            "delete(api-key, id)",
            "get(api-key, id)",
            "list-input-items(api-key, id, query)",
        ]
    );
    let mut source = Resolve::default();
    source
        .push_path(concat!(env!("CARGO_MANIFEST_DIR"), "/wit"))
        .expect("wit/ parses");
    let package = source
        .package_names
        .iter()
        .find(|(name, _)| name.namespace == "edge" && name.name == "responses")
        .map(|(_, id)| *id)
        .expect("edge:responses package");
    let iface = source.packages[package].interfaces["responses"];
    assert_eq!(
        signature(&source, iface),
        built,
        "wit/ and the built component differ"
    );
}
