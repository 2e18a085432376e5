//! Responses tools as chat-completions functions, and back.
//!
//! - `function` tools pass through.
//! - `custom` (freeform) tools become a function with one string argument
//!   `input`; the model's calls come back as `custom_tool_call` items.
//! - `namespace` tools (a named group of functions; Codex CLI sends every MCP
//!   server this way) are expanded into their members under flattened names;
//!   calls come back with the member's own `name` and a separate `namespace`.
//! - `mcp` tools: the tools their servers list are added once listed
//!   ([`ToolMap::add_mcp`]), named `{server_label}__{tool}`; the server calls
//!   them itself. A call of a name under a request's `{server_label}__`
//!   that was not offered is still the server's: it fails there, and the
//!   model is told, rather than going to the client as a function call.
//! - `web_search` tools: a `web_search` function with a `query`, added when
//!   a search provider is configured ([`ToolMap::add_web_search`]); the
//!   server runs the searches.
//! - Other hosted tools (`file_search`, ...) are not offered to the model;
//!   they are only echoed in the response.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::api::hosted::WEB_SEARCH_FUNCTION;
use crate::error::ApiError;

/// What a chat-completions function name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolKind {
    Function {
        name: String,
        namespace: Option<String>,
    },
    Custom {
        name: String,
    },
    /// A tool of the remote MCP server `server` (its `server_label`),
    /// which the server calls itself.
    Mcp {
        server: String,
        name: String,
        /// Whether a call waits for the client's approval.
        approval: bool,
    },
    /// The search function the server offers for a `web_search` tool and
    /// runs itself.
    WebSearch,
}

/// A tool an MCP server listed, as offered to the model.
#[derive(Debug, Clone, Copy)]
pub struct McpOffer<'t> {
    pub name: &'t str,
    pub description: Option<&'t str>,
    /// Its input schema.
    pub schema: &'t Value,
    /// Whether its calls wait for the client's approval.
    pub approval: bool,
}

/// The tools of one request, indexed by the name the backend sees.
#[derive(Debug, Clone, Default)]
pub struct ToolMap {
    /// Chat tool definitions, in request order.
    functions: Vec<(String, Value)>,
    kinds: BTreeMap<String, ToolKind>,
    /// Names the model may call, when `allowed_tools` restricts them.
    allowed: Option<BTreeSet<String>>,
    /// `tool_choice` as chat completions expects it.
    choice: Option<Value>,
    /// A `tool_choice` or `allowed_tools` entry naming MCP servers' tools,
    /// which are only known once the servers list them: server label and
    /// tool name (any when `None`), and whether it is the forced choice.
    mcp_picks: Vec<(String, Option<String>, bool)>,
    /// `tool_choice` or `allowed_tools` names web search: whether it is
    /// the forced choice.
    search_pick: Option<bool>,
    /// The `server_label`s of the request's `mcp` tools.
    mcp_servers: Vec<String>,
}

/// The backend name of a namespace member.
pub fn flat_name(namespace: &str, name: &str) -> String {
    if namespace.ends_with("__") {
        format!("{namespace}{name}")
    } else {
        format!("{namespace}__{name}")
    }
}

/// The backend name of tool `tool` of the MCP server labelled `server`:
/// `{server}__{tool}`, with what chat-completions function names may not
/// hold (anything but ASCII letters, digits, `_` and `-`) made `_`, cut at
/// their 64 characters.
pub fn mcp_function_name(server: &str, tool: &str) -> String {
    let mut name: String = flat_name(server, tool)
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    name.truncate(64);
    name
}

/// The parameters of the function a custom (freeform) tool becomes.
fn freeform_parameters() -> Value {
    json!({
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The raw input of the tool."}},
        "required": ["input"],
        "additionalProperties": false,
    })
}

impl ToolMap {
    /// Indexes `tools` and resolves `tool_choice` against them.
    pub fn new(tools: &[Value], tool_choice: Option<&Value>) -> Result<Self, ApiError> {
        let mut map = ToolMap::default();
        let mut hosted = BTreeSet::new();
        for (i, tool) in tools.iter().enumerate() {
            let param = format!("tools[{i}]");
            match tool.get("type").and_then(Value::as_str) {
                Some("function") => map.add_function(tool, None, &param)?,
                Some("custom") => map.add_custom(tool, &param)?,
                Some("namespace") => map.add_namespace(tool, &param)?,
                Some(other) => {
                    if other == "mcp" {
                        let label = tool.get("server_label").and_then(Value::as_str);
                        map.mcp_servers.extend(label.map(str::to_owned));
                    }
                    hosted.insert(other.to_owned());
                }
                None => {
                    return Err(ApiError::invalid_param(
                        &format!("{param}.type"),
                        "Each tool needs a 'type'.",
                    ))
                }
            }
        }
        map.choice = map.resolve_choice(tool_choice, &hosted)?;
        Ok(map)
    }

    fn add_function(
        &mut self,
        tool: &Value,
        namespace: Option<&str>,
        param: &str,
    ) -> Result<(), ApiError> {
        let name = required_name(tool, param)?;
        let flat = namespace.map_or_else(|| name.to_owned(), |ns| flat_name(ns, name));
        let mut function = json!({
            "name": flat,
            "parameters": tool.get("parameters").filter(|p| !p.is_null()).cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
        for key in ["description", "strict"] {
            if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                function[key] = v.clone();
            }
        }
        self.insert(
            flat,
            function,
            ToolKind::Function {
                name: name.to_owned(),
                namespace: namespace.map(str::to_owned),
            },
        );
        Ok(())
    }

    fn add_custom(&mut self, tool: &Value, param: &str) -> Result<(), ApiError> {
        let name = required_name(tool, param)?;
        let mut description = tool
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(format) = tool.get("format").filter(|f| f.get("type").is_some()) {
            description.push_str(&format!(
                "\nPut the tool's raw input, in this format, in the `input` string: {format}"
            ));
        }
        let function =
            json!({"name": name, "description": description, "parameters": freeform_parameters()});
        self.insert(
            name.to_owned(),
            function,
            ToolKind::Custom {
                name: name.to_owned(),
            },
        );
        Ok(())
    }

    fn add_namespace(&mut self, tool: &Value, param: &str) -> Result<(), ApiError> {
        let namespace = required_name(tool, param)?;
        let members = tool.get("tools").and_then(Value::as_array);
        for (j, member) in members.into_iter().flatten().enumerate() {
            let member_param = format!("{param}.tools[{j}]");
            match member.get("type").and_then(Value::as_str) {
                Some("function") | None => {
                    self.add_function(member, Some(namespace), &member_param)?
                }
                // A namespace only groups functions; anything else is not offered.
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn insert(&mut self, flat: String, function: Value, kind: ToolKind) {
        if self.kinds.insert(flat.clone(), kind).is_none() {
            self.functions
                .push((flat, json!({"type": "function", "function": function})));
        }
    }

    fn resolve_choice(
        &mut self,
        choice: Option<&Value>,
        hosted: &BTreeSet<String>,
    ) -> Result<Option<Value>, ApiError> {
        let Some(choice) = choice else {
            return Ok(None);
        };
        if let Some(mode) = choice.as_str() {
            return match mode {
                "auto" | "none" | "required" => Ok(Some(json!(mode))),
                _ => Err(ApiError::invalid_param(
                    "tool_choice",
                    format!("Invalid tool_choice '{mode}'."),
                )),
            };
        }
        let kind = choice
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind {
            "function" | "custom" => {
                let name = choice.get("name").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid_param("tool_choice.name", "tool_choice needs a 'name'.")
                })?;
                let flat = match choice.get("namespace").and_then(Value::as_str) {
                    Some(ns) => flat_name(ns, name),
                    None => name.to_owned(),
                };
                if !self.kinds.contains_key(&flat) {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        format!("tool_choice names '{name}', which is not in 'tools'."),
                    ));
                }
                Ok(Some(
                    json!({"type": "function", "function": {"name": flat}}),
                ))
            }
            "allowed_tools" => self.restrict(choice),
            _ if is_search(kind) => {
                if !hosted.iter().any(|t| is_search(t)) {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        "tool_choice names web search, which is not in 'tools'.",
                    ));
                }
                self.search_pick = Some(true);
                Ok(Some(json!("required")))
            }
            "mcp" => self.force_mcp(choice),
            _ if hosted.contains(kind) || !kind.is_empty() => Err(ApiError::invalid_param(
                "tool_choice",
                format!("tool_choice '{kind}' names a hosted tool this server cannot run."),
            )),
            _ => Err(ApiError::invalid_param(
                "tool_choice",
                "tool_choice must be a string or an object with a 'type'.",
            )),
        }
    }

    /// `tool_choice: {"type": "mcp", "server_label", "name"}`: the named
    /// tool of that server, forced once it is listed; without a `name`,
    /// one of that server's tools (the model is offered those alone).
    fn force_mcp(&mut self, choice: &Value) -> Result<Option<Value>, ApiError> {
        let label = choice.get("server_label").and_then(Value::as_str);
        let label = label.ok_or_else(|| {
            ApiError::invalid_param(
                "tool_choice.server_label",
                "tool_choice of type 'mcp' needs a 'server_label'.",
            )
        })?;
        if !self.mcp_servers.iter().any(|s| s == label) {
            return Err(ApiError::invalid_param(
                "tool_choice.server_label",
                format!(
                    "tool_choice names MCP server '{label}', which no mcp tool in 'tools' \
                     has as its server_label."
                ),
            ));
        }
        let name = choice.get("name").and_then(Value::as_str);
        if name.is_none() {
            self.allowed.get_or_insert_with(BTreeSet::new);
        }
        self.mcp_picks
            .push((label.to_owned(), name.map(str::to_owned), true));
        Ok(Some(json!("required")))
    }

    /// After the tools of MCP server `server` are offered: a `tool_choice`
    /// naming one of them must name one it offers (a 400 on
    /// `tool_choice.name` otherwise). When its listing failed (`listed`
    /// false) the tool cannot be offered, and the model is left free
    /// (`auto`), as with any failure of a server.
    pub fn check_mcp_choice(&mut self, server: &str, listed: bool) -> Result<(), ApiError> {
        let forced = self.mcp_picks.iter().find_map(|(label, name, forced)| {
            match (label == server && *forced, name) {
                (true, Some(name)) => Some(name.clone()),
                _ => None,
            }
        });
        let Some(name) = forced else {
            return Ok(());
        };
        match (self.offers_mcp(server, &name), listed) {
            (true, _) => Ok(()),
            (false, false) => {
                self.choice = Some(json!("auto"));
                Ok(())
            }
            (false, true) => Err(ApiError::invalid_param(
                "tool_choice.name",
                format!(
                    "tool_choice names tool '{name}', which MCP server '{server}' does not \
                     offer (it does not list it, or allowed_tools leaves it out)."
                ),
            )),
        }
    }

    /// Whether the model is offered tool `name` of MCP server `server`.
    pub fn offers_mcp(&self, server: &str, name: &str) -> bool {
        let listed = self.kinds.iter().find(|(_, kind)| {
            matches!(kind, ToolKind::Mcp { server: s, name: n, .. } if s == server && n == name)
        });
        listed.is_some_and(|(flat, _)| self.offers(flat))
    }

    /// `base`, or when a tool already has that name, the first of
    /// `base_2`, `base_3`, ... (cut to keep to 64 characters) none has.
    fn unique_name(&self, base: String) -> Option<String> {
        if !self.kinds.contains_key(&base) {
            return Some(base);
        }
        // Of these many distinct names, one is free.
        (2..self.kinds.len() + 3).find_map(|n| {
            let suffix = format!("_{n}");
            let mut name = base.clone();
            name.truncate(64usize.saturating_sub(suffix.len()));
            name.push_str(&suffix);
            (!self.kinds.contains_key(&name)).then_some(name)
        })
    }

    /// Whether the model is offered the function `flat`.
    fn offers(&self, flat: &str) -> bool {
        self.kinds.contains_key(flat) && self.allowed.as_ref().is_none_or(|a| a.contains(flat))
    }

    /// `allowed_tools`: only the listed tools are offered to the model.
    fn restrict(&mut self, choice: &Value) -> Result<Option<Value>, ApiError> {
        let mut allowed = BTreeSet::new();
        let listed = choice.get("tools").and_then(Value::as_array);
        for tool in listed.into_iter().flatten() {
            let name = tool.get("name").and_then(Value::as_str);
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
            if is_search(kind) {
                self.search_pick.get_or_insert(false);
                continue;
            }
            if kind == "mcp" {
                if let Some(label) = tool.get("server_label").and_then(Value::as_str) {
                    let pick = (label.to_owned(), name.map(str::to_owned), false);
                    self.mcp_picks.push(pick);
                }
                continue;
            }
            let Some(name) = name else {
                continue;
            };
            let flat = match tool.get("namespace").and_then(Value::as_str) {
                Some(ns) => flat_name(ns, name),
                None => name.to_owned(),
            };
            if self.kinds.contains_key(&flat) {
                allowed.insert(flat);
            }
        }
        let mode = match choice.get("mode").and_then(Value::as_str) {
            Some("required") => "required",
            _ => "auto",
        };
        let none_left =
            allowed.is_empty() && self.mcp_picks.is_empty() && self.search_pick.is_none();
        self.allowed = Some(allowed);
        Ok(Some(json!(if none_left { "none" } else { mode })))
    }

    /// Offers the tools MCP server `server` listed, as `{server}__{name}`;
    /// returns their definitions for the backend.
    pub fn add_mcp(&mut self, server: &str, tools: &[McpOffer<'_>]) -> Vec<Value> {
        let mut added = Vec::new();
        for &McpOffer {
            name,
            description,
            schema,
            approval,
        } in tools
        {
            // A tool whose name comes out as another's gets one of its own.
            let Some(flat) = self.unique_name(mcp_function_name(server, name)) else {
                continue;
            };
            let mut function = json!({"name": flat, "parameters": schema});
            if schema.is_null() {
                function["parameters"] = json!({"type": "object", "properties": {}});
            }
            if let Some(description) = description {
                function["description"] = json!(description);
            }
            let kind = ToolKind::Mcp {
                server: server.to_owned(),
                name: name.to_owned(),
                approval,
            };
            self.insert(flat.clone(), function, kind);
            let picked = |only_forced: bool| {
                self.mcp_picks.iter().any(|(label, pick, forced)| {
                    label == server
                        && pick.as_deref().is_none_or(|p| p == name)
                        && (*forced || !only_forced)
                })
            };
            if picked(true) && self.mcp_picks.iter().any(|p| p.1.is_some() && p.2) {
                self.choice = Some(json!({"type": "function", "function": {"name": flat}}));
            }
            if let (Some(allowed), true) = (self.allowed.as_mut(), picked(false)) {
                allowed.insert(flat.clone());
            }
            if self.allowed.as_ref().is_none_or(|a| a.contains(&flat)) {
                if let Some((_, tool)) = self.functions.last() {
                    added.push(tool.clone());
                }
            }
        }
        added
    }

    /// Offers web search as the `web_search` function; returns its
    /// definition for the backend, unless a tool of the client's has that
    /// name or `allowed_tools` leaves it out.
    pub fn add_web_search(&mut self) -> Option<Value> {
        let name = WEB_SEARCH_FUNCTION;
        if self.kinds.contains_key(name) {
            return None;
        }
        let function = json!({
            "name": name,
            "description": "Search the web. Returns numbered results with titles, URLs and snippets.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to search for."}},
                "required": ["query"],
            },
        });
        self.insert(name.to_owned(), function, ToolKind::WebSearch);
        if self.search_pick == Some(true) {
            self.choice = Some(json!({"type": "function", "function": {"name": name}}));
        }
        if let (Some(allowed), Some(_)) = (self.allowed.as_mut(), self.search_pick) {
            allowed.insert(name.to_owned());
        }
        let offered = self.allowed.as_ref().is_none_or(|a| a.contains(name));
        offered
            .then(|| self.functions.last().map(|(_, tool)| tool.clone()))
            .flatten()
    }

    /// Whether `tool_choice` names web search.
    pub fn forces_web_search(&self) -> bool {
        self.search_pick == Some(true)
    }

    /// Tool definitions for the backend.
    pub fn chat_tools(&self) -> Vec<Value> {
        self.functions
            .iter()
            .filter(|(name, _)| self.allowed.as_ref().is_none_or(|a| a.contains(name)))
            .map(|(_, tool)| tool.clone())
            .collect()
    }

    /// `tool_choice` for the backend (already resolved by [`ToolMap::new`]).
    pub fn chat_tool_choice(&self) -> Option<Value> {
        if self.is_empty() {
            return None;
        }
        self.choice.clone()
    }

    /// Whether no tool is offered to the model.
    pub fn is_empty(&self) -> bool {
        match &self.allowed {
            Some(allowed) => allowed.is_empty(),
            None => self.functions.is_empty(),
        }
    }

    /// What a function name the backend used stands for. A name under
    /// the `{server_label}__` of one of the request's MCP servers that the
    /// model was not offered is a call of that server's, which needs no
    /// approval: the server fails it (see `crate::create::hosted`).
    pub fn lookup(&self, chat_name: &str) -> ToolKind {
        match self.kinds.get(chat_name) {
            Some(ToolKind::Mcp { server, name, .. }) if !self.offers(chat_name) => ToolKind::Mcp {
                server: server.clone(),
                name: name.clone(),
                approval: false,
            },
            Some(kind) => kind.clone(),
            None => self
                .unoffered_mcp(chat_name)
                .unwrap_or_else(|| ToolKind::Function {
                    name: chat_name.to_owned(),
                    namespace: None,
                }),
        }
    }

    /// `chat_name` as a tool of the request's MCP server whose
    /// `{server_label}__` it starts with (the longest such label).
    fn unoffered_mcp(&self, chat_name: &str) -> Option<ToolKind> {
        let (server, name) = self
            .mcp_servers
            .iter()
            .filter_map(|label| {
                let rest = chat_name.strip_prefix(label.as_str())?.strip_prefix("__")?;
                (!rest.is_empty()).then_some((label, rest))
            })
            .max_by_key(|(label, _)| label.len())?;
        Some(ToolKind::Mcp {
            server: server.clone(),
            name: name.to_owned(),
            approval: false,
        })
    }
}

/// Whether a tool `type` is web search.
fn is_search(kind: &str) -> bool {
    crate::search::tool::TOOL_TYPES.contains(&kind)
}

fn required_name<'a>(tool: &'a Value, param: &str) -> Result<&'a str, ApiError> {
    tool.get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_request(format!("Missing required parameter: '{param}.name'."))
                .with_param(format!("{param}.name"))
                .with_code("missing_required_parameter")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<Value> {
        vec![
            json!({"type": "function", "name": "get_weather", "parameters": {"type": "object"}}),
            json!({"type": "custom", "name": "apply_patch", "description": "Patch files"}),
            json!({"type": "namespace", "name": "mcp__github__", "tools": [
                {"type": "function", "name": "create_issue", "parameters": {"type": "object"}}]}),
            json!({"type": "web_search"}),
            json!({"type": "mcp", "server_label": "fs", "server_url": "https://mcp.example.com"}),
        ]
    }

    #[test]
    fn kinds_and_backend_names() {
        let map = ToolMap::new(&tools(), None).unwrap();
        let names: Vec<_> = map
            .chat_tools()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["get_weather", "apply_patch", "mcp__github__create_issue"]
        );
        assert_eq!(
            map.lookup("mcp__github__create_issue"),
            ToolKind::Function {
                name: "create_issue".into(),
                namespace: Some("mcp__github__".into())
            }
        );
        assert_eq!(
            map.lookup("apply_patch"),
            ToolKind::Custom {
                name: "apply_patch".into()
            }
        );
    }

    #[test]
    fn hosted_tool_choice_is_rejected_unless_the_server_runs_it() {
        assert!(ToolMap::new(&tools(), Some(&json!("auto"))).is_ok());
        let err = ToolMap::new(&tools(), Some(&json!({"type": "file_search"}))).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.param.as_deref(), Some("tool_choice"));

        // Web search, once offered, is the forced function.
        let mut map = ToolMap::new(&tools(), Some(&json!({"type": "web_search"}))).unwrap();
        assert!(map.forces_web_search());
        let offered = map.add_web_search().unwrap();
        assert_eq!(offered["function"]["name"], "web_search");
        assert_eq!(
            map.chat_tool_choice(),
            Some(json!({"type": "function", "function": {"name": "web_search"}}))
        );
        assert_eq!(map.lookup("web_search"), ToolKind::WebSearch);
    }

    #[test]
    fn mcp_names_fit_chat_completions() {
        assert_eq!(
            mcp_function_name("gh", "repos.get/file"),
            "gh__repos_get_file"
        );
        assert_eq!(mcp_function_name("s", &"é".repeat(80)).len(), 64);
    }

    #[test]
    fn mcp_tools_are_added_once_listed() {
        let schema = json!({"type": "object"});
        let offer = |name| McpOffer {
            name,
            description: Some("d"),
            schema: &schema,
            approval: name == "rm",
        };
        let choice = json!({"type": "mcp", "server_label": "fs", "name": "ls"});
        let mut map = ToolMap::new(&tools(), Some(&choice)).unwrap();
        let added = map.add_mcp("fs", &[offer("ls"), offer("rm")]);
        assert_eq!(added.len(), 2);
        assert_eq!(added[0]["function"]["name"], "fs__ls");
        assert_eq!(
            map.lookup("fs__rm"),
            ToolKind::Mcp {
                server: "fs".into(),
                name: "rm".into(),
                approval: true
            }
        );
        assert_eq!(
            map.chat_tool_choice(),
            Some(json!({"type": "function", "function": {"name": "fs__ls"}}))
        );
        // allowed_tools naming a server lets only its tools through.
        let only = json!({"type": "allowed_tools", "mode": "auto",
                          "tools": [{"type": "mcp", "server_label": "fs"}]});
        let mut map = ToolMap::new(&tools(), Some(&only)).unwrap();
        map.add_mcp("fs", &[offer("ls")]);
        let names: Vec<Value> = map
            .chat_tools()
            .iter()
            .map(|t| t["function"]["name"].clone())
            .collect();
        assert_eq!(names, [json!("fs__ls")]);
    }

    fn offer(name: &str) -> McpOffer<'_> {
        static SCHEMA: Value = Value::Null;
        McpOffer {
            name,
            description: None,
            schema: &SCHEMA,
            approval: false,
        }
    }

    fn offered(map: &ToolMap) -> Vec<String> {
        map.chat_tools()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn an_mcp_choice_names_a_server_and_a_tool_it_offers() {
        let nope = json!({"type": "mcp", "server_label": "nope"});
        let err = ToolMap::new(&tools(), Some(&nope)).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tool_choice.server_label"));

        // A server alone: its tools, and no others, one of them required.
        let server = json!({"type": "mcp", "server_label": "fs"});
        let mut map = ToolMap::new(&tools(), Some(&server)).unwrap();
        assert!(map.chat_tools().is_empty());
        map.add_mcp("fs", &[offer("ls"), offer("rm")]);
        map.check_mcp_choice("fs", true).unwrap();
        assert_eq!(offered(&map), ["fs__ls", "fs__rm"]);
        assert_eq!(map.chat_tool_choice(), Some(json!("required")));

        // A tool the server does not list is a 400, once it is listed.
        let named = json!({"type": "mcp", "server_label": "fs", "name": "mv"});
        let mut map = ToolMap::new(&tools(), Some(&named)).unwrap();
        map.add_mcp("fs", &[offer("ls")]);
        let err = map.check_mcp_choice("fs", true).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tool_choice.name"));
        // A listing that failed leaves the model free.
        let mut map = ToolMap::new(&tools(), Some(&named)).unwrap();
        map.add_mcp("fs", &[]);
        map.check_mcp_choice("fs", false).unwrap();
        assert_eq!(map.chat_tool_choice(), Some(json!("auto")));
    }

    #[test]
    fn mcp_names_that_come_out_alike_each_get_their_own() {
        let long_a = format!("{}a", "x".repeat(70));
        let long_b = format!("{}b", "x".repeat(70));
        let names = [
            "repos.get/file",
            "repos.get_file",
            "repos_get_file_2",
            long_a.as_str(),
            long_b.as_str(),
        ];
        let choice = json!({"type": "mcp", "server_label": "gh", "name": "repos.get_file"});
        let mut with = tools();
        with.push(json!({"type": "mcp", "server_label": "gh", "server_url": "https://x"}));
        let mut map = ToolMap::new(&with, Some(&choice)).unwrap();
        let offers: Vec<McpOffer<'_>> = names.iter().map(|n| offer(n)).collect();
        let flat: Vec<String> = map
            .add_mcp("gh", &offers)
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
            .collect();
        map.check_mcp_choice("gh", true).unwrap();
        let long = format!("gh__{}", "x".repeat(60));
        let long_2 = format!("gh__{}_2", "x".repeat(58));
        assert_eq!(
            flat,
            [
                "gh__repos_get_file",
                "gh__repos_get_file_2",
                "gh__repos_get_file_2_2",
                long.as_str(),
                long_2.as_str(),
            ]
        );
        assert!(flat.iter().all(|n| n.len() <= 64));
        for (flat, name) in flat.iter().zip(names) {
            assert!(map.offers_mcp("gh", name), "{name}");
            let kind = ToolKind::Mcp {
                server: "gh".into(),
                name: name.into(),
                approval: false,
            };
            assert_eq!(map.lookup(flat), kind, "{flat}");
        }
        assert_eq!(
            map.chat_tool_choice(),
            Some(json!({"type": "function", "function": {"name": "gh__repos_get_file_2"}}))
        );
        // A client function of the same name keeps it; the MCP tool moves.
        let mut with = tools();
        with.push(json!({"type": "function", "name": "fs__ls"}));
        let mut map = ToolMap::new(&with, None).unwrap();
        map.add_mcp("fs", &[offer("ls")]);
        assert!(matches!(map.lookup("fs__ls"), ToolKind::Function { .. }));
        assert!(matches!(map.lookup("fs__ls_2"), ToolKind::Mcp { .. }));
        assert!(map.offers_mcp("fs", "ls"));
    }

    #[test]
    fn unoffered_mcp_names_stay_the_servers() {
        let only = json!({"type": "allowed_tools", "mode": "auto",
                          "tools": [{"type": "mcp", "server_label": "fs", "name": "ls"}]});
        let mut map = ToolMap::new(&tools(), Some(&only)).unwrap();
        map.add_mcp("fs", &[offer("ls"), offer("rm")]);
        assert_eq!(offered(&map), ["fs__ls"]);
        let unoffered = |name: &str| ToolKind::Mcp {
            server: "fs".into(),
            name: name.into(),
            approval: false,
        };
        // Left out by allowed_tools, never listed, or of a failed listing.
        assert_eq!(map.lookup("fs__rm"), unoffered("rm"));
        assert_eq!(map.lookup("fs__mv"), unoffered("mv"));
        // Names of no server of the request are the client's.
        assert!(matches!(map.lookup("gs__mv"), ToolKind::Function { .. }));
        assert!(matches!(map.lookup("fs__"), ToolKind::Function { .. }));
        assert!(matches!(
            map.lookup("get_weather"),
            ToolKind::Function { .. }
        ));
    }

    #[test]
    fn a_web_search_choice_needs_the_tool() {
        let without: Vec<Value> = tools()
            .into_iter()
            .filter(|t| t["type"] != "web_search")
            .collect();
        for kind in ["web_search", "web_search_preview"] {
            let choice = json!({ "type": kind });
            let err = ToolMap::new(&without, Some(&choice)).unwrap_err();
            assert_eq!(err.param.as_deref(), Some("tool_choice"));
        }
    }

    #[test]
    fn allowed_tools_restricts_offer() {
        let choice = json!({"type": "allowed_tools", "mode": "required",
                            "tools": [{"type": "function", "name": "get_weather"}]});
        let map = ToolMap::new(&tools(), Some(&choice)).unwrap();
        assert_eq!(map.chat_tools().len(), 1);
        assert_eq!(map.chat_tool_choice(), Some(json!("required")));
    }

    #[test]
    fn named_function_choice() {
        let choice = json!({"type": "function", "name": "get_weather"});
        let map = ToolMap::new(&tools(), Some(&choice)).unwrap();
        assert_eq!(
            map.chat_tool_choice(),
            Some(json!({"type": "function", "function": {"name": "get_weather"}}))
        );
        let unknown = json!({"type": "function", "name": "nope"});
        assert!(ToolMap::new(&tools(), Some(&unknown)).is_err());
    }
}
