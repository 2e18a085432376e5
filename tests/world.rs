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

/// Drops the patch version of `wasi:...@0.2.x` names.
fn unpatched(name: &str) -> String {
    match name.rsplit_once("@0.2.") {
        Some((base, patch)) if patch.chars().all(|c| c.is_ascii_digit()) => format!("{base}@0.2"),
        _ => name.to_owned(),
    }
}

#[test]
fn imports_are_standard_wasi_only() {
    let (resolve, world) = decode();
    let imports: BTreeSet<String> = names(&resolve, &resolve.worlds[world].imports)
        .iter()
        .map(|n| unpatched(n))
        .collect();
    let required = [
        "wasi:http/outgoing-handler@0.2",
        "wasi:http/types@0.2",
        "wasi:keyvalue/store@0.2.0-draft2",
        "wasi:keyvalue/batch@0.2.0-draft2",
        "wasi:keyvalue/atomics@0.2.0-draft2",
        "wasi:config/store@0.2.0-draft-2024-09-27",
    ];
    for name in required {
        assert!(
            imports.contains(name),
            "missing import {name}; imports: {imports:#?}"
        );
    }
    let basics = ["wasi:cli/", "wasi:io/", "wasi:random/", "wasi:clocks/"];
    for name in &imports {
        let allowed = required.contains(&name.as_str())
            || basics.iter().any(|prefix| name.starts_with(prefix));
        assert!(allowed, "unexpected import {name}");
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
            "create(api-key, request)",
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
