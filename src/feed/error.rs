//! The feed's errors, and their one mapping to HTTP statuses, REST bodies
//! (`{"error":{"code","message"}}`) and socket answers (`{code, message}`).

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::http::{self as h, Body};

/// An error of the feed's API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// 400 `bad_request`: malformed JSON, wrong types, bad `limit`/`sinceId`.
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// 401 `unauthorized`: missing or unknown credentials, or a tenant the token may not use.
    #[error("invalid or missing credentials")]
    Unauthorized,
    /// 401 `unauthorized` for a JWT that was presented and refused (invalid,
    /// expired, revoked, another tenant), with `WWW-Authenticate: Bearer
    /// error="invalid_token"`.
    #[error("invalid or expired token")]
    InvalidToken,
    /// 403 `forbidden`: a reader that writes.
    #[error("this token may not write events")]
    Forbidden,
    /// 403 `forbidden`, for another reason (a socket's identity never
    /// changes: a refresh cannot make it another user or tenant).
    #[error("{0}")]
    Refused(&'static str),
    /// 403 `forbidden`: a browser origin outside the origin policy.
    #[error("this origin is not allowed")]
    OriginNotAllowed,
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405 `method_not_allowed`, with the allowed methods.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The route's methods, as the `Allow` header lists them.
        allow: &'static [&'static str],
    },
    /// 409 `conflict`: a write with this idempotency key is still being
    /// carried out; with the seconds to wait.
    #[error("a write with this idempotency key is in progress; retry")]
    Conflict {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 422 `idempotency_key_reused`: the key was used for another message.
    #[error("this idempotency key was used for another message")]
    IdempotencyKeyReused,
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(&'static str),
    /// 408 `request_timeout`: the body did not arrive in time.
    #[error("the request body did not arrive in time")]
    Timeout,
    /// 415 `unsupported_media_type`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 422 `validation_failed`.
    #[error("{0}")]
    Validation(&'static str),
    /// 429 `rate_limited`, with the seconds to wait.
    #[error("rate limit exceeded")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 429 `too_many_connections`: the tenant has as many subscribers
    /// (sockets and streams) as allowed here; with the seconds to wait.
    #[error("this tenant has too many open connections")]
    TooManyConnections {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 503 `unavailable`, with the seconds to wait.
    #[error("service unavailable")]
    Unavailable {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 500 `internal` (never a panic's text).
    #[error("internal error")]
    Internal,
}

impl FeedError {
    /// A 400 with this message.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        FeedError::BadRequest(message.into())
    }

    /// The error code string.
    pub fn code(&self) -> &'static str {
        match self {
            FeedError::BadRequest(_) => "bad_request",
            FeedError::Unauthorized | FeedError::InvalidToken => "unauthorized",
            FeedError::Forbidden | FeedError::Refused(_) | FeedError::OriginNotAllowed => "forbidden",
            FeedError::NotFound(_) => "not_found",
            FeedError::MethodNotAllowed { .. } => "method_not_allowed",
            FeedError::PayloadTooLarge(_) => "payload_too_large",
            FeedError::Timeout => "request_timeout",
            FeedError::UnsupportedMediaType => "unsupported_media_type",
            FeedError::Validation(_) => "validation_failed",
            FeedError::Conflict { .. } => "conflict",
            FeedError::IdempotencyKeyReused => "idempotency_key_reused",
            FeedError::RateLimited { .. } => "rate_limited",
            FeedError::TooManyConnections { .. } => "too_many_connections",
            FeedError::Unavailable { .. } => "unavailable",
            FeedError::Internal => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            FeedError::BadRequest(_) => StatusCode::BAD_REQUEST,
            FeedError::Unauthorized | FeedError::InvalidToken => StatusCode::UNAUTHORIZED,
            FeedError::Forbidden | FeedError::Refused(_) | FeedError::OriginNotAllowed => StatusCode::FORBIDDEN,
            FeedError::NotFound(_) => StatusCode::NOT_FOUND,
            FeedError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            FeedError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FeedError::Timeout => StatusCode::REQUEST_TIMEOUT,
            FeedError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FeedError::Validation(_) | FeedError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            FeedError::Conflict { .. } => StatusCode::CONFLICT,
            FeedError::RateLimited { .. } | FeedError::TooManyConnections { .. } => StatusCode::TOO_MANY_REQUESTS,
            FeedError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            FeedError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `{"code": …, "message": …}` (the socket `error` event and ack errors).
    pub fn to_value(&self) -> Value {
        json!({"code": self.code(), "message": self.to_string()})
    }

    /// The REST answer: status, `{"error":{…}}`, and `Allow` / `Retry-After` where due.
    pub fn to_response(&self) -> Response<Body> {
        let body = json!({"error": self.to_value()}).to_string();
        let mut res = h::json(self.status(), Bytes::from(body));
        let headers = res.headers_mut();
        match self {
            FeedError::MethodNotAllowed { allow } => {
                if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.insert(header::ALLOW, value);
                }
            }
            FeedError::InvalidToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="invalid_token""#));
            }
            FeedError::RateLimited { retry_after }
            | FeedError::Conflict { retry_after }
            | FeedError::TooManyConnections { retry_after }
            | FeedError::Unavailable { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from((*retry_after).max(1)));
            }
            _ => {}
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_bodies_and_headers() {
        let res = FeedError::MethodNotAllowed { allow: &["GET", "POST"] }.to_response();
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()[header::ALLOW], "GET, POST");
        let res = FeedError::RateLimited { retry_after: 0 }.to_response();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(FeedError::Validation("x").to_value(), json!({"code": "validation_failed", "message": "x"}));
        assert_eq!(FeedError::Internal.status(), 500);
    }
}
