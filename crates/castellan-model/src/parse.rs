//! Parsing and validation of `castellan.toml`.

mod response;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{
    Agent, AgentLimits, AuditDurability, AuditFailure, AuthMethod, ClientIdentity, Config,
    Connection, DataLossCheck, DlpMode, GatewaySettings, HeaderTemplate, MethodSet, Role,
    RotationProvider, Rule, RuleEffect, RuleId, Timeouts, TokenLocation, Upstream,
    DEFAULT_MAX_REQUEST_BYTES, DEFAULT_ROTATION_TIMEOUT, DEFAULT_TOKEN_LOCATIONS,
};
use crate::diagnostic::{ConfigError, Diagnostic, Location};
use crate::names::{check_name, closest};
use crate::pattern::PathPattern;
use response::{RawDetect, RawResponse, RawWebhook};

type Map<T> = BTreeMap<Spanned<String>, Spanned<T>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    connections: Map<RawConnection>,
    #[serde(default)]
    roles: Map<RawRole>,
    #[serde(default)]
    agents: Map<RawAgent>,
    #[serde(default)]
    detect: RawDetect,
    #[serde(default)]
    webhooks: Map<RawWebhook>,
    #[serde(default)]
    responses: Vec<Spanned<RawResponse>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    upstream: Spanned<String>,
    auth: Spanned<RawAuth>,
    secret: Spanned<String>,
    agent_token_in: Option<Vec<Spanned<RawTokenLocation>>>,
    connect_timeout: Option<Spanned<String>>,
    response_timeout: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    on_audit_backlog: Option<Spanned<String>>,
    #[serde(default)]
    allow_private: bool,
    max_request_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    case_insensitive_paths: bool,
    dlp: Option<Spanned<String>>,
    dlp_max_bytes: Option<Spanned<u64>>,
    rotate_every: Option<Spanned<String>>,
    rotation: Option<Spanned<RawRotation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    command: Spanned<Vec<String>>,
    verify: Spanned<String>,
    revoke_command: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawAuth {
    Bearer,
    Header { name: String, value: Option<String> },
    Basic { username: Option<String> },
    Query { name: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTokenLocation {
    Header(String),
    Query { query: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    allow: Vec<Spanned<RawRule>>,
    #[serde(default)]
    deny: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    connection: Spanned<String>,
    methods: Option<Spanned<Vec<Spanned<String>>>>,
    paths: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    auth_failures_per_minute: Option<Spanned<u32>>,
    #[serde(default)]
    departed_owners: Vec<Spanned<String>>,
    rotate_every: Option<Spanned<String>>,
    rotation_grace: Option<Spanned<String>>,
    remind_before: Option<Spanned<String>>,
    #[serde(default)]
    reminder_webhooks: Vec<Spanned<String>>,
    audit_durability: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    owner: Option<Spanned<String>>,
    description: Option<String>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    expires: Option<Spanned<String>>,
    requests_per_minute: Option<Spanned<u32>>,
    max_concurrent_requests: Option<Spanned<u32>>,
    client_certificate: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    token_lifetime: Option<Spanned<String>>,
}

/// Accumulates diagnostics while the file is checked.
struct Checker<'a> {
    source: &'a str,
    /// Byte offsets where each line starts, so a location costs a binary
    /// search rather than a scan from the start of a large file.
    line_starts: Vec<usize>,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn at<T>(&self, spanned: &Spanned<T>) -> Location {
        Location::from_line_starts(self.source, &self.line_starts, spanned.span().start)
    }

    fn error<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        let location = self.at(spanned);
        self.diagnostics.push(Diagnostic::new(location, message));
    }

    fn error_with_hint<T>(
        &mut self,
        spanned: &Spanned<T>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let location = self.at(spanned);
        self.diagnostics
            .push(Diagnostic::new(location, message).with_hint(hint));
    }

    fn check_name<T>(&mut self, kind: &str, name: &Spanned<T>, text: &str) {
        if let Err(problem) = check_name(text) {
            self.error(name, format!("invalid {kind} name {text:?}: {problem}"));
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|error| {
            let hint = if error.kind() == std::io::ErrorKind::NotFound {
                "run `castellan init` to create one, or pass --config FILE"
            } else {
                "check the file's permissions"
            };
            ConfigError::new(
                path,
                vec![Diagnostic::new(
                    Location { line: 0, column: 0 },
                    format!("cannot read the configuration: {error}"),
                )
                .with_hint(hint)],
            )
        })?;
        Config::parse(&source, path)
    }

    /// Validates configuration text; `path` is used only in messages.
    pub fn parse(source: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(source)
            .map_err(|error| ConfigError::new(path, vec![syntax_diagnostic(source, &error)]))?;
        let mut checker = Checker {
            source,
            line_starts: crate::diagnostic::line_starts(source),
            diagnostics: Vec::new(),
        };
        let config = build(&mut checker, raw);
        if checker.diagnostics.is_empty() {
            Ok(config)
        } else {
            checker
                .diagnostics
                .sort_by_key(|d| (d.location.line, d.location.column));
            Err(ConfigError::new(path, checker.diagnostics))
        }
    }
}

fn syntax_diagnostic(source: &str, error: &toml::de::Error) -> Diagnostic {
    let location = error
        .span()
        .map_or_else(Location::default, |span| Location::from_span(source, span));
    let message = error.message().trim().to_string();
    let hint = if message.contains("unknown field") {
        Some("remove the key or fix its spelling; the message lists the keys allowed here")
    } else if message.contains("duplicate key") {
        Some("each connection, role, agent and webhook name may be declared only once")
    } else if message.contains("missing field") {
        Some("add the key named in the message")
    } else if message.contains("unknown variant") {
        Some("use one of the values the message lists")
    } else {
        Some("check the TOML syntax at this position: quotes, brackets, and `key = value` pairs")
    };
    let diagnostic = Diagnostic::new(location, message);
    match hint {
        Some(hint) => diagnostic.with_hint(hint),
        None => diagnostic,
    }
}

fn build(checker: &mut Checker<'_>, raw: RawConfig) -> Config {
    let connection_names: Vec<String> = raw
        .connections
        .keys()
        .map(|k| k.get_ref().clone())
        .collect();
    let role_names: Vec<String> = raw.roles.keys().map(|k| k.get_ref().clone()).collect();
    let folded: Vec<String> = raw
        .connections
        .iter()
        .filter(|(_, connection)| connection.get_ref().case_insensitive_paths)
        .map(|(name, _)| name.get_ref().clone())
        .collect();
    let known = KnownConnections {
        names: &connection_names,
        case_insensitive: &folded,
    };

    let webhooks = response::build_webhooks(checker, raw.webhooks);
    let mut config = Config {
        gateway: build_gateway(checker, &raw.gateway, &webhooks),
        detect: response::build_detect(checker, &raw.detect),
        responses: response::build_responses(checker, raw.responses, &webhooks),
        webhooks,
        ..Config::default()
    };
    // The maps are collected from vectors because `BTreeMap` builds full
    // nodes from an iterator. Inserts in ascending order leave each node
    // about half empty, which for 10,000 agents wasted about 2.5 MiB.
    let mut connections = Vec::with_capacity(raw.connections.len());
    for (name, connection) in raw.connections {
        checker.check_name("connection", &name, name.get_ref());
        let rotate_default = config.gateway.rotate_every;
        if let Some(built) = build_connection(
            checker,
            name.get_ref(),
            connection.into_inner(),
            rotate_default,
        ) {
            connections.push((name.into_inner(), built));
        }
    }
    config.connections = connections.into_iter().collect();
    let mut roles = Vec::with_capacity(raw.roles.len());
    for (name, role) in raw.roles {
        checker.check_name("role", &name, name.get_ref());
        let built = build_role(checker, name.get_ref(), role.into_inner(), &known);
        roles.push((name.into_inner(), built));
    }
    config.roles = roles.into_iter().collect();
    let mut agents = Vec::with_capacity(raw.agents.len());
    for (name, agent) in raw.agents {
        checker.check_name("agent", &name, name.get_ref());
        let location = checker.at(&name);
        if let Some(built) = build_agent(checker, &name, agent, &role_names, location) {
            agents.push((name.into_inner(), built));
        }
    }
    config.agents = agents.into_iter().collect();
    check_unique_certificates(checker, &config);
    check_unique_token_files(checker, &config);
    config
}

/// Rejects two agents bound to the same client certificate identity,
/// which would make a certificate's agent depend on name order.
fn check_unique_certificates(checker: &mut Checker<'_>, config: &Config) {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for agent in config.agents.values() {
        let Some(identity) = &agent.client_certificate else {
            continue;
        };
        match seen.get(&identity.to_string()) {
            Some(first) => checker.diagnostics.push(
                Diagnostic::new(
                    agent.location,
                    format!(
                        "agents {first:?} and {:?} are bound to the same client_certificate {identity}",
                        agent.name
                    ),
                )
                .with_hint("give each agent an identity that only its certificate carries"),
            ),
            None => {
                seen.insert(identity.to_string(), &agent.name);
            }
        }
    }
}

/// Rejects two agents sharing a token file: each would overwrite the
/// other's token, and one agent would act with the other's roles.
fn check_unique_token_files(checker: &mut Checker<'_>, config: &Config) {
    let mut seen: BTreeMap<&std::path::Path, &str> = BTreeMap::new();
    for agent in config.agents.values() {
        let Some(path) = &agent.token_file else {
            continue;
        };
        match seen.get(path.as_path()) {
            Some(first) => checker.diagnostics.push(
                Diagnostic::new(
                    agent.location,
                    format!(
                        "agents {first:?} and {:?} have the same token_file {}",
                        agent.name,
                        path.display()
                    ),
                )
                .with_hint("give each agent its own token_file, or the agents would read each other's tokens"),
            ),
            None => {
                seen.insert(path, &agent.name);
            }
        }
    }
}

fn build_gateway(
    checker: &mut Checker<'_>,
    raw: &RawGateway,
    webhooks: &BTreeMap<String, crate::response::Webhook>,
) -> GatewaySettings {
    let mut settings = GatewaySettings::default();
    if let Some(value) = &raw.auth_failures_per_minute {
        if *value.get_ref() == 0 {
            checker.error_with_hint(
                value,
                "auth_failures_per_minute of zero would block every address after one typo",
                "use at least 1; the default is 10",
            );
        } else {
            settings.auth_failures_per_minute = *value.get_ref();
        }
    }
    for owner in &raw.departed_owners {
        let trimmed = owner.get_ref().trim();
        if trimmed.is_empty() {
            checker.error_with_hint(
                owner,
                "departed_owners contains an empty owner",
                "list each departed owner as it is written in the agents' owner keys",
            );
        } else {
            settings.departed_owners.push(trimmed.to_string());
        }
    }
    if let Some(value) = &raw.rotate_every {
        settings.rotate_every =
            parse_period(checker, "rotate_every", value).unwrap_or(settings.rotate_every);
    }
    if let Some(value) = &raw.rotation_grace {
        settings.rotation_grace =
            parse_period(checker, "rotation_grace", value).unwrap_or(settings.rotation_grace);
    }
    if let Some(value) = &raw.remind_before {
        settings.remind_before =
            parse_period(checker, "remind_before", value).unwrap_or(settings.remind_before);
    }
    settings.reminder_webhooks = response::check_webhook_names(
        checker,
        "reminder_webhooks",
        &raw.reminder_webhooks,
        webhooks,
    )
    .unwrap_or_default();
    if let Some(value) = &raw.audit_durability {
        settings.audit_durability = parse_audit_durability(checker, value);
    }
    settings
}

fn parse_audit_durability(checker: &mut Checker<'_>, value: &Spanned<String>) -> AuditDurability {
    match value.get_ref().as_str() {
        "batched" => AuditDurability::Batched,
        "strict" => AuditDurability::Strict,
        other => {
            checker.error_with_hint(
                value,
                format!("invalid audit_durability {other:?}"),
                "use \"batched\" (the default: records commit within about 10 ms of the response) \
                 or \"strict\" (each response ends only after its record is committed)",
            );
            AuditDurability::Batched
        }
    }
}

/// Parses a period key such as `rotate_every`, `rotation_grace` or
/// `learning_period`: a positive duration such as "30d".
fn parse_period(checker: &mut Checker<'_>, key: &str, value: &Spanned<String>) -> Option<Duration> {
    match humantime::parse_duration(value.get_ref()) {
        Ok(duration) if !duration.is_zero() => Some(duration),
        Ok(_) => {
            checker.error_with_hint(
                value,
                format!("{key} of zero is invalid"),
                "write a positive duration such as \"30d\" or \"12h\"",
            );
            None
        }
        Err(error) => {
            checker.error_with_hint(
                value,
                format!("invalid {key} {:?}: {error}", value.get_ref()),
                "write a duration such as \"30d\", \"12h\" or \"1w\"",
            );
            None
        }
    }
}

fn build_connection(
    checker: &mut Checker<'_>,
    name: &str,
    raw: RawConnection,
    rotate_default: Duration,
) -> Option<Connection> {
    let upstream = parse_upstream(checker, &raw.upstream);
    checker.check_name("secret", &raw.secret, raw.secret.get_ref());
    let auth = build_auth(checker, &raw.auth);
    let agent_token_in = match raw.agent_token_in {
        None => DEFAULT_TOKEN_LOCATIONS.to_vec(),
        Some(locations) => build_token_locations(checker, &locations),
    };
    let mut timeouts = Timeouts::default();
    if let Some(value) = &raw.connect_timeout {
        timeouts.connect = parse_duration(checker, value).unwrap_or(timeouts.connect);
    }
    if let Some(value) = &raw.response_timeout {
        timeouts.response = parse_duration(checker, value).unwrap_or(timeouts.response);
    }
    let on_audit_backlog = match raw
        .on_audit_backlog
        .as_ref()
        .map(|v| (v, v.get_ref().as_str()))
    {
        None | Some((_, "closed")) => AuditFailure::Closed,
        Some((_, "open")) => AuditFailure::Open,
        Some((value, other)) => {
            checker.error_with_hint(
                value,
                format!("invalid on_audit_backlog {other:?}"),
                "use \"closed\" (reject requests, the default) or \"open\" (forward unrecorded)",
            );
            AuditFailure::Closed
        }
    };
    let dlp = build_dlp(checker, raw.dlp.as_ref(), raw.dlp_max_bytes.as_ref());
    let rotate_every = match &raw.rotate_every {
        None => rotate_default,
        Some(value) => parse_period(checker, "rotate_every", value).unwrap_or(rotate_default),
    };
    let rotation = raw
        .rotation
        .as_ref()
        .and_then(|rotation| build_rotation(checker, rotation));
    Some(Connection {
        name: name.to_string(),
        upstream: upstream?,
        auth: auth?,
        secret: raw.secret.into_inner(),
        agent_token_in,
        timeouts,
        ca_file: raw.ca_file.map(|file| file.into_inner().into()),
        on_audit_backlog,
        allow_private: raw.allow_private,
        max_request_bytes: match &raw.max_request_bytes {
            None => DEFAULT_MAX_REQUEST_BYTES,
            Some(value) if *value.get_ref() == 0 => {
                checker.error(
                    value,
                    "max_request_bytes of zero would reject every request with a body",
                );
                DEFAULT_MAX_REQUEST_BYTES
            }
            Some(value) => *value.get_ref(),
        },
        case_insensitive_paths: raw.case_insensitive_paths,
        dlp,
        rotate_every,
        rotation,
    })
}

/// Checks a `[connections.NAME.rotation]` table.
fn build_rotation(
    checker: &mut Checker<'_>,
    raw: &Spanned<RawRotation>,
) -> Option<RotationProvider> {
    let table = raw.get_ref();
    let mut valid = true;
    for (key, argv) in [
        ("command", Some(&table.command)),
        ("revoke_command", table.revoke_command.as_ref()),
    ] {
        let Some(argv) = argv else { continue };
        if argv
            .get_ref()
            .first()
            .is_none_or(|program| program.trim().is_empty())
        {
            checker.error_with_hint(
                argv,
                format!("{key} is empty"),
                "write the program and its arguments as a list, such as [\"/usr/local/bin/new-key\", \"--project\", \"api\"]",
            );
            valid = false;
        }
    }
    let verify = table.verify.get_ref().trim();
    let parsed = verify.split_once(' ').and_then(|(method, path)| {
        let method_ok = !method.is_empty() && method.bytes().all(|byte| byte.is_ascii_uppercase());
        let path = path.trim();
        (method_ok && path.starts_with('/') && !path.contains(char::is_whitespace))
            .then(|| (method.to_owned(), path.to_owned()))
    });
    let Some((verify_method, verify_path)) = parsed else {
        checker.error_with_hint(
            &table.verify,
            format!("invalid verify {verify:?}"),
            "write a method and a path sent to the upstream with the new key, such as \"GET /v1/models\"; a 2xx answer passes",
        );
        return None;
    };
    let timeout = match &table.timeout {
        None => DEFAULT_ROTATION_TIMEOUT,
        Some(value) => parse_duration(checker, value)?,
    };
    valid.then(|| RotationProvider {
        command: table.command.get_ref().clone(),
        verify_method,
        verify_path,
        revoke_command: table
            .revoke_command
            .as_ref()
            .map(|argv| argv.get_ref().clone()),
        timeout,
    })
}

fn build_dlp(
    checker: &mut Checker<'_>,
    mode: Option<&Spanned<String>>,
    max_bytes: Option<&Spanned<u64>>,
) -> DataLossCheck {
    let mut check = DataLossCheck::default();
    match mode.map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "off")) => {}
        Some((_, "alert")) => check.mode = DlpMode::Alert,
        Some((_, "block")) => check.mode = DlpMode::Block,
        Some((value, other)) => checker.error_with_hint(
            value,
            format!("invalid dlp {other:?}"),
            "use \"off\" (the default), \"alert\" (record secrets in request bodies) or \"block\" (reject them with 403)",
        ),
    }
    match max_bytes {
        None => {}
        Some(value) if *value.get_ref() == 0 => checker.error_with_hint(
            value,
            "dlp_max_bytes of zero would scan nothing",
            "leave it out for the default of 4 MiB, or set dlp = \"off\"",
        ),
        Some(value) => check.max_bytes = *value.get_ref(),
    }
    check
}

fn parse_upstream(checker: &mut Checker<'_>, raw: &Spanned<String>) -> Option<Upstream> {
    let text = raw.get_ref();
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(error) => {
            checker.error_with_hint(
                raw,
                format!("invalid upstream URL {text:?}: {error}"),
                "write a base URL such as \"https://api.example.com/v1\"",
            );
            return None;
        }
    };
    let problem = if !matches!(url.scheme(), "https" | "http") {
        Some(format!(
            "scheme {:?} is not supported; use https or http",
            url.scheme()
        ))
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("credentials in the upstream URL would bypass the vault; store them with `castellan secret set` instead".to_string())
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("an upstream URL may not have a query or fragment".to_string())
    } else if url.host_str().is_none() {
        Some("the upstream URL has no host".to_string())
    } else {
        None
    };
    if let Some(problem) = problem {
        checker.error(raw, format!("invalid upstream URL {text:?}: {problem}"));
        return None;
    }
    let host = match url.host()? {
        url::Host::Ipv6(v6) => v6.to_string(),
        other => other.to_string(),
    };
    let base_path = url.path().trim_end_matches('/').to_string();
    Some(Upstream {
        scheme: url.scheme().to_string(),
        host,
        port: url.port_or_known_default()?,
        base_path,
    })
}

fn build_auth(checker: &mut Checker<'_>, raw: &Spanned<RawAuth>) -> Option<AuthMethod> {
    match raw.get_ref() {
        RawAuth::Bearer => Some(AuthMethod::Bearer),
        RawAuth::Basic { username } => Some(AuthMethod::Basic {
            username: username.clone(),
        }),
        RawAuth::Query { name } => {
            if name.is_empty() || name.contains(['&', '=', '#', ' ']) {
                checker.error(raw, format!("invalid query parameter name {name:?}"));
                return None;
            }
            Some(AuthMethod::Query { name: name.clone() })
        }
        RawAuth::Header { name, value } => {
            let header = name.to_ascii_lowercase();
            if !is_header_name(&header) {
                checker.error(raw, format!("invalid header name {name:?}"));
                return None;
            }
            if matches!(
                header.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                checker.error(
                    raw,
                    format!("the header {header:?} cannot carry a credential"),
                );
                return None;
            }
            let template = match value {
                None => HeaderTemplate::bare(),
                Some(value) => parse_template(checker, raw, value)?,
            };
            Some(AuthMethod::Header {
                name: header,
                template,
            })
        }
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_template(
    checker: &mut Checker<'_>,
    value: &Spanned<RawAuth>,
    text: &str,
) -> Option<HeaderTemplate> {
    let parts: Vec<&str> = text.split("{secret}").collect();
    if parts.len() != 2 {
        checker.error_with_hint(
            value,
            format!("the header value template {text:?} must contain {{secret}} exactly once"),
            "write for example value = \"token {secret}\"",
        );
        return None;
    }
    if text.bytes().any(|b| b.is_ascii_control()) {
        checker.error(
            value,
            "the header value template contains a control character",
        );
        return None;
    }
    Some(HeaderTemplate {
        prefix: parts[0].to_string(),
        suffix: parts[1].to_string(),
    })
}

fn build_token_locations(
    checker: &mut Checker<'_>,
    raw: &[Spanned<RawTokenLocation>],
) -> Vec<TokenLocation> {
    let mut locations = Vec::new();
    for item in raw {
        let location = match item.get_ref() {
            RawTokenLocation::Query { query } if !query.is_empty() => {
                TokenLocation::Query(query.clone())
            }
            RawTokenLocation::Query { .. } => {
                checker.error(item, "the query parameter name is empty");
                continue;
            }
            RawTokenLocation::Header(header) => match header.to_ascii_lowercase().as_str() {
                "authorization" => TokenLocation::Authorization,
                "x-api-key" => TokenLocation::XApiKey,
                "api-key" => TokenLocation::ApiKey,
                "x-goog-api-key" => TokenLocation::XGoogApiKey,
                _ => {
                    checker.error_with_hint(
                        item,
                        format!("unknown agent token location {header:?}"),
                        "use \"authorization\", \"x-api-key\", \"api-key\", \"x-goog-api-key\" or { query = \"NAME\" }",
                    );
                    continue;
                }
            },
        };
        if !locations.contains(&location) {
            locations.push(location);
        }
    }
    if locations.is_empty() && raw.is_empty() {
        // An explicit empty list would lock every agent out of the connection.
        return DEFAULT_TOKEN_LOCATIONS.to_vec();
    }
    locations
}

fn parse_duration(checker: &mut Checker<'_>, value: &Spanned<String>) -> Option<Duration> {
    match humantime::parse_duration(value.get_ref()) {
        Ok(duration) if !duration.is_zero() => Some(duration),
        Ok(_) => {
            checker.error(value, "a timeout of zero would fail every request");
            None
        }
        Err(error) => {
            checker.error_with_hint(
                value,
                format!("invalid duration {:?}: {error}", value.get_ref()),
                "write a duration such as \"10s\", \"2m\" or \"1h 30m\"",
            );
            None
        }
    }
}

/// Connection names that rules may refer to.
struct KnownConnections<'a> {
    names: &'a [String],
    /// Connections with `case_insensitive_paths = true`, whose rule patterns
    /// are folded to lower case.
    case_insensitive: &'a [String],
}

fn build_role(
    checker: &mut Checker<'_>,
    name: &str,
    raw: RawRole,
    connections: &KnownConnections<'_>,
) -> Role {
    let mut role = Role {
        name: name.to_string(),
        allow: Vec::new(),
        deny: Vec::new(),
    };
    for (effect, rules) in [(RuleEffect::Allow, raw.allow), (RuleEffect::Deny, raw.deny)] {
        for (index, rule) in rules.into_iter().enumerate() {
            let id = RuleId {
                role: name.to_string(),
                effect,
                index,
            };
            if let Some(built) = build_rule(checker, id, rule, connections) {
                match effect {
                    RuleEffect::Allow => role.allow.push(built),
                    RuleEffect::Deny => role.deny.push(built),
                }
            }
        }
    }
    role
}

fn build_rule(
    checker: &mut Checker<'_>,
    id: RuleId,
    raw: Spanned<RawRule>,
    connections: &KnownConnections<'_>,
) -> Option<Rule> {
    let location = checker.at(&raw);
    let rule = raw.into_inner();
    let connection = rule.connection.get_ref();
    let mut valid = true;
    if !connections.names.contains(connection) {
        let hint = match closest(connection, connections.names.iter().map(String::as_str)) {
            Some(near) => {
                format!("did you mean {near:?}? Declare connections under [connections.NAME]")
            }
            None => "declare it under [connections.NAME] first".to_string(),
        };
        checker.error_with_hint(
            &rule.connection,
            format!("rule {id} names undefined connection {connection:?}"),
            hint,
        );
        valid = false;
    }
    // Allow rules must list their methods and paths: an omission must not
    // grant everything. Deny rules default to everything, which is safe.
    let methods = match &rule.methods {
        Some(methods) => build_methods(checker, &id, methods),
        None if id.effect == RuleEffect::Deny => Some(MethodSet::Any),
        None => {
            checker.error_with_hint(
                &rule.connection,
                format!("allow rule {id} has no methods"),
                "add methods = [\"GET\"] (or [\"*\"] for every method)",
            );
            None
        }
    };
    let fold = connections.case_insensitive.contains(connection);
    let paths = match &rule.paths {
        Some(paths) => build_paths(checker, &id, paths, fold),
        None if id.effect == RuleEffect::Deny => PathPattern::parse("/**").ok().map(|p| vec![p]),
        None => {
            checker.error_with_hint(
                &rule.connection,
                format!("allow rule {id} has no paths"),
                "add paths = [\"/v1/**\"] (or [\"/**\"] for every path)",
            );
            None
        }
    };
    if !valid {
        return None;
    }
    Some(Rule {
        connection: connection.clone(),
        methods: methods?,
        paths: paths?,
        location,
        id,
    })
}

fn build_methods(
    checker: &mut Checker<'_>,
    id: &RuleId,
    raw: &Spanned<Vec<Spanned<String>>>,
) -> Option<MethodSet> {
    if raw.get_ref().is_empty() {
        checker.error_with_hint(
            raw,
            format!("rule {id} has an empty methods list"),
            "list methods such as [\"GET\"], or [\"*\"] for every method",
        );
        return None;
    }
    let listed = raw.get_ref();
    if let Some(any) = listed.iter().find(|method| method.get_ref() == "*") {
        if listed.len() == 1 {
            return Some(MethodSet::Any);
        }
        // A `*` among named methods widens the rule to every method, which
        // a reader of the list would not expect.
        checker.error_with_hint(
            any,
            format!("rule {id} lists \"*\" together with other methods, so it covers every method"),
            "write [\"*\"] alone for every method, or list only the methods the rule needs",
        );
        return None;
    }
    let mut methods = Vec::new();
    let mut valid = true;
    for method in listed {
        let text = method.get_ref();
        if text.is_empty()
            || !text
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
        {
            let hint = if text.bytes().any(|b| b.is_ascii_lowercase()) {
                format!(
                    "HTTP methods are case-sensitive; write {:?}",
                    text.to_ascii_uppercase()
                )
            } else {
                "write methods in upper case, such as \"GET\" or \"POST\"".to_string()
            };
            checker.error_with_hint(
                method,
                format!("invalid HTTP method {text:?} in rule {id}"),
                hint,
            );
            valid = false;
            continue;
        }
        if !methods.contains(text) {
            methods.push(text.clone());
        }
    }
    valid.then_some(MethodSet::Only(methods))
}

fn build_paths(
    checker: &mut Checker<'_>,
    id: &RuleId,
    raw: &Spanned<Vec<Spanned<String>>>,
    fold: bool,
) -> Option<Vec<PathPattern>> {
    if raw.get_ref().is_empty() {
        checker.error_with_hint(
            raw,
            format!("rule {id} has an empty paths list"),
            "list patterns such as [\"/v1/**\"]",
        );
        return None;
    }
    let mut patterns = Vec::new();
    for pattern in raw.get_ref() {
        let parsed = PathPattern::parse(pattern.get_ref()).and_then(|parsed| {
            if fold {
                parsed.case_folded()
            } else {
                Ok(parsed)
            }
        });
        match parsed {
            Ok(parsed) => patterns.push(parsed),
            Err(error) => checker.error_with_hint(
                pattern,
                format!("invalid path pattern {:?} in rule {id}: {error}", pattern.get_ref()),
                "'*' matches one segment and '**' any number, as in \"/posts/*/comments\" or \"/v1/**\"",
            ),
        }
    }
    (patterns.len() == raw.get_ref().len()).then_some(patterns)
}

/// Reports each role of agent `agent_name` that is not declared in
/// `declared`, and each role listed more than once. Returns whether every
/// role is declared. A repeated role is reported but leaves the agent
/// usable, so the rest of its declaration is still checked.
fn check_agent_roles(
    checker: &mut Checker<'_>,
    agent_name: &str,
    agent_roles: &[Spanned<String>],
    declared: &[String],
) -> bool {
    let mut all_declared = true;
    for (index, role) in agent_roles.iter().enumerate() {
        if !declared.contains(role.get_ref()) {
            let hint = match closest(role.get_ref(), declared.iter().map(String::as_str)) {
                Some(near) => format!("did you mean {near:?}? Declare roles under [roles.NAME]"),
                None => "declare it under [roles.NAME] first".to_string(),
            };
            checker.error_with_hint(
                role,
                format!(
                    "agent {agent_name:?} names undefined role {:?}",
                    role.get_ref()
                ),
                hint,
            );
            all_declared = false;
        }
        let repeated = agent_roles[..index]
            .iter()
            .any(|earlier| earlier.get_ref() == role.get_ref());
        if repeated {
            checker.error_with_hint(
                role,
                format!(
                    "agent {agent_name:?} lists role {:?} more than once",
                    role.get_ref()
                ),
                "remove the repeated entry from roles",
            );
        }
    }
    all_declared
}

/// Collects `items` into a vector without spare capacity.
///
/// Collecting a `Vec<Spanned<String>>` into a `Vec<String>` reuses the
/// source allocation, which is sized for the larger spanned values and for
/// the deserializer's growth. Each of the 10,000 agents of
/// `bench/scale.sh` kept 144 bytes for its role names that way, where one
/// to three names take 24 to 72.
fn exact_vec<T>(items: impl ExactSizeIterator<Item = T>) -> Vec<T> {
    let mut collected = Vec::with_capacity(items.len());
    collected.extend(items);
    collected
}

fn build_agent(
    checker: &mut Checker<'_>,
    name: &Spanned<String>,
    raw: Spanned<RawAgent>,
    roles: &[String],
    location: Location,
) -> Option<Agent> {
    let agent_name = name.get_ref();
    let raw_span = raw.span();
    let agent = raw.into_inner();
    let owner = match &agent.owner {
        Some(owner) if !owner.get_ref().trim().is_empty() => {
            Some(owner.get_ref().trim().to_string())
        }
        Some(owner) => {
            checker.error(owner, format!("agent {agent_name:?} has an empty owner"));
            None
        }
        None => {
            let at = Spanned::new(raw_span, ());
            checker.error_with_hint(
                &at,
                format!("agent {agent_name:?} has no owner"),
                "add owner = \"person@example.com\": every agent needs an accountable human",
            );
            None
        }
    };
    let mut valid = owner.is_some();
    valid &= check_agent_roles(checker, agent_name, &agent.roles, roles);
    let mut networks = Vec::new();
    for network in &agent.networks {
        match parse_network(network.get_ref()) {
            Ok(net) => networks.push(net),
            Err(error) => {
                checker.error_with_hint(
                    network,
                    format!(
                        "invalid network {:?} for agent {agent_name:?}: {error}",
                        network.get_ref()
                    ),
                    "write a CIDR such as \"10.0.0.0/8\" or \"fd00::/8\", or a single address",
                );
                valid = false;
            }
        }
    }
    let expires = match &agent.expires {
        None => None,
        Some(value) => match humantime::parse_rfc3339_weak(value.get_ref()) {
            Ok(time) => Some(time),
            Err(_) => match parse_date(value.get_ref()) {
                Some(time) => Some(time),
                None => {
                    checker.error_with_hint(
                        value,
                        format!(
                            "invalid expiry {:?} for agent {agent_name:?}",
                            value.get_ref()
                        ),
                        "write a UTC date \"2027-01-31\" or time \"2027-01-31T18:00:00Z\"",
                    );
                    valid = false;
                    None
                }
            },
        },
    };
    if !valid {
        return None;
    }
    networks.shrink_to_fit();
    let limits = build_agent_limits(checker, agent_name, &agent);
    let (token_file, token_lifetime) = response::build_token_file(
        checker,
        agent_name,
        agent.token_file.as_ref(),
        agent.token_lifetime.as_ref(),
    )?;
    let client_certificate = match &agent.client_certificate {
        None => None,
        Some(value) => match ClientIdentity::parse(value.get_ref()) {
            Ok(identity) => Some(identity),
            Err(problem) => {
                checker.error_with_hint(
                    value,
                    format!("invalid client_certificate for agent {agent_name:?}: {problem}"),
                    "write a SPIFFE ID \"spiffe://example.org/agent\" or a subject \"CN=agent.example.org\"",
                );
                return None;
            }
        },
    };
    Some(Agent {
        name: agent_name.clone(),
        owner: owner?,
        description: agent.description,
        roles: exact_vec(agent.roles.into_iter().map(Spanned::into_inner)),
        networks,
        expires,
        limits: limits?,
        client_certificate,
        token_file,
        token_lifetime,
        location,
    })
}

fn build_agent_limits(
    checker: &mut Checker<'_>,
    agent_name: &str,
    agent: &RawAgent,
) -> Option<AgentLimits> {
    let mut limits = AgentLimits::default();
    let mut valid = true;
    if let Some(value) = &agent.requests_per_minute {
        if *value.get_ref() == 0 {
            checker.error(value, format!("requests_per_minute of zero for agent {agent_name:?} would deny every request; suspend the agent instead"));
            valid = false;
        }
        limits.requests_per_minute = Some(*value.get_ref());
    }
    if let Some(value) = &agent.max_concurrent_requests {
        if *value.get_ref() == 0 {
            checker.error(value, format!("max_concurrent_requests of zero for agent {agent_name:?} would deny every request; suspend the agent instead"));
            valid = false;
        }
        limits.max_concurrent_requests = *value.get_ref();
    }
    valid.then_some(limits)
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(net) if net.network() != net.addr() => {
            return Err(format!(
                "host bits are set; did you mean \"{}\"?",
                net.trunc()
            ));
        }
        Ok(net) => net,
        Err(_) => text
            .parse::<std::net::IpAddr>()
            .map(IpNet::from)
            .map_err(|_| "not an IP address or CIDR".to_string())?,
    };
    Ok(unmap_ipv4(net))
}

/// Rewrites an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4
/// network it denotes, because source addresses are compared in IPv4 form.
fn unmap_ipv4(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else {
        return net;
    };
    match v6.addr().to_ipv4_mapped() {
        Some(v4) if v6.prefix_len() >= 96 => {
            ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4)
        }
        _ => net,
    }
}

/// Parses `YYYY-MM-DD` as midnight UTC.
fn parse_date(text: &str) -> Option<std::time::SystemTime> {
    if text.len() != 10 {
        return None;
    }
    humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()
}
