//! HTTP plumbing shared by the engines and the REST API: the body type
//! ([`body`]: one buffer or a stream), response builders, request-size
//! helpers, the origin policy (CORS and the websocket origin check), the
//! audit line's common pieces, and the accepted connection ([`conn`]).
//!
//! An answer given without reading the request body to its end is the last
//! one on its connection ([`last_on_connection`]): hyper reads what is at
//! hand of the rest and, if that is not all, closes the connection after the
//! answer, which lingers so the client can finish sending and read it
//! ([`conn`]).

pub mod body;
pub mod conn;

pub use body::{Body, BodySender};
pub use conn::ConnectionSlot;
pub(crate) use conn::WrittenPast;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};

/// A peer address as every audit line writes it (`peer=127.0.0.1:54321`,
/// `peer=unknown`), formatted only when the line is written.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<std::net::SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// Bytes of a name a client claims (a tenant id it was not authenticated
/// for) that an audit line keeps: enough to recognise it, not enough to
/// flood the log.
pub const CLAIMED_MAX: usize = 128;

/// `name` cut to [`CLAIMED_MAX`] bytes (at a character boundary).
pub fn claimed(name: &str) -> &str {
    let mut end = name.len().min(CLAIMED_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Writes the audit line of a request refused for its `Origin` (`via`:
/// `rest` or `engine.io`).
pub fn audit_origin_refused<B>(via: &'static str, req: &Request<B>, peer: Option<std::net::SocketAddr>) {
    let origin = req.headers().get(header::ORIGIN).map(|o| o.to_str().unwrap_or("(not text)")).unwrap_or("");
    tracing::info!(target: "audit", action = "request", outcome = "origin_not_allowed", via, origin = %claimed(origin), peer = %Peer(peer), "request refused: origin not allowed");
}

/// A response with `body` and `content_type`.
pub fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// `text/plain; charset=UTF-8` (Engine.IO polling payloads).
pub fn text_plain(status: StatusCode, body: Bytes) -> Response<Body> {
    response(status, "text/plain; charset=UTF-8", body)
}

/// `application/json`.
pub fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    response(status, "application/json", body)
}

/// The `ok` answer to a polling POST, as the reference sends it.
pub fn ok_html() -> Response<Body> {
    response(StatusCode::OK, "text/html", Bytes::from_static(b"ok"))
}

/// 503 with `Retry-After`: a capacity bound was hit; try again shortly.
pub fn unavailable() -> Response<Body> {
    let mut res = json(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(br#"{"error":{"code":"unavailable","message":"server at capacity"}}"#),
    );
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// Whether the request has a body still to read (not none, not
/// `Content-Length: 0`, not read to its end yet).
pub fn has_body<B: hyper::body::Body>(req: &Request<B>) -> bool {
    !req.body().is_end_stream()
}

/// Says in `res` that it is the last answer on its connection
/// (`Connection: close`), for an answer given without reading the request
/// body to its end. hyper closes such a connection after the answer (it
/// reads what is at hand and gives up on the rest) but says so only when it
/// knew before writing the answer, which it does not when the handler drops
/// the body: a keep-alive client (Node's default agent) would then send its
/// next request on a connection that is closing, and fail. With the header,
/// hyper closes after the answer even when it could have read the rest.
pub fn last_on_connection(res: &mut Response<Body>) {
    res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// The declared `Content-Length`, if any and well-formed.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Answers a CORS preflight (`OPTIONS`): 204 when the origin is allowed, 403 otherwise.
pub fn preflight<B>(req: &Request<B>, origin_ok: bool) -> Response<Body> {
    if !origin_ok {
        return response(StatusCode::FORBIDDEN, "text/plain; charset=UTF-8", Bytes::new());
    }
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    if let Some(requested) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    res
}

/// The origin policy: which browser origins may use the server.
///
/// Requests without `Origin` (curl, services, Node clients) are allowed. A
/// browser's origin is allowed when it is the server's own (same host and
/// port as the `Host` header) or listed; `Origin: null` never is.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    allowed: Vec<String>,
}

impl Cors {
    /// A policy allowing the server's own origin plus `allowed`
    /// (exact `scheme://host[:port]` strings).
    pub fn new(allowed: impl IntoIterator<Item = String>) -> Self {
        Cors { allowed: allowed.into_iter().map(|o| o.trim_end_matches('/').to_owned()).collect() }
    }

    /// Decides for a request with this `Origin` and `Host`.
    pub fn headers_for(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> CorsDecision {
        let Some(origin) = origin else {
            return CorsDecision { allowed: true, allow_origin: None };
        };
        let Ok(o) = origin.to_str() else {
            return CorsDecision { allowed: false, allow_origin: None };
        };
        let same_origin = host
            .and_then(|h| h.to_str().ok())
            .and_then(|h| o.split_once("://").map(|(_, rest)| rest.eq_ignore_ascii_case(h)))
            .unwrap_or(false);
        let allowed = o != "null" && (same_origin || self.allowed.iter().any(|a| a == o));
        CorsDecision { allowed, allow_origin: allowed.then(|| origin.clone()) }
    }
}

/// The outcome of the origin policy for one request.
#[derive(Debug, Clone)]
pub struct CorsDecision {
    allowed: bool,
    allow_origin: Option<HeaderValue>,
}

impl CorsDecision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// Adds the CORS response headers for an allowed browser origin;
    /// whether it added them (a browser origin that is allowed).
    pub fn apply(&self, headers: &mut HeaderMap) -> bool {
        if let Some(origin) = &self.allow_origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn origin_policy() {
        let cors = Cors::new(["https://app.example.com".to_owned()]);
        let host = hv("127.0.0.1:3000");
        assert!(cors.headers_for(None, Some(&host)).is_allowed());
        assert!(cors.headers_for(Some(&hv("http://127.0.0.1:3000")), Some(&host)).is_allowed());
        assert!(cors.headers_for(Some(&hv("https://app.example.com")), Some(&host)).is_allowed());
        assert!(!cors.headers_for(Some(&hv("https://evil.example.com")), Some(&host)).is_allowed());
        assert!(!cors.headers_for(Some(&hv("null")), Some(&host)).is_allowed());
        assert!(!cors.headers_for(Some(&hv("http://127.0.0.1:3001")), Some(&host)).is_allowed());
        let mut h = HeaderMap::new();
        cors.headers_for(Some(&hv("https://app.example.com")), Some(&host)).apply(&mut h);
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://app.example.com");
    }
}
