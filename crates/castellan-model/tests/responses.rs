//! The `[detect]`, `[webhooks.*]` and `[[responses]]` tables, the gateway's
//! reminder keys and agents' token files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use castellan_model::{
    AlertKind, Config, ConfigError, DetectSettings, Severity, WebhookFormat, WebhookTarget,
    DEFAULT_REMIND_BEFORE, DEFAULT_TOKEN_LIFETIME,
};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

const BASE: &str = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[roles.reader]
allow = [{ connection = "blog", methods = ["GET"], paths = ["/**"] }]
"#;

const FULL: &str = r#"
[gateway]
remind_before = "3d"
reminder_webhooks = ["ops", "chat", "ops"]

[detect]
geoip_database = "/var/lib/castellan/GeoLite2-City.mmdb"
learning_period = "14d"
dormant_after = "60d"
max_travel_speed_kmh = 1000
min_travel_distance_km = 0

[webhooks.ops]
url = "https://hooks.example.com/castellan"
signing_secret = "webhook-signing"

[webhooks.chat]
url_secret = "slack-webhook-url"
format = "slack"

[[responses]]
kinds = ["canary_token", "impossible_travel"]
min_severity = "high"
webhooks = ["ops"]
suspend = true

[[responses]]
webhooks = ["chat"]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
token_file = "/run/castellan/reader-bot.token"
token_lifetime = "12h"

[agents.plain-bot]
owner = "ops@example.com"
roles = ["reader"]
"#;

fn parse(extra: &str) -> Result<Config, ConfigError> {
    Config::parse(&format!("{BASE}{extra}"), Path::new("castellan.toml"))
}

fn errors(extra: &str) -> String {
    match parse(extra) {
        Ok(_) => panic!("configuration should be rejected:\n{extra}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn every_key_parses() {
    let config = parse(FULL).expect("valid configuration");

    assert_eq!(config.gateway.remind_before, 3 * DAY);
    assert_eq!(config.gateway.reminder_webhooks, ["ops", "chat"]);

    let detect = &config.detect;
    assert_eq!(
        detect.geoip_database.as_deref(),
        Some(Path::new("/var/lib/castellan/GeoLite2-City.mmdb"))
    );
    assert_eq!(detect.learning_period, 14 * DAY);
    assert_eq!(detect.dormant_after, 60 * DAY);
    assert_eq!(detect.max_travel_speed_kmh, 1000);
    assert_eq!(detect.min_travel_distance_km, 0);

    let ops = &config.webhooks["ops"];
    assert_eq!(ops.name, "ops");
    let WebhookTarget::Url(url) = &ops.target else {
        panic!("ops has a URL");
    };
    assert_eq!(url.as_str(), "https://hooks.example.com/castellan");
    assert_eq!(ops.format, WebhookFormat::Json);
    assert_eq!(ops.signing_secret.as_deref(), Some("webhook-signing"));
    let chat = &config.webhooks["chat"];
    assert_eq!(
        chat.target,
        WebhookTarget::Secret("slack-webhook-url".into())
    );
    assert_eq!(chat.format, WebhookFormat::Slack);
    assert_eq!(chat.signing_secret, None);

    assert_eq!(config.responses.len(), 2);
    let first = &config.responses[0];
    assert_eq!(
        first.kinds,
        [AlertKind::CanaryToken, AlertKind::ImpossibleTravel]
    );
    assert_eq!(first.min_severity, Severity::High);
    assert_eq!(first.webhooks, ["ops"]);
    assert!(first.suspend);
    assert_eq!(first.location.line, 29);
    let second = &config.responses[1];
    assert!(second.kinds.is_empty());
    assert_eq!(second.min_severity, Severity::Low);
    assert!(!second.suspend);
    assert!(second.applies_to(AlertKind::UnusualHours, Severity::Low));

    let reader = &config.agents["reader-bot"];
    assert_eq!(
        reader.token_file,
        Some(PathBuf::from("/run/castellan/reader-bot.token"))
    );
    assert_eq!(reader.token_lifetime, Duration::from_secs(12 * 60 * 60));
    let plain = &config.agents["plain-bot"];
    assert_eq!(plain.token_file, None);
    assert_eq!(plain.token_lifetime, DEFAULT_TOKEN_LIFETIME);
}

#[test]
fn defaults_without_tables() {
    let config = parse("").expect("valid configuration");
    assert_eq!(config.detect, DetectSettings::default());
    assert_eq!(config.detect.geoip_database, None);
    assert_eq!(config.detect.learning_period, 7 * DAY);
    assert_eq!(config.detect.dormant_after, 30 * DAY);
    assert_eq!(config.detect.max_travel_speed_kmh, 900);
    assert_eq!(config.detect.min_travel_distance_km, 500);
    assert!(config.webhooks.is_empty());
    assert!(config.responses.is_empty());
    assert_eq!(config.gateway.remind_before, DEFAULT_REMIND_BEFORE);
    assert!(config.gateway.reminder_webhooks.is_empty());
}

#[test]
fn secret_names_include_webhook_secrets() {
    let config = parse(FULL).expect("valid configuration");
    assert_eq!(
        config.secret_names(),
        ["blog-token", "slack-webhook-url", "webhook-signing"]
    );
}

/// Each case: the TOML added to the base, then fragments the error must
/// contain (the location first).
const INVALID: &[(&str, &[&str])] = &[
    (
        "[detect]\nlearning_period = \"soon\"",
        &[":10:", "invalid learning_period \"soon\"", "hint:"],
    ),
    (
        "[detect]\ndormant_after = \"0s\"",
        &[":10:", "dormant_after of zero"],
    ),
    (
        "[detect]\nmax_travel_speed_kmh = 0",
        &[":10:", "max_travel_speed_kmh of zero", "default is 900"],
    ),
    (
        "[detect]\ngeoip_database = \"\"",
        &[":10:", "geoip_database is empty"],
    ),
    (
        "[detect]\ngeoip = \"x\"",
        &["unknown field `geoip`", "hint:"],
    ),
    (
        "[webhooks.ops]\nurl = \"https://a.example\"\nurl_secret = \"hook\"",
        &[":11:", "webhook \"ops\" sets both url and url_secret"],
    ),
    (
        "[webhooks.ops]\nformat = \"json\"",
        &[":9:", "webhook \"ops\" has no url", "url_secret"],
    ),
    (
        "[webhooks.ops]\nurl = \"ftp://a.example/x\"",
        &[
            ":10:",
            "invalid url \"ftp://a.example/x\"",
            "use https or http",
        ],
    ),
    (
        "[webhooks.ops]\nurl = \"not a url\"",
        &[":10:", "invalid url \"not a url\"", "webhook \"ops\""],
    ),
    (
        "[webhooks.ops]\nurl = \"https://user:pw@a.example/x\"",
        &[":10:", "contains credentials", "url_secret"],
    ),
    (
        "[webhooks.ops]\nurl = \"https://a.example\"\nformat = \"xml\"",
        &[":11:", "invalid format \"xml\"", "\"slack\""],
    ),
    (
        "[webhooks.ops]\nurl_secret = \"Hook URL\"",
        &[":10:", "invalid secret name \"Hook URL\""],
    ),
    (
        "[webhooks.ops]\nurl = \"https://a.example\"\nsigning_secret = \"\"",
        &[":11:", "invalid secret name \"\""],
    ),
    (
        "[webhooks.Ops]\nurl = \"https://a.example\"",
        &[":9:", "invalid webhook name \"Ops\""],
    ),
    (
        "[webhooks.ops]\nurl = \"https://a.example\"\ntimeout = 3",
        &["unknown field `timeout`"],
    ),
    (
        "[[responses]]\nkinds = [\"travel\"]\nsuspend = true",
        &[
            ":10:",
            "invalid kind in responses[0]",
            "`travel`",
            "canary_token",
        ],
    ),
    (
        "[[responses]]\nkinds = []\nsuspend = true",
        &[":10:", "empty kinds list", "leave kinds out"],
    ),
    (
        "[[responses]]\nmin_severity = \"urgent\"\nsuspend = true",
        &[":10:", "invalid min_severity in responses[0]", "critical"],
    ),
    (
        "[webhooks.ops]\nurl = \"https://a.example\"\n[[responses]]\nwebhooks = [\"opz\"]",
        &[
            ":12:",
            "responses[0] names undefined webhook \"opz\"",
            "did you mean \"ops\"",
        ],
    ),
    (
        "[[responses]]\nmin_severity = \"high\"",
        &[":9:", "responses[0] takes no action", "suspend = true"],
    ),
    (
        "[[responses]]\nsuspend = true\nnotify = true",
        &["unknown field `notify`"],
    ),
    (
        "[gateway]\nreminder_webhooks = [\"ops\"]",
        &[
            ":10:",
            "reminder_webhooks names undefined webhook \"ops\"",
            "[webhooks.NAME]",
        ],
    ),
    (
        "[gateway]\nremind_before = \"0d\"",
        &[":10:", "remind_before of zero"],
    ),
    (
        "[agents.bot]\nowner = \"a@example.com\"\ntoken_lifetime = \"1h\"",
        &[":11:", "sets token_lifetime without token_file"],
    ),
    (
        "[agents.bot]\nowner = \"a@example.com\"\ntoken_file = \"/t\"\ntoken_lifetime = \"5m\"",
        &[":12:", "shorter than 10 minutes", "\"10m\""],
    ),
    (
        "[agents.bot]\nowner = \"a@example.com\"\ntoken_file = \"/t\"\ntoken_lifetime = \"daily\"",
        &[":12:", "invalid token_lifetime \"daily\""],
    ),
    (
        "[agents.bot]\nowner = \"a@example.com\"\ntoken_file = \" \"",
        &[":11:", "empty token_file"],
    ),
];

#[test]
fn invalid_settings_rejected() {
    for (extra, expected) in INVALID {
        let message = errors(extra);
        for fragment in *expected {
            assert!(
                message.contains(fragment),
                "error for {extra:?} lacks {fragment:?}:\n{message}"
            );
        }
    }
}

#[test]
fn token_lifetime_of_ten_minutes_accepted() {
    let config = parse(
        "[agents.bot]\nowner = \"a@example.com\"\ntoken_file = \"/t\"\ntoken_lifetime = \"10m\"",
    )
    .expect("valid configuration");
    assert_eq!(
        config.agents["bot"].token_lifetime,
        Duration::from_secs(600)
    );
}
