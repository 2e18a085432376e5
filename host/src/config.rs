//! `wasi:config/store` (0.2.0-draft-2024-09-27) for guests, and where its
//! values come from.
//!
//! Values are a fixed map built at startup: `EDGE_RESPONSES_<NAME>`
//! environment variables, overridden by command-line flags. Guests read them
//! with `get` / `get-all`; unknown keys are `none`.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::wasi::config::store;

/// Prefix of environment variables that become config values.
pub const ENV_PREFIX: &str = "EDGE_RESPONSES_";

/// `EDGE_RESPONSES_*` variables that configure the host itself rather than
/// the component, so they are not passed on as config values.
const HOST_SETTINGS: &[&str] = &[
    "LISTEN",
    "COMPONENT",
    "STORE",
    "STATE_DIR",
    "MAX_MEMORY",
    "QUEUE_TIMEOUT",
    "METRICS_LISTEN",
    "LOG_FORMAT",
    "WEBSOCKET_MAX_AGE",
    "SHUTDOWN_TIMEOUT",
];

/// Config values from environment variables: `EDGE_RESPONSES_BACKEND_URL=x`
/// becomes `backend_url = x`. Host settings (`EDGE_RESPONSES_LISTEN`, ...) and
/// empty names are skipped.
pub fn variables_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter_map(|(name, value)| {
            let name = name.strip_prefix(ENV_PREFIX)?;
            if name.is_empty() || HOST_SETTINGS.contains(&name) {
                return None;
            }
            Some((name.to_ascii_lowercase(), value))
        })
        .collect()
}

/// Parses a `name=value` flag argument.
pub fn parse_variable(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected NAME=VALUE, got {arg:?}")),
    }
}

/// The config values every instance of one server sees.
#[derive(Clone, Default)]
pub(crate) struct ConfigValues(Arc<BTreeMap<String, String>>);

impl ConfigValues {
    pub(crate) fn new(values: BTreeMap<String, String>) -> Self {
        Self(Arc::new(values))
    }

    /// The value of `key`, if set.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

struct ConfigData;

impl HasData for ConfigData {
    type Data<'a> = &'a ConfigValues;
}

/// Adds `wasi:config/store` to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    values: fn(&mut T) -> &ConfigValues,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, ConfigData>(linker, values)
}

impl store::Host for &ConfigValues {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
        Ok(Ok(self.0.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
        let all = self.0.iter().map(|(k, v)| (k.clone(), v.clone()));
        Ok(Ok(all.collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_variables_become_lowercase_config_keys() {
        let env = [
            ("EDGE_RESPONSES_BACKEND_URL", "http://127.0.0.1:9"),
            ("EDGE_RESPONSES_API_KEYS", "a,b"),
            ("EDGE_RESPONSES_LISTEN", "127.0.0.1:1"),
            ("EDGE_RESPONSES_MAX_MEMORY", "1GiB"),
            ("EDGE_RESPONSES_QUEUE_TIMEOUT", "5s"),
            ("EDGE_RESPONSES_METRICS_LISTEN", "127.0.0.1:9090"),
            ("EDGE_RESPONSES_LOG_FORMAT", "json"),
            ("EDGE_RESPONSES_WEBSOCKET_MAX_AGE", "5m"),
            ("EDGE_RESPONSES_", "empty"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let vars = variables_from_env(env);
        assert_eq!(
            vars.into_iter().collect::<Vec<_>>(),
            [
                ("api_keys".to_owned(), "a,b".to_owned()),
                ("backend_url".to_owned(), "http://127.0.0.1:9".to_owned()),
            ]
        );
    }

    #[test]
    fn parses_name_value_flags() {
        assert_eq!(
            parse_variable("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert_eq!(parse_variable("a="), Ok(("a".to_owned(), String::new())));
        assert!(parse_variable("=b").is_err());
        assert!(parse_variable("ab").is_err());
    }
}
