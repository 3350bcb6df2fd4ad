//! Parsing of the `[detect]` table, `[webhooks.NAME]` tables and
//! `[[responses]]` rules.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{parse_period, Checker, Map};
use crate::alert::{AlertKind, Severity};
use crate::names::closest;
use crate::response::{DetectSettings, ResponseRule, Webhook, WebhookFormat, WebhookTarget};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDetect {
    geoip_database: Option<Spanned<String>>,
    learning_period: Option<Spanned<String>>,
    dormant_after: Option<Spanned<String>>,
    max_travel_speed_kmh: Option<Spanned<u32>>,
    min_travel_distance_km: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: Option<Spanned<String>>,
    url_secret: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    signing_secret: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResponse {
    kinds: Option<Spanned<Vec<Spanned<String>>>>,
    min_severity: Option<Spanned<String>>,
    #[serde(default)]
    webhooks: Vec<Spanned<String>>,
    #[serde(default)]
    suspend: bool,
}

pub(super) fn build_detect(checker: &mut Checker<'_>, raw: &RawDetect) -> DetectSettings {
    let mut settings = DetectSettings::default();
    if let Some(path) = &raw.geoip_database {
        if path.get_ref().trim().is_empty() {
            checker.error_with_hint(
                path,
                "geoip_database is empty",
                "give the path of a GeoLite2-City or GeoIP2-City .mmdb file, or leave the key out to turn impossible travel detection off",
            );
        } else {
            settings.geoip_database = Some(path.get_ref().into());
        }
    }
    if let Some(value) = &raw.learning_period {
        settings.learning_period =
            parse_period(checker, "learning_period", value).unwrap_or(settings.learning_period);
    }
    if let Some(value) = &raw.dormant_after {
        settings.dormant_after =
            parse_period(checker, "dormant_after", value).unwrap_or(settings.dormant_after);
    }
    if let Some(value) = &raw.max_travel_speed_kmh {
        if *value.get_ref() == 0 {
            checker.error_with_hint(
                value,
                "max_travel_speed_kmh of zero would flag every change of location",
                "use the speed of a fast journey; the default is 900, an airliner's",
            );
        } else {
            settings.max_travel_speed_kmh = *value.get_ref();
        }
    }
    if let Some(value) = &raw.min_travel_distance_km {
        settings.min_travel_distance_km = *value.get_ref();
    }
    settings
}

pub(super) fn build_webhooks(
    checker: &mut Checker<'_>,
    raw: Map<RawWebhook>,
) -> BTreeMap<String, Webhook> {
    let mut webhooks = BTreeMap::new();
    for (name, webhook) in raw {
        checker.check_name("webhook", &name, name.get_ref());
        if let Some(built) = build_webhook(checker, &name, webhook) {
            webhooks.insert(name.into_inner(), built);
        }
    }
    webhooks
}

fn build_webhook(
    checker: &mut Checker<'_>,
    name: &Spanned<String>,
    raw: Spanned<RawWebhook>,
) -> Option<Webhook> {
    let webhook_name = name.get_ref();
    let table = Spanned::new(raw.span(), ());
    let raw = raw.into_inner();
    let target = match (&raw.url, &raw.url_secret) {
        (Some(url), None) => parse_webhook_url(checker, webhook_name, url).map(WebhookTarget::Url),
        (None, Some(secret)) => {
            checker.check_name("secret", secret, secret.get_ref());
            Some(WebhookTarget::Secret(secret.get_ref().clone()))
        }
        (Some(_), Some(secret)) => {
            checker.error_with_hint(
                secret,
                format!("webhook {webhook_name:?} sets both url and url_secret"),
                "keep url for a URL that may be read in the file, or url_secret for the name of a vault entry that contains it",
            );
            None
        }
        (None, None) => {
            checker.error_with_hint(
                &table,
                format!("webhook {webhook_name:?} has no url"),
                "add url = \"https://hooks.example.com/castellan\", or url_secret = \"NAME\" for a URL stored with `castellan secret set NAME`",
            );
            None
        }
    };
    let format = match raw.format.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "json")) => WebhookFormat::Json,
        Some((_, "slack")) => WebhookFormat::Slack,
        Some((value, other)) => {
            checker.error_with_hint(
                value,
                format!("invalid format {other:?} for webhook {webhook_name:?}"),
                "use \"json\" (the default) or \"slack\"",
            );
            WebhookFormat::Json
        }
    };
    if let Some(secret) = &raw.signing_secret {
        checker.check_name("secret", secret, secret.get_ref());
    }
    Some(Webhook {
        name: webhook_name.clone(),
        target: target?,
        format,
        signing_secret: raw.signing_secret.map(Spanned::into_inner),
        location: checker.at(name),
    })
}

fn parse_webhook_url(
    checker: &mut Checker<'_>,
    webhook: &str,
    raw: &Spanned<String>,
) -> Option<url::Url> {
    let text = raw.get_ref();
    let problem = match url::Url::parse(text) {
        Err(error) => error.to_string(),
        Ok(url) if !matches!(url.scheme(), "https" | "http") => {
            format!(
                "scheme {:?} is not supported; use https or http",
                url.scheme()
            )
        }
        Ok(url) if url.host_str().is_none() => "the URL has no host".to_string(),
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            // More people can read the file than the vault, so the message
            // points to the vault and does not repeat the URL.
            checker.error_with_hint(
                raw,
                format!("the url of webhook {webhook:?} contains credentials"),
                "store the URL with `castellan secret set NAME` and write url_secret = \"NAME\" instead",
            );
            return None;
        }
        Ok(url) => return Some(url),
    };
    checker.error_with_hint(
        raw,
        format!("invalid url {text:?} for webhook {webhook:?}: {problem}"),
        "write a URL such as \"https://hooks.example.com/castellan\"",
    );
    None
}

pub(super) fn build_responses(
    checker: &mut Checker<'_>,
    raw: Vec<Spanned<RawResponse>>,
    webhooks: &BTreeMap<String, Webhook>,
) -> Vec<ResponseRule> {
    let mut rules = Vec::new();
    for (index, rule) in raw.into_iter().enumerate() {
        if let Some(built) = build_response(checker, index, rule, webhooks) {
            rules.push(built);
        }
    }
    rules
}

fn build_response(
    checker: &mut Checker<'_>,
    index: usize,
    raw: Spanned<RawResponse>,
    webhooks: &BTreeMap<String, Webhook>,
) -> Option<ResponseRule> {
    let location = checker.at(&raw);
    let table = Spanned::new(raw.span(), ());
    let raw = raw.into_inner();
    let mut valid = true;

    let mut kinds = Vec::new();
    if let Some(list) = &raw.kinds {
        if list.get_ref().is_empty() {
            checker.error_with_hint(
                list,
                format!("responses[{index}] has an empty kinds list"),
                "leave kinds out to apply the rule to every kind, or list kinds such as [\"canary_token\"]",
            );
            valid = false;
        }
        for kind in list.get_ref() {
            match kind.get_ref().parse::<AlertKind>() {
                Ok(kind) if kinds.contains(&kind) => {}
                Ok(kind) => kinds.push(kind),
                Err(error) => {
                    checker.error(kind, format!("invalid kind in responses[{index}]: {error}"));
                    valid = false;
                }
            }
        }
    }
    let min_severity = match &raw.min_severity {
        None => Severity::Low,
        Some(value) => match value.get_ref().parse::<Severity>() {
            Ok(severity) => severity,
            Err(error) => {
                checker.error(
                    value,
                    format!("invalid min_severity in responses[{index}]: {error}"),
                );
                valid = false;
                Severity::Low
            }
        },
    };

    let names = check_webhook_names(
        checker,
        &format!("responses[{index}]"),
        &raw.webhooks,
        webhooks,
    );
    if names.is_none() {
        valid = false;
    }
    if raw.webhooks.is_empty() && !raw.suspend {
        checker.error_with_hint(
            &table,
            format!("responses[{index}] takes no action"),
            "add webhooks = [\"NAME\"] or suspend = true; every alert is stored without a rule",
        );
        valid = false;
    }
    if !valid {
        return None;
    }
    Some(ResponseRule {
        kinds,
        min_severity,
        webhooks: names?,
        suspend: raw.suspend,
        location,
    })
}

/// Checks that every name in `raw` is a declared webhook; returns the names
/// without duplicates, or `None` after reporting an undefined one.
pub(super) fn check_webhook_names(
    checker: &mut Checker<'_>,
    owner: &str,
    raw: &[Spanned<String>],
    webhooks: &BTreeMap<String, Webhook>,
) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut valid = true;
    for name in raw {
        let text = name.get_ref();
        if webhooks.contains_key(text) {
            if !names.contains(text) {
                names.push(text.clone());
            }
            continue;
        }
        let hint = match closest(text, webhooks.keys().map(String::as_str)) {
            Some(near) => format!("did you mean {near:?}? Declare webhooks under [webhooks.NAME]"),
            None => "declare it under [webhooks.NAME] first".to_string(),
        };
        checker.error_with_hint(
            name,
            format!("{owner} names undefined webhook {text:?}"),
            hint,
        );
        valid = false;
    }
    valid.then_some(names)
}

/// Parses an agent's `token_file` and `token_lifetime`.
pub(super) fn build_token_file(
    checker: &mut Checker<'_>,
    agent: &str,
    file: Option<&Spanned<String>>,
    lifetime: Option<&Spanned<String>>,
) -> Option<(Option<std::path::PathBuf>, Duration)> {
    use crate::config::{DEFAULT_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME};

    let file = match file {
        None => None,
        Some(path) if path.get_ref().trim().is_empty() => {
            checker.error_with_hint(
                path,
                format!("agent {agent:?} has an empty token_file"),
                "give the path where castellan keeps the agent's token, or leave the key out",
            );
            return None;
        }
        Some(path) if !std::path::Path::new(path.get_ref()).is_absolute() => {
            checker.error_with_hint(
                path,
                format!("token_file {:?} of agent {agent:?} is a relative path", path.get_ref()),
                "write an absolute path, such as \"/run/castellan/AGENT.token\", so it does not depend on the directory castellan serve starts in",
            );
            return None;
        }
        Some(path) => Some(path.get_ref().into()),
    };
    let Some(lifetime) = lifetime else {
        return Some((file, DEFAULT_TOKEN_LIFETIME));
    };
    if file.is_none() {
        checker.error_with_hint(
            lifetime,
            format!("agent {agent:?} sets token_lifetime without token_file"),
            "add token_file = \"/run/castellan/AGENT.token\", or set the lifetime of hand-issued tokens with `castellan agent token issue --ttl`",
        );
        return None;
    }
    let duration = parse_period(checker, "token_lifetime", lifetime)?;
    if duration < MIN_TOKEN_LIFETIME {
        checker.error_with_hint(
            lifetime,
            format!(
                "token_lifetime {:?} of agent {agent:?} is shorter than 10 minutes",
                lifetime.get_ref()
            ),
            "use at least \"10m\" so the agent can read a token before it expires; the default is \"24h\"",
        );
        return None;
    }
    Some((file, duration))
}
