//! `spin.toml` against what Spin accepts and what the component reads.

use toml::Value;

fn manifest() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml"))
        .expect("spin.toml is readable");
    text.parse().expect("spin.toml is valid TOML")
}

#[test]
fn component_variables_cover_every_configuration_key() {
    let manifest = manifest();
    let component = &manifest["component"]["edge-responses"];
    let variables = component["variables"]
        .as_table()
        .expect("component variables");
    let app_variables = manifest["variables"]
        .as_table()
        .expect("application variables");
    for key in edge_responses::config::KEYS {
        let template = variables
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("spin.toml does not pass `{key}` to the component"));
        // Every template names only declared application variables.
        for name in template
            .split("{{")
            .skip(1)
            .filter_map(|t| t.split("}}").next())
        {
            assert!(
                app_variables.contains_key(name.trim()),
                "`{name}` is not declared"
            );
        }
    }
    for secret in [
        "backend_api_key",
        "api_keys",
        "tenant_secret",
        "admin_key",
        "backend_headers",
        "backends",
        "web_search_api_key",
    ] {
        assert_eq!(
            app_variables[secret]["secret"].as_bool(),
            Some(true),
            "{secret}"
        );
    }
}

#[test]
fn outbound_hosts_are_origins_and_the_store_is_declared() {
    let manifest = manifest();
    let component = &manifest["component"]["edge-responses"];
    let hosts = component["allowed_outbound_hosts"].as_array().unwrap();
    assert_eq!(
        hosts,
        &[
            Value::from("{{ backend_origin }}"),
            Value::from("{{ mcp_servers }}"),
            Value::from("{{ web_search_origin }}")
        ]
    );
    // The MCP servers Spin lets the component reach are the ones it allows.
    assert_eq!(
        component["variables"]["mcp_allowed_servers"].as_str(),
        Some("{{ mcp_servers }}")
    );
    for variable in ["backend_origin", "mcp_servers", "web_search_origin"] {
        let origin = manifest["variables"][variable]["default"].as_str().unwrap();
        let (_, rest) = origin.split_once("://").expect("a scheme");
        assert!(
            !rest.is_empty() && !rest.contains('/'),
            "Spin rejects outbound hosts that are empty or have a path: {origin}"
        );
    }
    assert_eq!(
        component["key_value_stores"].as_array().unwrap(),
        &[Value::from("default")]
    );
    assert_eq!(
        manifest["trigger"]["http"][0]["route"].as_str(),
        Some("/v1/...")
    );
    assert_eq!(
        component["source"].as_str(),
        Some("target/wasm32-wasip2/component/edge_responses.wasm")
    );
}
