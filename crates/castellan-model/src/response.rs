//! Settings of detection and of the responses to alerts: the `[detect]`
//! table, `[webhooks.NAME]` tables and `[[responses]]` rules.

use std::path::PathBuf;
use std::time::Duration;

use crate::alert::{AlertKind, Severity};
use crate::diagnostic::Location;

/// Settings of the behaviour detectors, from the `[detect]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectSettings {
    /// MaxMind City database used to place source addresses. Impossible
    /// travel is not detected without one.
    pub geoip_database: Option<PathBuf>,
    /// Time after an agent's first request during which its baselines are
    /// learned and no "new behaviour" alert is raised.
    pub learning_period: Duration,
    /// Idle time after which an agent's next request raises a dormant agent
    /// alert.
    pub dormant_after: Duration,
    /// Speed in km/h above which two uses of one token count as impossible
    /// travel.
    pub max_travel_speed_kmh: u32,
    /// Distance in km under which two locations never count as impossible
    /// travel, because address geolocation is this imprecise.
    pub min_travel_distance_km: u32,
}

impl Default for DetectSettings {
    fn default() -> Self {
        DetectSettings {
            geoip_database: None,
            learning_period: Duration::from_secs(7 * 24 * 60 * 60),
            dormant_after: Duration::from_secs(30 * 24 * 60 * 60),
            max_travel_speed_kmh: 900,
            min_travel_distance_km: 500,
        }
    }
}

/// Body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// A JSON object with the alert's fields.
    #[default]
    Json,
    /// A Slack incoming-webhook message (`{"text": ...}`).
    Slack,
}

impl WebhookFormat {
    /// Returns the name used in `castellan.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        }
    }
}

/// Source of a webhook's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    /// A URL written in the configuration (`url`).
    Url(url::Url),
    /// Name of the vault entry that contains the URL (`url_secret`), for
    /// URLs that are credentials themselves, such as Slack's.
    Secret(String),
}

/// A named HTTP endpoint that receives alerts and reminders, from a
/// `[webhooks.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub name: String,
    pub target: WebhookTarget,
    pub format: WebhookFormat,
    /// Vault entry containing the HMAC-SHA256 key that signs each body;
    /// `None` for unsigned bodies.
    pub signing_secret: Option<String>,
    pub location: Location,
}

impl Webhook {
    /// Returns the vault entries the webhook reads: its URL secret and its
    /// signing secret, where set.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        let url = match &self.target {
            WebhookTarget::Secret(name) => Some(name.as_str()),
            WebhookTarget::Url(_) => None,
        };
        url.into_iter().chain(self.signing_secret.as_deref())
    }
}

/// Actions taken on matching alerts, from one `[[responses]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRule {
    /// Alert kinds the rule applies to; empty for every kind.
    pub kinds: Vec<AlertKind>,
    /// Lowest severity the rule applies to.
    pub min_severity: Severity,
    /// Names of the `[webhooks.*]` entries notified.
    pub webhooks: Vec<String>,
    /// Whether the alert's agent is suspended.
    pub suspend: bool,
    pub location: Location,
}

impl ResponseRule {
    /// Tells whether the rule applies to an alert of `kind` at `severity`.
    pub fn applies_to(&self, kind: AlertKind, severity: Severity) -> bool {
        severity >= self.min_severity && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kinds: Vec<AlertKind>, min_severity: Severity) -> ResponseRule {
        ResponseRule {
            kinds,
            min_severity,
            webhooks: Vec::new(),
            suspend: false,
            location: Location::default(),
        }
    }

    #[test]
    fn rule_without_kinds_applies_to_all() {
        let rule = rule(Vec::new(), Severity::Medium);
        for kind in AlertKind::ALL {
            assert!(rule.applies_to(kind, Severity::Medium), "{kind}");
            assert!(rule.applies_to(kind, Severity::Critical), "{kind}");
            assert!(!rule.applies_to(kind, Severity::Low), "{kind}");
        }
    }

    #[test]
    fn rule_with_kinds_applies_to_those() {
        let rule = rule(vec![AlertKind::CanaryToken], Severity::Low);
        assert!(rule.applies_to(AlertKind::CanaryToken, Severity::Low));
        assert!(!rule.applies_to(AlertKind::RateSpike, Severity::Critical));
    }

    #[test]
    fn webhook_lists_its_secrets() {
        let webhook = Webhook {
            name: "ops".into(),
            target: WebhookTarget::Secret("slack-url".into()),
            format: WebhookFormat::Slack,
            signing_secret: Some("signing".into()),
            location: Location::default(),
        };
        let names: Vec<&str> = webhook.secret_names().collect();
        assert_eq!(names, ["slack-url", "signing"]);
    }
}
