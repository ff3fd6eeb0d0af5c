//! The REST API, dispatched by hand on hyper: `POST /api/events`,
//! `GET /api/events?sinceId=&limit=`, `GET /api/events/{id}`, plus
//! `GET /healthz` and `GET /readyz`.
//!
//! Unknown paths get 404 JSON; a known path with the wrong method gets 405
//! with `Allow`. Bodies are read with a size limit (`NB_BACKEND_MAX_BODY`);
//! the order of checks on a write is: credentials (401), role (403), media
//! type (415), size (413), JSON shape (400), message rules (422/413).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use uuid::Uuid;

use super::error::FeedError;
use super::event::page_json;
use super::paging::PageRequest;
use super::store::Store;
use super::{Feed, Principal};
use crate::http::{self as h, Body};
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
    fn call(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture {
        Box::pin(async move {
            let cors =
                self.feed.config.cors.headers_for(req.headers().get(header::ORIGIN), req.headers().get(header::HOST));
            // Only a write reads a request body (and says itself when it
            // leaves some unread); any other request's body stays unread.
            let unread_body = h::has_body(&req) && !(cors.is_allowed() && is_write(&req));
            let mut res = if !cors.is_allowed() {
                FeedError::OriginNotAllowed.to_response()
            } else {
                match route(&self, req, peer).await {
                    Ok(res) => res,
                    Err(e) => e.to_response(),
                }
            };
            if unread_body {
                h::last_on_connection(&mut res);
            }
            cors.apply(res.headers_mut());
            res
        })
    }

    fn route_label(&self, path: &str) -> &'static str {
        match path {
            "/api/events" | "/api/events/" => "api_events",
            p if p.starts_with("/api/events/") => "api_event",
            "/healthz" | "/readyz" | "/metrics" => "ops",
            _ => "other",
        }
    }
}

/// `POST /api/events`: the one request whose body is read ([`create`]).
fn is_write<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST && matches!(req.uri().path(), "/api/events" | "/api/events/")
}

async fn route<S: Store>(
    rest: &Rest<S>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, FeedError> {
    let feed = &*rest.feed;
    let path = req.uri().path();
    let method = req.method().clone();
    if method == Method::OPTIONS {
        return Ok(preflight(&req));
    }
    match path {
        "/api/events" | "/api/events/" => match method {
            Method::GET => list(feed, &req, peer).await,
            Method::POST => create(feed, req, peer).await,
            _ => Err(FeedError::MethodNotAllowed { allow: "GET, POST" }),
        },
        "/healthz" => match method {
            Method::GET | Method::HEAD => Ok(h::json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))),
            _ => Err(FeedError::MethodNotAllowed { allow: "GET" }),
        },
        "/readyz" => match method {
            Method::GET | Method::HEAD => match feed.is_ready() {
                Ok(()) => Ok(h::json(StatusCode::OK, Bytes::from_static(br#"{"status":"ready"}"#))),
                Err(why) => {
                    Ok(h::json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(format!(r#"{{"status":"{why}"}}"#))))
                }
            },
            _ => Err(FeedError::MethodNotAllowed { allow: "GET" }),
        },
        "/metrics" => match method {
            Method::GET | Method::HEAD => {
                (rest.refresh)(&feed.metrics);
                Ok(h::response(StatusCode::OK, crate::metrics::CONTENT_TYPE, Bytes::from(feed.metrics.encode())))
            }
            _ => Err(FeedError::MethodNotAllowed { allow: "GET" }),
        },
        _ => match path.strip_prefix("/api/events/") {
            Some(id) if !id.contains('/') => match method {
                Method::GET => get_one(feed, &req, id, peer).await,
                _ => Err(FeedError::MethodNotAllowed { allow: "GET" }),
            },
            _ => Err(FeedError::NotFound("no such route")),
        },
    }
}

fn preflight(req: &Request<Incoming>) -> Response<Body> {
    let mut res = h::preflight(req, true);
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, X-TENANT-ID, X-User-Token"),
    );
    res
}

fn principal<S: Store>(feed: &Feed<S>, headers: &HeaderMap, peer: SocketAddr) -> Result<Principal, FeedError> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    feed.authenticate(get("x-tenant-id"), get("x-user-token")).inspect_err(|_| {
        feed.auth_failed("rest");
        tracing::info!(target: "audit", action = "authenticate", outcome = "unauthorized", tenant = get("x-tenant-id").unwrap_or(""), peer = %peer, "rest auth failed");
    })
}

fn json_ok(status: StatusCode, body: String) -> Response<Body> {
    h::json(status, Bytes::from(body))
}

async fn list<S: Store>(
    feed: &Feed<S>,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, FeedError> {
    let who = principal(feed, req.headers(), peer)?;
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
    let who = principal(feed, req.headers(), peer)?;
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

async fn create<S: Store>(
    feed: &Feed<S>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, FeedError> {
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
    let event = feed.post(&who, message).await.inspect_err(|e| {
        tracing::info!(target: "audit", action = "create_event", outcome = e.code(), tenant = %who.tenant, user = %who.user, peer = %peer, "event refused");
    })?;
    tracing::info!(target: "audit", action = "create_event", outcome = "created", tenant = %who.tenant, user = %who.user, event_id = %event.id, peer = %peer, "event created");
    let mut res = json_ok(StatusCode::CREATED, event.json().get().to_owned());
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/events/{}", event.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
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
    let who = principal(feed, req.headers(), peer).map_err(|e| (e, unread))?;
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
