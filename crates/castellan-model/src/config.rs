//! The validated configuration: what the gateway and the policy engine use.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::diagnostic::Location;
use crate::path::{NormalizedPath, PathError};
use crate::pattern::PathPattern;
use crate::response::{DetectSettings, ResponseRule, Webhook};

/// A validated `castellan.toml`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub gateway: GatewaySettings,
    pub connections: BTreeMap<String, Connection>,
    pub roles: BTreeMap<String, Role>,
    pub agents: BTreeMap<String, Agent>,
    /// Settings of the behaviour detectors, from `[detect]`.
    pub detect: DetectSettings,
    /// Webhooks that alerts and rotation reminders are sent to, by name.
    pub webhooks: BTreeMap<String, Webhook>,
    /// Actions taken on alerts, in file order. Every alert is stored
    /// whether or not a rule applies to it.
    pub responses: Vec<ResponseRule>,
}

impl Config {
    /// Returns the vault entry names that connections and webhooks refer to,
    /// each once: connection credentials, webhook URLs kept in the vault
    /// (`url_secret`) and webhook signing keys.
    pub fn secret_names(&self) -> Vec<&str> {
        let connections = self
            .connections
            .values()
            .map(|connection| connection.secret.as_str());
        let webhooks = self.webhooks.values().flat_map(Webhook::secret_names);
        let mut names: Vec<&str> = connections.chain(webhooks).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Settings of the whole gateway, from the `[gateway]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Failed agent authentications allowed per source address and minute
    /// before that address gets 429 until the minute's budget refills.
    pub auth_failures_per_minute: u32,
    /// Owners who left the organization. `castellan findings` reports every
    /// agent they still own; the gateway does not use this list.
    pub departed_owners: Vec<String>,
    /// Rotation period of connections that set no `rotate_every`.
    pub rotate_every: Duration,
    /// How long after a rotation `castellan secret rollback` may restore
    /// the previous version.
    pub rotation_grace: Duration,
    /// How long before a secret's rotation is due the reminders start.
    pub remind_before: Duration,
    /// Names of the `[webhooks.*]` entries that rotation reminders are sent
    /// to; empty for none.
    pub reminder_webhooks: Vec<String>,
    /// When an agent may see the end of a response relative to the commit
    /// of its audit record.
    pub audit_durability: AuditDurability,
}

/// When the end of a response is released relative to the commit of its
/// audit record, from `[gateway] audit_durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditDurability {
    /// The record is queued and committed within about 10 ms, usually after
    /// the agent has its response. A killed gateway loses the records of
    /// requests that it responded to but had not yet committed.
    #[default]
    Batched,
    /// The final frame of each response waits until its record is
    /// committed. If the commit fails, the response is aborted (the
    /// connection is closed mid-body, or a response without a body becomes
    /// a 503), so no agent receives a complete response without a record.
    Strict,
}

impl AuditDurability {
    /// Returns the name used in `castellan.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDurability::Batched => "batched",
            AuditDurability::Strict => "strict",
        }
    }
}

impl GatewaySettings {
    /// Tells whether `owner` is listed in `departed_owners`, ignoring ASCII
    /// case and surrounding whitespace, as e-mail addresses are compared in
    /// practice.
    pub fn is_departed(&self, owner: &str) -> bool {
        let owner = owner.trim();
        self.departed_owners
            .iter()
            .any(|departed| departed.eq_ignore_ascii_case(owner))
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            auth_failures_per_minute: 10,
            departed_owners: Vec::new(),
            rotate_every: DEFAULT_ROTATE_EVERY,
            rotation_grace: DEFAULT_ROTATION_GRACE,
            remind_before: DEFAULT_REMIND_BEFORE,
            reminder_webhooks: Vec::new(),
            audit_durability: AuditDurability::Batched,
        }
    }
}

/// Default of `remind_before`: 7 days.
pub const DEFAULT_REMIND_BEFORE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Default of `rotate_every`: 30 days.
pub const DEFAULT_ROTATE_EVERY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Default of `rotation_grace`: 7 days.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Default of `max_request_bytes`: 16 MiB, room for model requests with
/// images while bounding what one request can push upstream.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;

/// A named upstream API with one origin and one credential.
#[derive(Debug, Clone)]
pub struct Connection {
    pub name: String,
    pub upstream: Upstream,
    pub auth: AuthMethod,
    /// Name of the vault entry that contains the credential.
    pub secret: String,
    /// Places where agents may put their castellan token on this connection.
    pub agent_token_in: Vec<TokenLocation>,
    pub timeouts: Timeouts,
    /// Extra PEM file of CA certificates trusted for this upstream, on top of
    /// the built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// Behaviour when the audit queue is full.
    pub on_audit_backlog: AuditFailure,
    /// Whether the upstream may resolve to loopback, private, link-local or
    /// metadata addresses. Off by default, so that a connection cannot be
    /// pointed at internal services.
    pub allow_private: bool,
    /// Largest request body forwarded; larger ones get 413.
    pub max_request_bytes: u64,
    /// Whether the upstream treats paths case-insensitively. When set, request
    /// paths and rule patterns are folded to lower case, so `/Admin` cannot
    /// slip past a rule about `/admin`.
    pub case_insensitive_paths: bool,
    /// Outbound data-loss check of request bodies.
    pub dlp: DataLossCheck,
    /// Maximum age of the secret's current version before rotation is due:
    /// the connection's `rotate_every`, or the `[gateway]` one.
    pub rotate_every: Duration,
    /// Program that creates a new upstream key, from the
    /// `[connections.NAME.rotation]` table.
    pub rotation: Option<RotationProvider>,
}

/// Default time limit of a rotation command and of its verify request.
pub const DEFAULT_ROTATION_TIMEOUT: Duration = Duration::from_secs(60);

/// An operator's program that rotates an upstream key, and how castellan
/// checks the new key before switching to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationProvider {
    /// Program and arguments; it prints the new key on stdout.
    pub command: Vec<String>,
    /// Method of the request that must succeed (2xx) with the new key.
    pub verify_method: String,
    /// Path of that request, relative to the connection's upstream.
    pub verify_path: String,
    /// Program and arguments that revoke the old key, which they read on
    /// stdin, once the rotation grace period has passed.
    pub revoke_command: Option<Vec<String>>,
    /// Time limit of each command and of the verify request.
    pub timeout: Duration,
}

/// Default of `dlp_max_bytes`: 4 MiB, room for chat requests with a few
/// images while bounding the memory the gateway uses per request.
pub const DEFAULT_DLP_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// The gateway's action when a request body carries a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DlpMode {
    /// Bodies are not scanned.
    #[default]
    Off,
    /// Bodies are scanned; a secret is recorded in the audit log and the
    /// request is still forwarded.
    Alert,
    /// Bodies are scanned; a request that carries a secret gets 403 and is
    /// not forwarded.
    Block,
}

impl DlpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DlpMode::Off => "off",
            DlpMode::Alert => "alert",
            DlpMode::Block => "block",
        }
    }
}

/// Settings of the outbound data-loss check on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLossCheck {
    pub mode: DlpMode,
    /// Largest body scanned. In block mode a larger body gets 413, because
    /// forwarding an unscanned tail would defeat the check. In alert mode
    /// only the first `max_bytes` are scanned.
    pub max_bytes: u64,
}

impl Default for DataLossCheck {
    fn default() -> Self {
        DataLossCheck {
            mode: DlpMode::Off,
            max_bytes: DEFAULT_DLP_MAX_BYTES,
        }
    }
}

impl Connection {
    /// Normalizes a request path as the gateway forwards it on this
    /// connection: canonical form, folded to lower case when the connection
    /// declares `case_insensitive_paths`.
    pub fn normalize_path(&self, raw: &str) -> Result<NormalizedPath, PathError> {
        let path = NormalizedPath::parse(raw)?;
        if self.case_insensitive_paths {
            path.case_folded()
        } else {
            Ok(path)
        }
    }
}

/// The fixed destination of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `https` or `http`.
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path prefix that every forwarded path goes under, without a trailing
    /// slash; empty for none.
    pub base_path: String,
}

impl Upstream {
    /// Returns `scheme://host:port`, the authority part in URL form.
    pub fn origin(&self) -> String {
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => self.host.clone(),
        };
        format!("{}://{}:{}", self.scheme, host, self.port)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.base_path)
    }
}

/// Method of attaching the credential to forwarded requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// A named header, with the value built from a template.
    Header {
        name: String,
        template: HeaderTemplate,
    },
    /// `Authorization: Basic`, with the secret as the password when a user
    /// name is configured, or as `user:password` otherwise.
    Basic { username: Option<String> },
    /// A query parameter.
    Query { name: String },
}

impl AuthMethod {
    /// Returns the short name used in configuration and inventories.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthMethod::Bearer => "bearer",
            AuthMethod::Header { .. } => "header",
            AuthMethod::Basic { .. } => "basic",
            AuthMethod::Query { .. } => "query",
        }
    }
}

/// A header value template such as `token {secret}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTemplate {
    pub prefix: String,
    pub suffix: String,
}

impl HeaderTemplate {
    /// Returns the template `{secret}`, which sends the bare secret.
    pub fn bare() -> Self {
        HeaderTemplate {
            prefix: String::new(),
            suffix: String::new(),
        }
    }

    /// Builds the header value around `secret`.
    pub fn render(&self, secret: &str) -> String {
        let mut value = String::with_capacity(self.prefix.len() + secret.len() + self.suffix.len());
        value.push_str(&self.prefix);
        value.push_str(secret);
        value.push_str(&self.suffix);
        value
    }
}

/// A place where an agent may put its castellan token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenLocation {
    /// `Authorization: Bearer <token>`.
    Authorization,
    /// The `x-api-key` header (Anthropic's SDKs and many others).
    XApiKey,
    /// The `api-key` header (Azure OpenAI).
    ApiKey,
    /// The `x-goog-api-key` header (Google's SDKs).
    XGoogApiKey,
    /// A query parameter with this name.
    Query(String),
}

/// Places the gateway searches for agent tokens when a connection sets none.
pub const DEFAULT_TOKEN_LOCATIONS: [TokenLocation; 4] = [
    TokenLocation::Authorization,
    TokenLocation::XApiKey,
    TokenLocation::ApiKey,
    TokenLocation::XGoogApiKey,
];

impl TokenLocation {
    /// Returns the header name, or `None` for a query parameter.
    pub fn header_name(&self) -> Option<&'static str> {
        match self {
            TokenLocation::Authorization => Some("authorization"),
            TokenLocation::XApiKey => Some("x-api-key"),
            TokenLocation::ApiKey => Some("api-key"),
            TokenLocation::XGoogApiKey => Some("x-goog-api-key"),
            TokenLocation::Query(_) => None,
        }
    }
}

impl fmt::Display for TokenLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenLocation::Query(name) => write!(f, "query parameter {name}"),
            other => f.write_str(other.header_name().unwrap_or_default()),
        }
    }
}

/// Per-connection time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Limit for opening a connection to the upstream, TLS included.
    pub connect: Duration,
    /// Limit from sending the request to receiving the response headers,
    /// and for each pause between the frames of a streamed response body.
    /// Under strict audit durability, a body of declared length up to
    /// 64 KiB is read before the response is sent, and gets this limit
    /// again, counted from the headers.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            response: Duration::from_secs(300),
        }
    }
}

/// Behaviour of the gateway when the audit queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditFailure {
    /// Reject the request with 503: no call goes unrecorded.
    #[default]
    Closed,
    /// Forward the request and count the missing record in metrics and logs.
    Open,
}

/// A named set of permissions.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

/// Whether a rule grants or forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleEffect {
    Allow,
    Deny,
}

/// Identifies one rule: `roles.<role>.<allow|deny>[<index>]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleId {
    pub role: String,
    pub effect: RuleEffect,
    pub index: usize,
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let effect = match self.effect {
            RuleEffect::Allow => "allow",
            RuleEffect::Deny => "deny",
        };
        write!(f, "roles.{}.{}[{}]", self.role, effect, self.index)
    }
}

/// One allow or deny rule of a role.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: RuleId,
    pub connection: String,
    pub methods: MethodSet,
    pub paths: Vec<PathPattern>,
    /// Position of the rule in the file, for explanations.
    pub location: Location,
}

/// The HTTP methods a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodSet {
    /// Every method (`["*"]`).
    Any,
    /// These methods, upper case, without duplicates.
    Only(Vec<String>),
}

impl MethodSet {
    pub fn contains(&self, method: &str) -> bool {
        match self {
            MethodSet::Any => true,
            MethodSet::Only(methods) => methods.iter().any(|m| m == method),
        }
    }
}

/// A non-human identity that calls upstream APIs through the gateway.
#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    /// The human accountable for the agent.
    pub owner: String,
    pub description: Option<String>,
    pub roles: Vec<String>,
    /// Source networks the agent may call from; empty means any address the
    /// listener accepts.
    pub networks: Vec<IpNet>,
    /// When the agent stops being accepted.
    pub expires: Option<SystemTime>,
    pub limits: AgentLimits,
    /// A client certificate identity that authenticates this agent on a
    /// listener that requests client certificates, instead of a token.
    pub client_certificate: Option<ClientIdentity>,
    /// File in which castellan keeps a fresh token for the agent, replaced
    /// before the previous one expires; `None` when tokens are issued by
    /// hand.
    pub token_file: Option<PathBuf>,
    /// Lifetime of each token written to `token_file`. Parsed only with a
    /// `token_file`; otherwise it is [`DEFAULT_TOKEN_LIFETIME`] and unused.
    pub token_lifetime: Duration,
    pub location: Location,
}

/// Default of `token_lifetime`: 24 hours.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Shortest `token_lifetime` accepted: 10 minutes, so that a file token
/// does not expire before the agent has read it.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 60);

impl Agent {
    /// Tells whether a call from `source` is inside the agent's networks.
    pub fn allows_source(&self, source: IpAddr) -> bool {
        let source = canonical_ip(source);
        self.networks.is_empty() || self.networks.iter().any(|net| net.contains(&source))
    }

    /// Tells whether the agent has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|expires| now >= expires)
    }
}

/// Request limits of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimits {
    /// Requests per minute, with bursts up to this number; `None` for no
    /// limit.
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at once, response bodies included.
    pub max_concurrent_requests: u32,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            requests_per_minute: None,
            max_concurrent_requests: 64,
        }
    }
}

/// Identity in a client certificate that names an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// A SPIFFE ID in the certificate's URI subject alternative names.
    SpiffeId(String),
    /// The certificate subject's common name.
    CommonName(String),
}

impl ClientIdentity {
    /// Parses `spiffe://trust-domain/path` or `CN=name`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("spiffe://") {
            let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
            if domain.is_empty() || path.is_empty() {
                return Err(format!("{text:?} needs a trust domain and a path"));
            }
            return Ok(ClientIdentity::SpiffeId(text.to_string()));
        }
        if let Some(name) = text.strip_prefix("CN=") {
            if name.is_empty() {
                return Err("the common name is empty".into());
            }
            return Ok(ClientIdentity::CommonName(name.to_string()));
        }
        Err(format!("{text:?} is neither a SPIFFE ID nor CN=NAME"))
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientIdentity::SpiffeId(id) => f.write_str(id),
            ClientIdentity::CommonName(name) => write!(f, "CN={name}"),
        }
    }
}

/// Maps IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) to IPv4, so that a
/// dual-stack listener's peers match IPv4 networks.
pub fn canonical_ip(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}
