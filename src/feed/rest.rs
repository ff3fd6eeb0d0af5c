//! The REST API, dispatched by hand on hyper: `POST /api/events`,
//! `GET /api/events?sinceId=&limit=`, `GET /api/events/{id}`,
//! `GET /api/events/stream` (Server-Sent Events, [`super::stream`]), plus
//! `GET /healthz`, `GET /readyz`, `GET /metrics` and `GET /api/openapi.json`
//! (the OpenAPI description of all of these, [`OPENAPI`]).
//!
//! Every route is a line of [`ROUTES`]: its path template and methods. The
//! dispatcher finds a request's route there and answers a method the route
//! does not list with 405 and `Allow` from the same line, so the table is the
//! one list of what is served (`tests/openapi.rs` holds the document to it).
//! An unknown path gets 404 JSON. `OPTIONS` is the CORS preflight, on any
//! path. Bodies are read with a size limit (`NB_BACKEND_MAX_BODY`); the order
//! of checks on a write is: credentials (401), role (403), media type (415),
//! size (413), JSON shape (400), message rules (422/413).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use uuid::Uuid;

use super::error::FeedError;
use super::event::page_json;
use super::idempotency::IdempotencyKey;
use super::paging::PageRequest;
use super::store::{Appended, Store};
use super::{Authenticated, Feed, Principal};
use crate::http::{self as h, Body, claimed};
use crate::metrics::Metrics;
use crate::server::{ResponseFuture, Service};

/// Sets the metrics that describe current state, just before a scrape.
pub type Refresh = Box<dyn Fn(&Metrics) + Send + Sync>;

/// The REST service.
pub struct Rest<S: Store> {
    feed: Arc<Feed<S>>,
    refresh: Refresh,
}

impl<S: Store> Rest<S> {
    /// Serves `feed`; `refresh` updates the state gauges before `/metrics` answers.
    pub fn new(feed: Arc<Feed<S>>, refresh: Refresh) -> Self {
        Rest { feed, refresh }
    }
}

impl<S: Store> Service for Rest<S> {
    /// Routes at once; an endpoint that waits (authentication, the store, a
    /// body) gets a future of its own, holding only its own state: one
    /// allocation per request, of the endpoint's size. (One future for
    /// every endpoint was over 3 KiB: each request's allocation and free
    /// went through glibc's general path, past its per-thread cache.)
    fn call(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture {
        let cors =
            self.feed.config.cors.headers_for(req.headers().get(header::ORIGIN), req.headers().get(header::HOST));
        let found = find(req.uri().path()).map(|(route, _)| route);
        // Only a write (`POST /api/events`, [`create`]) reads a request body
        // (and says itself when it leaves some unread); any other request's
        // body stays unread.
        let write = req.method() == Method::POST && found.is_some_and(|r| r.endpoint == Endpoint::Events);
        let unread_body = h::has_body(&req) && !(cors.is_allowed() && write);
        let finish = Finish { cors, unread_body };
        if !finish.cors.is_allowed() {
            h::audit_origin_refused("rest", &req, Some(peer));
            return Box::pin(std::future::ready(finish.answer(Err(FeedError::OriginNotAllowed))));
        }
        match route(&self, req, found) {
            Routed::Now(res) => Box::pin(std::future::ready(finish.answer(res))),
            Routed::Create(req) => Box::pin(async move { finish.answer(create(&self.feed, req, peer).await) }),
            Routed::List(req) => Box::pin(async move { finish.answer(list(&self.feed, &req, peer).await) }),
            Routed::Event(req) => Box::pin(async move {
                // The route's parameter, found again (not kept in a String).
                let id = find(req.uri().path()).and_then(|(_, param)| param).unwrap_or("");
                finish.answer(get_one(&self.feed, &req, id, peer).await)
            }),
            Routed::Stream(req) => Box::pin(async move { finish.answer(stream(&self.feed, req, peer).await) }),
        }
    }

    fn route_label(&self, path: &str) -> &'static str {
        find(path).map_or("other", |(route, _)| route.label)
    }

    fn takes_connection(&self, path: &str) -> bool {
        find(path).is_some_and(|(route, _)| matches!(route.endpoint, Endpoint::Stream))
    }
}

/// The OpenAPI 3.1 description of [`ROUTES`], served at `GET /api/openapi.json`.
/// Kept by hand beside this file; `tests/openapi.rs` walks it against a
/// running server, so it stays exact.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `GET` lists a page, `POST` creates.
    Events,
    /// Server-Sent Events.
    Stream,
    /// One event by id.
    Event,
    /// `{"status":"ok"}`.
    Health,
    /// Readiness.
    Ready,
    /// Prometheus text.
    Metrics,
    /// [`OPENAPI`].
    OpenApi,
}

/// One route of the dispatcher: a path template and the methods it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The path, in OpenAPI's template syntax: `{name}` stands for one
    /// non-empty segment.
    pub path: &'static str,
    /// The methods answered, in the order `Allow` lists them.
    pub methods: &'static [&'static str],
    /// The metrics label of its requests (`route` of the request histogram).
    pub label: &'static str,
    endpoint: Endpoint,
}

/// Every route the dispatcher serves (Socket.IO's `/socket.io/` is the
/// Engine.IO endpoint's, ahead of this dispatcher). The first line whose
/// template matches wins: `/api/events/stream` comes before
/// `/api/events/{id}`, so `stream` is a route, never an event id. `HEAD` is
/// answered where monitors use it (the bodyless GET of the health routes).
pub const ROUTES: &[Route] = &[
    Route { path: "/api/events", methods: &["GET", "POST"], label: "api_events", endpoint: Endpoint::Events },
    Route { path: "/api/events/stream", methods: &["GET"], label: "api_stream", endpoint: Endpoint::Stream },
    Route { path: "/api/events/{id}", methods: &["GET"], label: "api_event", endpoint: Endpoint::Event },
    Route { path: "/healthz", methods: &["GET", "HEAD"], label: "ops", endpoint: Endpoint::Health },
    Route { path: "/readyz", methods: &["GET", "HEAD"], label: "ops", endpoint: Endpoint::Ready },
    Route { path: "/metrics", methods: &["GET", "HEAD"], label: "ops", endpoint: Endpoint::Metrics },
    Route { path: "/api/openapi.json", methods: &["GET", "HEAD"], label: "ops", endpoint: Endpoint::OpenApi },
];

/// Whether `path` fits `template`; the value of its `{…}` segment if it has one.
fn matches<'p>(template: &str, path: &'p str) -> Option<Option<&'p str>> {
    // Most requests name a route without a parameter: one comparison.
    if template == path {
        return Some(None);
    }
    if !template.ends_with('}') {
        return None;
    }
    let mut param = None;
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(param),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => param = Some(g),
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// The route of `path` and its `{…}` value. A trailing slash is ignored
/// (`/api/events/` lists events, as it always did), never taken for an
/// empty id.
fn find(path: &str) -> Option<(&'static Route, Option<&str>)> {
    lookup(path).or_else(|| path.strip_suffix('/').filter(|p| !p.is_empty()).and_then(lookup))
}

/// The first route whose template `path` fits exactly.
fn lookup(path: &str) -> Option<(&'static Route, Option<&str>)> {
    ROUTES.iter().find_map(|r| matches(r.path, path).map(|param| (r, param)))
}

/// What every REST answer gets before it leaves: the error's answer,
/// `Connection: close` when the request's body was left unread, the
/// origin's CORS headers.
struct Finish {
    cors: h::CorsDecision,
    unread_body: bool,
}

impl Finish {
    fn answer(self, res: Result<Response<Body>, FeedError>) -> Response<Body> {
        let mut res = res.unwrap_or_else(|e| e.to_response());
        if self.unread_body {
            h::last_on_connection(&mut res);
        }
        if self.cors.apply(res.headers_mut()) {
            // What a page may read of an answer besides the simple headers.
            res.headers_mut().insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Location, Retry-After, Allow, Idempotent-Replayed"),
            );
        }
        res
    }
}

/// Where a request stands once routed: answered, or an endpoint to wait on.
enum Routed {
    /// The answer (or refusal), without waiting.
    Now(Result<Response<Body>, FeedError>),
    /// `POST /api/events`.
    Create(Request<Incoming>),
    /// `GET /api/events`.
    List(Request<Incoming>),
    /// `GET /api/events/{id}`.
    Event(Request<Incoming>),
    /// `GET /api/events/stream`.
    Stream(Request<Incoming>),
}

/// Routes `req`, whose path's route `found` is.
fn route<S: Store>(rest: &Rest<S>, req: Request<Incoming>, found: Option<&'static Route>) -> Routed {
    let feed = &*rest.feed;
    let method = req.method();
    if method == Method::OPTIONS {
        return Routed::Now(Ok(preflight(&req)));
    }
    let Some(route) = found else {
        return Routed::Now(Err(FeedError::NotFound("no such route")));
    };
    if !route.methods.contains(&method.as_str()) {
        return Routed::Now(Err(FeedError::MethodNotAllowed { allow: route.methods }));
    }
    // From here the method is one of the route's: GET, or POST for events,
    // or HEAD where GET's answer is sent without its body (by hyper).
    match route.endpoint {
        Endpoint::Events if method == Method::POST => Routed::Create(req),
        Endpoint::Events => Routed::List(req),
        Endpoint::Stream => Routed::Stream(req),
        Endpoint::Event => Routed::Event(req),
        Endpoint::Health => Routed::Now(Ok(h::json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#)))),
        Endpoint::Ready => Routed::Now(Ok(match feed.is_ready() {
            Ok(()) => h::json(StatusCode::OK, Bytes::from_static(br#"{"status":"ready"}"#)),
            Err(why) => h::json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(format!(r#"{{"status":"{why}"}}"#))),
        })),
        Endpoint::Metrics => {
            (rest.refresh)(&feed.metrics);
            let metrics = Bytes::from(feed.metrics.encode());
            Routed::Now(Ok(h::response(StatusCode::OK, crate::metrics::CONTENT_TYPE, metrics)))
        }
        Endpoint::OpenApi => Routed::Now(Ok(h::json(StatusCode::OK, Bytes::from_static(OPENAPI.as_bytes())))),
    }
}

/// `GET /api/events/stream`: authenticated, then the stream.
async fn stream<S: Store>(
    feed: &Arc<Feed<S>>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, FeedError> {
    let who = authenticated(feed, req.headers(), peer, "stream").await?;
    // Records may be written past hyper only where hyper frames the body in
    // chunks (HTTP/1.1) and sends it (not for HEAD).
    let connection = req
        .extensions()
        .get::<crate::http::ConnectionSlot>()
        .filter(|_| req.method() == Method::GET && req.version() == http::Version::HTTP_11)
        .cloned();
    super::stream::open(feed, who, req.headers(), req.uri().query().unwrap_or(""), peer, connection).await
}

fn preflight(req: &Request<Incoming>) -> Response<Body> {
    let mut res = h::preflight(req, true);
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Content-Type, X-TENANT-ID, X-User-Token, Authorization, Last-Event-ID, Idempotency-Key",
        ),
    );
    res
}

/// The credential a request presents: `X-User-Token` (wins when both are
/// sent), or `Authorization: Bearer <token>`.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let get = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    get(HeaderName::from_static("x-user-token")).or_else(|| {
        let value = get(header::AUTHORIZATION)?;
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
}

/// Authenticates a request (`channel`: `rest` or `stream`), counting and
/// auditing a refusal.
pub(super) async fn authenticated<S: Store>(
    feed: &Feed<S>,
    headers: &HeaderMap,
    peer: SocketAddr,
    channel: &'static str,
) -> Result<Authenticated, FeedError> {
    let tenant = headers.get("x-tenant-id").and_then(|v| v.to_str().ok());
    let token = presented_token(headers);
    feed.authenticate(tenant, token).await.map_err(|failure| {
        feed.auth_failed(channel, failure);
        tracing::info!(target: "audit", action = "authenticate", outcome = failure.code(), via = channel, tenant = %claimed(tenant.unwrap_or("")), peer = %peer, "request refused: credentials");
        let jwt = token.is_some_and(|t| feed.credentials.accepts_jwts() && super::auth::jwt::looks_like_jwt(t));
        failure.to_error(jwt)
    })
}

async fn principal<S: Store>(feed: &Feed<S>, headers: &HeaderMap, peer: SocketAddr) -> Result<Principal, FeedError> {
    authenticated(feed, headers, peer, "rest").await.map(|a| a.principal)
}

fn json_ok(status: StatusCode, body: String) -> Response<Body> {
    h::json(status, Bytes::from(body))
}

async fn list<S: Store>(
    feed: &Feed<S>,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, FeedError> {
    let who = principal(feed, req.headers(), peer).await?;
    let request = PageRequest::from_query(req.uri().query().unwrap_or(""))?;
    let page = feed.read(&who, request).await?;
    Ok(json_ok(StatusCode::OK, page_json(&page.events, page.has_more, page.gap)))
}

async fn get_one<S: Store>(
    feed: &Feed<S>,
    req: &Request<Incoming>,
    id: &str,
    peer: SocketAddr,
) -> Result<Response<Body>, FeedError> {
    let who = principal(feed, req.headers(), peer).await?;
    let id = Uuid::try_parse(id).map_err(|_| FeedError::bad_request("the event id must be a UUID"))?;
    let event = feed.get(&who, &id).await?;
    Ok(json_ok(StatusCode::OK, event.json().get().to_owned()))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// The `Idempotency-Key` of a request, checked (one header, 1–255 visible
/// ASCII characters).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, FeedError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(FeedError::bad_request("send one Idempotency-Key header"));
    }
    // A value that is not visible ASCII is refused by the same rule.
    IdempotencyKey::parse(value.to_str().unwrap_or("")).map(Some)
}

async fn create<S: Store>(
    feed: &Arc<Feed<S>>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, FeedError> {
    let key = match idempotency_key(req.headers()) {
        Ok(key) => key,
        Err(e) => {
            // Refused before the body is read: the last answer on the connection.
            let mut res = e.to_response();
            if h::has_body(&req) {
                h::last_on_connection(&mut res);
            }
            return Ok(res);
        }
    };
    let (who, body) = match accept(feed, req, peer).await {
        Ok(accepted) => accepted,
        Err((e, unread)) => {
            let mut res = e.to_response();
            if unread {
                h::last_on_connection(&mut res);
            }
            return Ok(res);
        }
    };
    let value: Value =
        serde_json::from_slice(&body).map_err(|_| FeedError::bad_request("the body is not valid JSON"))?;
    let message = match value.get("message") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(FeedError::bad_request("message must be a string")),
        None => return Err(FeedError::bad_request("message is required")),
    };
    let Appended { event, replayed, .. } = feed.post(&who, message, key).await.inspect_err(|e| {
        tracing::info!(target: "audit", action = "create_event", outcome = e.code(), tenant = %who.tenant, user = %who.user, peer = %peer, "event refused");
    })?;
    let outcome = if replayed { "replayed" } else { "created" };
    tracing::info!(target: "audit", action = "create_event", outcome, tenant = %who.tenant, user = %who.user, event_id = %event.id(), peer = %peer, "event created");
    let mut res = json_ok(StatusCode::CREATED, event.json().get().to_owned());
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/events/{}", event.id())) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    if replayed {
        res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(res)
}

/// The checks of a write up to its body, read in full: the caller and the
/// body. A refusal says whether it leaves body bytes unread (refused before
/// reading, or cut off at the limit or the timeout): its answer is then the
/// last on the connection.
async fn accept<S: Store>(
    feed: &Feed<S>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<(Principal, Bytes), (FeedError, bool)> {
    let unread = h::has_body(&req);
    let who = principal(feed, req.headers(), peer).await.map_err(|e| (e, unread))?;
    who.require_writer()
        .inspect_err(|_| {
            tracing::info!(target: "audit", action = "create_event", outcome = "forbidden", tenant = %who.tenant, user = %who.user, peer = %peer, "write refused");
        })
        .map_err(|e| (e, unread))?;
    if !is_json(req.headers()) {
        return Err((FeedError::UnsupportedMediaType, unread));
    }
    let max = feed.config.max_body;
    const TOO_BIG: FeedError = FeedError::PayloadTooLarge("request body is larger than the limit");
    if h::content_length(req.headers()).is_some_and(|n| n > max as u64) {
        feed.metrics.reject("body_size");
        return Err((TOO_BIG, unread));
    }
    let read = tokio::time::timeout(feed.config.body_timeout, Limited::new(req.into_body(), max).collect());
    // Bound hit: a body that trickles in slower than the timeout gets 408.
    let read = read.await.map_err(|_| {
        feed.metrics.reject("body_timeout");
        (FeedError::Timeout, true)
    })?;
    match read {
        Ok(b) => Ok((who, b.to_bytes())),
        // Bound hit: reading stopped past the limit, the rest is unread.
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            feed.metrics.reject("body_size");
            Err((TOO_BIG, true))
        }
        Err(_) => Err((FeedError::bad_request("could not read the request body"), true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(path: &str) -> Option<(Endpoint, Option<&str>)> {
        find(path).map(|(route, param)| (route.endpoint, param))
    }

    #[test]
    fn paths_find_their_route() {
        let id = "7d3c1c3e-2b0e-4b8f-9a51-6f1f1c2d9e10";
        assert_eq!(endpoint("/api/events"), Some((Endpoint::Events, None)));
        assert_eq!(endpoint("/api/events/"), Some((Endpoint::Events, None)), "a trailing slash is ignored");
        assert_eq!(endpoint("/api/events/stream"), Some((Endpoint::Stream, None)), "stream is a route, not an id");
        assert_eq!(endpoint(&format!("/api/events/{id}")), Some((Endpoint::Event, Some(id))));
        assert_eq!(endpoint(&format!("/api/events/{id}/")), Some((Endpoint::Event, Some(id))));
        assert_eq!(endpoint("/api/events/not-a-uuid"), Some((Endpoint::Event, Some("not-a-uuid"))), "400 later");
        assert_eq!(endpoint("/healthz"), Some((Endpoint::Health, None)));
        assert_eq!(endpoint("/api/openapi.json"), Some((Endpoint::OpenApi, None)));
        for unknown in ["/", "", "/api", "/api/events//", "/api/events/a/b", "/socket.io/", "/healthzz", "//healthz"] {
            assert_eq!(endpoint(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn route_labels_come_from_the_table() {
        assert_eq!(find("/api/events/stream").map(|(r, _)| r.label), Some("api_stream"));
        assert_eq!(find("/metrics").map(|(r, _)| r.label), Some("ops"));
        let allow = ROUTES.iter().find(|r| r.path == "/api/events").map(|r| r.methods.join(", "));
        assert_eq!(allow.as_deref(), Some("GET, POST"));
        for route in ROUTES {
            assert_eq!(find(route.path).map(|(r, _)| r.path), Some(route.path), "no earlier line shadows {route:?}");
        }
    }
}
