//! The authenticate stage: find the agent token where the agent's SDK put
//! it, and resolve it to an agent that may act now.

use std::time::SystemTime;

use castellan_model::{Agent, ClientIdentity, TokenLocation};
use castellan_store::now_ms;
use http::request::Parts;
use percent_encoding::percent_decode_str;

use crate::error::Rejection;
use crate::state::{ActiveToken, Snapshot};

/// An agent whose token checked out, with the token's public id.
pub struct Authenticated<'a> {
    pub agent: &'a Agent,
    pub token_id: String,
}

/// Finds the one castellan token in `parts` at `locations`.
///
/// Values that do not look like castellan tokens are ignored here (they are
/// stripped before forwarding anyway). Two different castellan tokens are
/// rejected: the checkpoint never guesses which identity a request meant.
#[cfg(test)]
fn find_token(parts: &Parts, locations: &[TokenLocation]) -> Result<String, Rejection> {
    find_token_if_any(parts, locations)?.ok_or_else(|| missing_token(locations))
}

/// Returns the rejection for a request that carries no token.
pub fn missing_token(locations: &[TokenLocation]) -> Rejection {
    let places: Vec<String> = locations.iter().map(ToString::to_string).collect();
    Rejection::unauthorized(format!(
        "no castellan agent token found; send it in {}",
        places.join(", ")
    ))
}

/// Like [`find_token`], but `None` when the request carries no token.
pub fn find_token_if_any(
    parts: &Parts,
    locations: &[TokenLocation],
) -> Result<Option<String>, Rejection> {
    let mut found: Option<String> = None;
    for location in locations {
        for candidate in candidates(parts, location) {
            if !castellan_vault::looks_like_token(&candidate) {
                continue;
            }
            match &found {
                Some(existing) if *existing != candidate => {
                    return Err(Rejection::unauthorized(
                        "the request carries two different agent tokens; send exactly one",
                    ));
                }
                _ => found = Some(candidate),
            }
        }
    }
    Ok(found)
}

fn candidates(parts: &Parts, location: &TokenLocation) -> Vec<String> {
    match location {
        TokenLocation::Query(name) => query_values(parts.uri.query().unwrap_or(""), name),
        TokenLocation::Authorization => parts
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            })
            .collect(),
        header => {
            let name = header.header_name().unwrap_or_default();
            parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .map(|value| value.trim().to_string())
                .collect()
        }
    }
}

/// Returns the decoded values of query parameter `name`.
pub fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(key) == name).then(|| decode_component(value))
        })
        .collect()
}

pub fn decode_component(text: &str) -> String {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Resolves a token to an agent that may make requests now.
pub fn authenticate<'a>(
    snapshot: &'a Snapshot,
    token: &str,
) -> Result<Authenticated<'a>, Rejection> {
    let invalid = || Rejection::unauthorized("the agent token is invalid, expired or revoked");
    let hash = castellan_vault::parse_token(token).map_err(|_| invalid())?;
    let entry = snapshot.tokens.get(&hash).ok_or_else(invalid)?;
    if entry.canary {
        return Err(invalid());
    }
    if entry.expires_ms.is_some_and(|expires| expires <= now_ms()) {
        return Err(invalid());
    }
    admit(
        snapshot,
        entry.agent,
        entry.id.to_string(),
        entry.id.as_str(),
    )
}

/// Returns the canary token `token` is, if it is one. Called only after
/// [`authenticate`] rejected the token, so valid tokens pay nothing for it.
pub fn canary<'a>(snapshot: &'a Snapshot, token: &str) -> Option<ActiveToken<'a>> {
    let hash = castellan_vault::parse_token(token).ok()?;
    snapshot.tokens.get(&hash).filter(|entry| entry.canary)
}

/// Resolves a verified client certificate to the agent bound to one of
/// its identities, if any agent is.
pub fn authenticate_certificate<'a>(
    snapshot: &'a Snapshot,
    identities: &[ClientIdentity],
) -> Option<Result<Authenticated<'a>, Rejection>> {
    if identities.is_empty() {
        // No client certificate: skip the walk over every agent, which
        // otherwise runs on each request.
        return None;
    }
    let config = &snapshot.config.config;
    let matches: Vec<(&Agent, &ClientIdentity)> = config
        .agents
        .values()
        .filter_map(|agent| {
            let bound = agent.client_certificate.as_ref()?;
            identities.contains(bound).then_some((agent, bound))
        })
        .collect();
    let (agent, identity) = match matches.as_slice() {
        [] => return None,
        [single] => *single,
        several => {
            // A certificate naming two agents must not pick one silently,
            // because a CA may let requesters choose one of the names.
            let names: Vec<&str> = several
                .iter()
                .map(|(agent, _)| agent.name.as_str())
                .collect();
            return Some(Err(Rejection::unauthorized(format!(
                "the client certificate matches several agents ({}); bind each agent to an identity that only its certificate carries",
                names.join(", ")
            ))));
        }
    };
    let id = format!("certificate:{identity}");
    Some(admit(snapshot, &agent.name, id, "its client certificate"))
}

/// Checks that a named agent may act now: declared, not suspended, not
/// expired.
fn admit<'a>(
    snapshot: &'a Snapshot,
    agent_name: &str,
    token_id: String,
    credential: &str,
) -> Result<Authenticated<'a>, Rejection> {
    let config = &snapshot.config.config;
    let Some(agent) = config.agents.get(agent_name) else {
        return Err(Rejection::forbidden(
            format!(
                "agent {agent_name:?} is not declared in the configuration; declare it under [agents.{agent_name}] or revoke {credential}"
            ),
            None,
        ));
    };
    if let Some(reason) = snapshot.suspended.get(&agent.name) {
        let reason = reason.as_deref().unwrap_or("no reason given");
        return Err(Rejection::forbidden(
            format!("agent {:?} is suspended ({reason}); an operator can lift it with `castellan agent resume {}`", agent.name, agent.name),
            None,
        ));
    }
    if agent.is_expired(SystemTime::now()) {
        return Err(Rejection::forbidden(
            format!(
                "agent {:?} expired; its owner can extend `expires` in the configuration",
                agent.name
            ),
            None,
        ));
    }
    Ok(Authenticated { agent, token_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    const TOKEN: &str = "cst_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA000000";
    const OTHER: &str = "cst_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB000000";

    #[test]
    fn token_found_in_each_location() {
        let all = castellan_model::DEFAULT_TOKEN_LOCATIONS.to_vec();
        let bearer = format!("Bearer {TOKEN}");
        for headers in [
            vec![("authorization", bearer.as_str())],
            vec![("x-api-key", TOKEN)],
            vec![("api-key", TOKEN)],
            vec![("x-goog-api-key", TOKEN)],
            vec![("authorization", bearer.as_str()), ("x-api-key", TOKEN)],
        ] {
            let found = find_token(&parts("/c/x", &headers), &all).expect("token found");
            assert_eq!(found, TOKEN, "{headers:?}");
        }
        let query = vec![TokenLocation::Query("key".into())];
        let found = find_token(&parts(&format!("/c/x?a=1&key={TOKEN}"), &[]), &query);
        assert_eq!(found.expect("token in query"), TOKEN);
    }

    #[test]
    fn token_outside_allowed_locations_ignored() {
        let only_header = vec![TokenLocation::XApiKey];
        let bearer = format!("Bearer {TOKEN}");
        let result = find_token(&parts("/c/x", &[("authorization", &bearer)]), &only_header);
        let rejection = result.expect_err("authorization is not allowed here");
        assert!(
            rejection.reason.contains("x-api-key"),
            "{}",
            rejection.reason
        );
    }

    #[test]
    fn conflicting_tokens_rejected() {
        let all = castellan_model::DEFAULT_TOKEN_LOCATIONS.to_vec();
        let bearer = format!("Bearer {TOKEN}");
        let result = find_token(
            &parts("/c/x", &[("authorization", &bearer), ("x-api-key", OTHER)]),
            &all,
        );
        let rejection = result.expect_err("two tokens");
        assert!(rejection.reason.contains("two different agent tokens"));
        assert!(!rejection.reason.contains(TOKEN));
    }

    #[test]
    fn missing_token_names_locations() {
        let all = castellan_model::DEFAULT_TOKEN_LOCATIONS.to_vec();
        let result = find_token(
            &parts("/c/x", &[("authorization", "Bearer sk-real-key")]),
            &all,
        );
        let rejection = result.expect_err("no castellan token");
        assert!(rejection
            .reason
            .contains("authorization, x-api-key, api-key, x-goog-api-key"));
        assert!(!rejection.reason.contains("sk-real-key"));
    }
}
