//! Rejections: every way a request can end without reaching the upstream,
//! each mapped to one status code and a JSON body that names the reason.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::ResponseBody;

/// The party at fault for a rejection, which sets the audit decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The agent sent something the checkpoint refuses: a deny.
    Agent,
    /// The upstream or Castellan itself failed after the decision: an error.
    Gateway,
}

/// A response the gateway sends itself instead of forwarding the request.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: StatusCode,
    /// Short machine-readable kind, such as `forbidden`.
    pub error: &'static str,
    /// A sentence for the agent and the audit record; never a secret.
    pub reason: String,
    /// The policy rule that decided, when there was one.
    pub rule: Option<String>,
    pub fault: Fault,
    /// Sent as `Retry-After` when the agent should wait before retrying.
    pub retry_after: Option<std::time::Duration>,
    /// Whether the response closes the connection, because the request's
    /// framing leaves the rest of the byte stream untrusted.
    pub close_connection: bool,
}

impl Rejection {
    fn new(
        status: StatusCode,
        error: &'static str,
        fault: Fault,
        reason: impl Into<String>,
    ) -> Self {
        Rejection {
            status,
            error,
            reason: reason.into(),
            rule: None,
            fault,
            retry_after: None,
            close_connection: false,
        }
    }

    /// Makes the response close the connection after it is sent.
    pub fn closing_connection(mut self) -> Self {
        self.close_connection = true;
        self
    }

    pub fn too_many_requests(reason: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let mut rejection = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            Fault::Agent,
            reason,
        );
        rejection.retry_after = Some(retry_after);
        rejection
    }

    pub fn payload_too_large(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            Fault::Agent,
            reason,
        )
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", Fault::Agent, reason)
    }

    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Fault::Agent,
            reason,
        )
    }

    pub fn forbidden(reason: impl Into<String>, rule: Option<String>) -> Self {
        let mut rejection = Self::new(StatusCode::FORBIDDEN, "forbidden", Fault::Agent, reason);
        rejection.rule = rule;
        rejection
    }

    /// Builds the 403 for a request body in which the outbound data-loss
    /// check found a secret.
    pub fn secret_in_body(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "secret_in_request",
            Fault::Agent,
            reason,
        )
    }

    pub fn unsupported_media_type(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            Fault::Agent,
            reason,
        )
    }

    pub fn request_timeout(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            Fault::Agent,
            reason,
        )
        .closing_connection()
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", Fault::Agent, reason)
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            Fault::Gateway,
            reason,
        )
    }

    pub fn bad_gateway(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            Fault::Gateway,
            reason,
        )
    }

    pub fn gateway_timeout(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            Fault::Gateway,
            reason,
        )
    }

    /// Builds the JSON response: `{"error", "reason", "request_id"}`.
    pub fn to_response(&self, request_id: &str) -> Response<ResponseBody> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            reason: &'a str,
            request_id: &'a str,
        }
        let body = serde_json::to_vec(&Body {
            error: self.error,
            reason: &self.reason,
            request_id,
        })
        .unwrap_or_default();
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up so a client never retries too early.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if self.close_connection {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"castellan\""),
            );
        }
        response
    }
}
