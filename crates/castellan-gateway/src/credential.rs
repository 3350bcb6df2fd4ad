//! Credential injection: how a connection's secret is attached to forwarded
//! requests, and the forms of it that responses must never echo.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use castellan_model::AuthMethod;
use http::{HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

use crate::redact::Redactor;

/// Characters left unescaped in a query value: RFC 3986 unreserved.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A connection's credential, ready to attach.
pub struct Injector {
    placement: Placement,
    redactor: Redactor,
    /// The same forms in lower case, for header names, which HTTP
    /// libraries lower-case on the way in.
    name_redactor: Redactor,
}

enum Placement {
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
    /// `name=value`, percent-encoded, to append to the query string.
    Query {
        name: String,
        pair: Zeroizing<String>,
    },
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let placement = match &self.placement {
            Placement::Header { name, .. } => format!("header {name}"),
            Placement::Query { name, .. } => format!("query parameter {name}"),
        };
        f.debug_struct("Injector")
            .field("placement", &placement)
            .finish_non_exhaustive()
    }
}

/// Error preparing a secret for its connection's authentication method.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("secret {secret:?} is empty; store a value with `castellan secret set {secret}`")]
    Empty { secret: String },
    #[error("secret {secret:?} contains a control character, so it cannot be sent in a header; store it again without line breaks")]
    NotHeaderSafe { secret: String },
    #[error("secret {secret:?} is not valid UTF-8, which {kind} authentication needs")]
    NotUtf8 { secret: String, kind: &'static str },
    #[error("secret {secret:?} must have the form user:password for basic authentication without a configured username")]
    NotUserPassword { secret: String },
}

impl Injector {
    /// Prepares `value`, the secret named `secret`, for `auth`.
    pub fn new(auth: &AuthMethod, secret: &str, value: &[u8]) -> Result<Self, InjectError> {
        if value.is_empty() {
            return Err(InjectError::Empty {
                secret: secret.to_string(),
            });
        }
        let text = std::str::from_utf8(value).map_err(|_| InjectError::NotUtf8 {
            secret: secret.to_string(),
            kind: auth.kind(),
        })?;
        let mut forms: Vec<Vec<u8>> = vec![value.to_vec()];
        forms.extend(encoded_forms(text));

        let placement = match auth {
            AuthMethod::Bearer => {
                header_placement("authorization", &format!("Bearer {text}"), secret)?
            }
            AuthMethod::Header { name, template } => {
                header_placement(name, &template.render(text), secret)?
            }
            AuthMethod::Basic { username } => {
                let pair = match username {
                    Some(user) => Zeroizing::new(format!("{user}:{text}")),
                    None if text.contains(':') => Zeroizing::new(text.to_string()),
                    None => {
                        return Err(InjectError::NotUserPassword {
                            secret: secret.to_string(),
                        })
                    }
                };
                let encoded = Zeroizing::new(STANDARD.encode(pair.as_bytes()));
                forms.push(encoded.as_bytes().to_vec());
                forms.push(URL_SAFE_NO_PAD.encode(pair.as_bytes()).into_bytes());
                if username.is_none() {
                    // The password alone is the part worth hiding.
                    if let Some((_, password)) = text.split_once(':') {
                        forms.push(password.as_bytes().to_vec());
                    }
                }
                header_placement(
                    "authorization",
                    &format!("Basic {}", encoded.as_str()),
                    secret,
                )?
            }
            AuthMethod::Query { name } => {
                let encoded_name = utf8_percent_encode(name, QUERY_VALUE).to_string();
                let encoded_value = utf8_percent_encode(text, QUERY_VALUE).to_string();
                Placement::Query {
                    name: name.clone(),
                    pair: Zeroizing::new(format!("{encoded_name}={encoded_value}")),
                }
            }
        };
        if let Placement::Header { value, .. } = &placement {
            forms.push(value.as_bytes().to_vec());
            forms.push(STANDARD.encode(value.as_bytes()).into_bytes());
        }
        let lowered: Vec<Vec<u8>> = forms.iter().map(|form| form.to_ascii_lowercase()).collect();
        let empty = || InjectError::Empty {
            secret: secret.to_string(),
        };
        let redactor = Redactor::new(forms).ok_or_else(empty)?;
        let name_redactor = Redactor::new(lowered).ok_or_else(empty)?;
        Ok(Injector {
            placement,
            redactor,
            name_redactor,
        })
    }

    /// Returns the header this injector sets, if it uses one.
    pub fn header(&self) -> Option<(&HeaderName, &HeaderValue)> {
        match &self.placement {
            Placement::Header { name, value } => Some((name, value)),
            Placement::Query { .. } => None,
        }
    }

    /// Returns the query parameter name this injector sets, if it uses one.
    pub fn query_name(&self) -> Option<&str> {
        match &self.placement {
            Placement::Query { name, .. } => Some(name),
            Placement::Header { .. } => None,
        }
    }

    /// Appends the credential to a query string that has already lost any
    /// agent-supplied parameter of the same name.
    pub fn append_query(&self, query: &mut String) {
        if let Placement::Query { pair, .. } = &self.placement {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(pair);
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Tells whether a header name, as received in lower case, contains
    /// the credential in any form.
    pub fn names_credential(&self, name: &HeaderName) -> bool {
        self.name_redactor.is_match(name.as_str().as_bytes())
    }
}

fn header_placement(name: &str, value: &str, secret: &str) -> Result<Placement, InjectError> {
    let not_safe = || InjectError::NotHeaderSafe {
        secret: secret.to_string(),
    };
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| not_safe())?;
    let mut value = HeaderValue::from_str(value).map_err(|_| not_safe())?;
    // Keeps the value out of HTTP/2 header compression tables and Debug output.
    value.set_sensitive(true);
    Ok(Placement::Header { name, value })
}

/// Base64 forms of a secret, as an upstream may echo auth data. Percent and
/// JSON escapes of every form are matched by the redactor itself.
fn encoded_forms(text: &str) -> Vec<Vec<u8>> {
    vec![
        STANDARD.encode(text).into_bytes(),
        URL_SAFE_NO_PAD.encode(text).into_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use castellan_model::HeaderTemplate;

    const SECRET: &str = "s3cr3t/value+x";

    #[test]
    fn header_kinds_render() {
        let cases = [
            (AuthMethod::Bearer, "authorization", "Bearer s3cr3t/value+x"),
            (
                AuthMethod::Header {
                    name: "x-api-key".into(),
                    template: HeaderTemplate::bare(),
                },
                "x-api-key",
                SECRET,
            ),
            (
                AuthMethod::Header {
                    name: "authorization".into(),
                    template: HeaderTemplate {
                        prefix: "token ".into(),
                        suffix: String::new(),
                    },
                },
                "authorization",
                "token s3cr3t/value+x",
            ),
            (
                AuthMethod::Basic {
                    username: Some("svc".into()),
                },
                "authorization",
                "Basic c3ZjOnMzY3IzdC92YWx1ZSt4",
            ),
        ];
        for (auth, name, value) in cases {
            let injector = Injector::new(&auth, "k", SECRET.as_bytes()).expect("valid");
            let (header, header_value) = injector.header().expect("header placement");
            assert_eq!(header.as_str(), name);
            assert_eq!(header_value.to_str().expect("ascii"), value);
            assert!(header_value.is_sensitive());
        }
    }

    #[test]
    fn query_kind_appends_encoded_pair() {
        let auth = AuthMethod::Query { name: "key".into() };
        let injector = Injector::new(&auth, "k", SECRET.as_bytes()).expect("valid");
        let mut query = "q=1".to_string();
        injector.append_query(&mut query);
        assert_eq!(query, "q=1&key=s3cr3t%2Fvalue%2Bx");
        assert_eq!(injector.query_name(), Some("key"));
    }

    #[test]
    fn encoded_forms_are_redacted() {
        let injector = Injector::new(&AuthMethod::Bearer, "k", SECRET.as_bytes()).expect("valid");
        for echoed in [
            "s3cr3t/value+x",
            "s3cr3t%2Fvalue%2Bx",
            "s3cr3t/value%2bx",
            "s3cr3t\\/value+x",
            "s3cr3t\\u002Fvalue+x",
            &STANDARD.encode(SECRET),
        ] {
            let mut body = format!("echo: {echoed}!").into_bytes();
            assert!(injector.redactor().mask_in_place(&mut body), "{echoed}");
            assert!(!String::from_utf8_lossy(&body).contains(echoed));
        }
    }

    #[test]
    fn unusable_secrets_rejected() {
        let newline = Injector::new(&AuthMethod::Bearer, "k", b"a\nb").unwrap_err();
        assert!(newline.to_string().contains("control character"));
        assert!(!newline.to_string().contains("a\nb"));
        let basic =
            Injector::new(&AuthMethod::Basic { username: None }, "k", b"nocolon").unwrap_err();
        assert!(basic.to_string().contains("user:password"));
        assert!(Injector::new(&AuthMethod::Bearer, "k", b"").is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let injector = Injector::new(&AuthMethod::Bearer, "k", SECRET.as_bytes()).expect("valid");
        assert!(!format!("{injector:?}").contains("s3cr3t"));
    }
}
