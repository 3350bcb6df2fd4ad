//! Request paths for the normalization bench, as agents send them to REST
//! and JSON APIs: plain, with percent escapes to decode or keep, with
//! repeated slashes, and deep.

/// Request targets without the query string, each valid for
/// `Connection::normalize_path`.
pub const REQUEST_PATHS: &[&str] = &[
    "/v1/items/42",
    "/v1/items/42/details",
    "/v1/status",
    "/api/v2/repos/castellan/gateway/issues/1234/comments",
    "/v1/reports/2026-12-04.json",
    // Escapes of unreserved characters, decoded to `~`, `-` and letters.
    "/v1/users/%7Ejay/files/report%2Dq4%2e2026.pdf",
    // Reserved and non-ASCII escapes, kept with upper-case hex.
    "/v1/search/caf%c3%a9%20au%20lait/results%3Fpage",
    // Empty segments collapse, a trailing slash stays.
    "//v1//items///42/",
    "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p",
];

/// Paths the normalizer must reject, one per kind of rejection that a
/// request can hit early.
pub const REJECTED_PATHS: &[&str] = &[
    "/v1/items/%2e%2e/admin",
    "/v1/items/..%2Fadmin",
    "/v1/items;jsessionid=1",
];
