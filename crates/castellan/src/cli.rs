//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Data directory used when neither --data-dir nor CASTELLAN_DATA_DIR is set.
pub const DEFAULT_DATA_DIR: &str = "./castellan-data";

#[derive(Debug, Parser)]
#[command(
    name = "castellan",
    version,
    about = "The keeper of the keys for AI agents: a checkpoint that authenticates agents, authorizes each call, injects the real credential and audits everything"
)]
pub struct Cli {
    /// Data directory: store, vault key and configuration.
    #[arg(
        long,
        global = true,
        env = "CASTELLAN_DATA_DIR",
        default_value = "./castellan-data"
    )]
    pub data_dir: PathBuf,

    /// Configuration file [default: DATA_DIR/castellan.toml].
    #[arg(long, global = true, env = "CASTELLAN_CONFIG")]
    pub config: Option<PathBuf>,

    /// File holding the vault passphrase, for data directories created with
    /// `init --passphrase`; without it the passphrase is prompted for.
    #[arg(long, global = true, env = "CASTELLAN_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,

    /// Log as JSON lines instead of text (logs go to stderr).
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data directory: store, vault master key and an example configuration.
    Init(InitArgs),
    /// Run the checkpoint.
    Serve(ServeArgs),
    /// Validate the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect authorization decisions.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage upstream credentials in the vault.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Show which secrets are due for rotation.
    #[command(subcommand)]
    Rotation(RotationCommand),
    /// Manage agents: tokens, suspension.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Read the audit log and the log of administrative changes.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List alerts raised by the behaviour detectors, newest first; show,
    /// acknowledge or resolve one.
    Alerts(AlertsArgs),
    /// Find hard-coded secrets in files, git history or standard input.
    Scan(ScanArgs),
    /// List agents, connections and their usage over 1, 7 and 30 days.
    Inventory(InventoryArgs),
    /// Report posture problems of agents, tokens, secrets, connections and
    /// rules, with their OWASP Non-Human Identities Top 10 category.
    /// Exit status 1 when one is of high severity or above.
    Findings(FindingsArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Derive the master key from a passphrase (Argon2id) instead of a key file.
    #[arg(long)]
    pub passphrase: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the agent listener.
    #[arg(long, default_value = "127.0.0.1:8750")]
    pub listen: SocketAddr,

    /// Address of the admin listener (health and metrics).
    #[arg(long, default_value = "127.0.0.1:8751")]
    pub admin_listen: SocketAddr,

    /// Allow listeners on public addresses. Without it only loopback and
    /// private addresses are accepted.
    #[arg(long)]
    pub allow_public_bind: bool,

    /// PEM certificate chain for TLS on the agent listener (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates for client certificates; agents whose
    /// client_certificate matches a verified certificate need no token.
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,

    /// Reject TLS handshakes without a client certificate.
    #[arg(long, requires = "client_ca")]
    pub require_client_cert: bool,

    /// Maximum number of audit records waiting to be written. When it is
    /// reached, connections with on_audit_backlog = "closed" (the default)
    /// reject requests with 503 until the store catches up.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..))]
    pub audit_queue_capacity: u32,

    /// Development mode: a throwaway data directory, a built-in echo
    /// upstream, an example agent and its token.
    #[arg(long)]
    pub dev: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration and report every problem with its line and column.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the decision for a request and the rule that made it, without sending anything.
    Explain(ExplainArgs),
    /// Print a tightened role for an agent, derived from the requests it was
    /// allowed to make, and what it would remove. Never writes the configuration.
    Suggest(SuggestArgs),
}

#[derive(Debug, Args)]
pub struct SuggestArgs {
    pub agent: String,
    /// Number of days of allowed requests the role is derived from.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Name of the agent that would send the request.
    pub agent: String,
    /// HTTP method in upper case, as the gateway requires, such as GET.
    pub method: String,
    /// `/connection/path` or a full gateway URL.
    pub url: String,
    /// Source address the request would come from.
    #[arg(long, default_value = "127.0.0.1")]
    pub source: std::net::IpAddr,
    /// Also print the generated Cedar policy of the deciding rule.
    #[arg(long)]
    pub cedar: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a new version of a secret, read from a no-echo prompt or stdin.
    Set { name: String },
    /// List secrets: names, versions and ages, never values.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Store a new version of an existing secret, read from a no-echo prompt
    /// or stdin. Running gateways switch to it within a second.
    Rotate {
        name: String,
        /// Take the new value from the connection's rotation command instead,
        /// and store it only after its verify request succeeds.
        #[arg(long)]
        command: bool,
    },
    /// Make the previous version current again by storing its value as a new
    /// version. Allowed within rotation_grace of the current version.
    Rollback { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RotationCommand {
    /// List every secret with its version, age, rotation period, due time
    /// and state: ok, due soon (within [gateway] remind_before, 7 days by
    /// default), overdue, missing or unused.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print only secrets that need attention. Exit status 1 when one is
    /// overdue or missing, 0 otherwise, 2 on error.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Manage agent tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Deny every request of an agent until it is resumed.
    Suspend {
        agent: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a suspension.
    Resume { agent: String },
    /// List declared agents with their status.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; it is printed once and only its hash is stored.
    Issue {
        agent: String,
        /// Lifetime such as `30d` or `12h`; `never` for no expiry. Default
        /// 30d, or never for a canary token.
        #[arg(long)]
        ttl: Option<String>,
        /// Make a canary token: it grants nothing, and any use of it raises
        /// a critical `canary_token` alert with the caller's address. The
        /// agent name may be a decoy that the configuration does not declare.
        #[arg(long)]
        canary: bool,
    },
    /// List tokens (ids, agents, ages; never the tokens).
    List {
        agent: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest audit records, optionally following new ones.
    Tail(TailArgs),
    /// List administrative changes: suspensions, secret rotations and
    /// rollbacks, alert acknowledgements and automatic responses.
    Events(EventsArgs),
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Number of the newest events to print.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// One JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub command: Option<AlertsCommand>,
    /// Only open and acknowledged alerts.
    #[arg(long)]
    pub open: bool,
    /// One JSON array with every field of each alert.
    #[arg(long)]
    pub json: bool,
    /// Maximum number of alerts listed.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Print every field of one alert, evidence and sources included.
    Show {
        id: i64,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Mark an alert as seen; new signals still fold into it.
    Ack { id: i64 },
    /// Close an alert; the next signal of its kind and subject opens a new one.
    Resolve { id: i64 },
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Number of records to print first.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: u32,
    /// Keep printing new records as they are written.
    #[arg(short, long)]
    pub follow: bool,
    /// Only records of this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or directories to scan, or `-` for standard input [default: .].
    pub paths: Vec<PathBuf>,
    /// Scan every commit of the git history of each PATH instead of its files.
    #[arg(long)]
    pub git: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ScanFormat::Table)]
    pub format: ScanFormat,
    /// Baseline file: findings it lists are not reported.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Write every current finding to the --baseline file instead of reporting.
    #[arg(long, requires = "baseline")]
    pub update_baseline: bool,
    /// Extra rules (Castellan or gitleaks TOML format), added to the built-in ones.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Only scan files matching this glob (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Skip files and directories matching this glob (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = castellan_scan::DEFAULT_MAX_FILE_SIZE)]
    pub max_file_size: u64,
    /// Offer to store each finding as a vault secret, under a name typed at
    /// a prompt; values are never printed.
    #[arg(long, conflicts_with = "update_baseline")]
    pub import: bool,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// One JSON document (its schema is in docs/inventory.md).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// One CSV table, a row per agent, connection and usage entry.
    #[arg(long)]
    pub csv: bool,
    /// Report as of a later time: an RFC 3339 time or date, or `+DURATION`
    /// such as `+30d`. Ages, expiries and usage windows end there.
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
}

#[derive(Debug, Args)]
pub struct FindingsArgs {
    /// One JSON document (its schema is in docs/inventory.md).
    #[arg(long)]
    pub json: bool,
    /// Report as of a later time: an RFC 3339 time or date, or `+DURATION`
    /// such as `+30d`, to see what will be stale by then.
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
}

/// Output formats of `castellan scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Table,
    Json,
    Sarif,
}
