//! JWTs at the door: RS256, ES256 and EdDSA keys of a JWKS and an HS256
//! secret; what is refused (`alg: none`, algorithm confusion, a `kid` that
//! names another key, none or an unknown one, expired, not yet valid, issued
//! in the future, another issuer or audience, `"*"`, another tenant) and the
//! codes a refused CONNECT carries; `Authorization: Bearer` on REST (with
//! `WWW-Authenticate`) and streams (ended at the token's expiry); a JWKS URL
//! refetched once for an unknown `kid`; custom claim names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/feed.rs"]
mod feed;
#[path = "common/jwt.rs"]
mod jwt;
#[path = "common/raw.rs"]
mod raw;
#[path = "common/sse.rs"]
mod sse;

use std::net::SocketAddr;
use std::time::Duration;

use eventfeed::config::{JwksSource, JwtConfig};
use feed::{FeedClient, FeedServer, assert_feed_error};
use jwt::{Dir, JwksServer, claims, hs, hs_with, jwks, signed, signed_naming, unix, with};
use serde_json::{Value, json};
use sse::SseClient;

async fn get(addr: SocketAddr, tenant: &str, headers: &[(&str, &str)]) -> raw::Response {
    let mut all = vec![("X-TENANT-ID", tenant)];
    all.extend_from_slice(headers);
    raw::request(addr, "GET", "/api/events", &all, b"").await
}

async fn bearer(addr: SocketAddr, tenant: &str, token: &str) -> raw::Response {
    get(addr, tenant, &[("Authorization", &format!("Bearer {token}"))]).await
}

async fn post_bearer(addr: SocketAddr, tenant: &str, token: &str, message: &str) -> raw::Response {
    let auth = format!("Bearer {token}");
    let headers = [("X-TENANT-ID", tenant), ("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    raw::request(addr, "POST", "/api/events", &headers, json!({"message": message}).to_string().as_bytes()).await
}

/// The code a refused CONNECT carries (and its message is `unauthorized`).
async fn refused(addr: SocketAddr, tenant: &str, token: &str) -> String {
    match FeedClient::connect_auth(addr, json!({"tenantId": tenant, "token": token})).await {
        Ok(_) => panic!("CONNECT accepted"),
        Err(data) => {
            assert_eq!(data["message"], "unauthorized", "{data}");
            data["data"]["code"].as_str().unwrap().to_owned()
        }
    }
}

fn jwks_file(dir: &Dir, kids: &[&str]) -> JwtConfig {
    let path = dir.write("jwks.json", &jwks(kids));
    JwtConfig { jwks: Some(JwksSource::File(path)), leeway: Duration::ZERO, ..JwtConfig::default() }
}

#[tokio::test]
async fn every_key_kind_verifies_and_what_is_refused_says_why() {
    let dir = Dir::new("jwt-kinds");
    let config = JwtConfig { secret: Some(jwt::SECRET.into()), ..jwks_file(&dir, &["rsa-1", "ec-1", "ed-1"]) };
    let server = FeedServer::start(jwt::app(None, &config)).await;
    let addr = server.addr();
    let good = claims("alice", "acme", 600);

    // Each kind of key, over REST (Bearer) and as a socket's auth.token.
    for token in [hs(&good), signed("rsa-1", &good), signed("ec-1", &good), signed("ed-1", &good)] {
        let res = bearer(addr, "acme", &token).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let res = post_bearer(addr, "acme", &token, "hello").await;
        assert_eq!(res.status, 201, "{}", res.text());
        assert_eq!(res.json()["author"], "alice", "sub is the author");
        FeedClient::connect_auth(addr, json!({"tenantId": "acme", "token": token})).await.unwrap();
    }

    let now = unix();
    let header_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let body = |c: &Value| jwt::b64url(c.to_string().as_bytes());
    let unsigned = format!("{header_none}.{}.", body(&good));
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned, "invalid_token"),
        ("alg none with a signature part", format!("{header_none}.{}.c2ln", body(&good)), "invalid_token"),
        ("the rsa public key as an HS256 secret", hs_with(&jwt::rsa_public_pem(), &good), "invalid_token"),
        ("another HS256 secret", hs_with(b"not the secret, but long enough too!", &good), "invalid_token"),
        ("a kid naming a key of another algorithm", signed_naming("rsa-1", Some("ec-1"), &good), "invalid_token"),
        ("signed by one key, naming another", signed_naming("ec-2", Some("ec-1"), &good), "invalid_token"),
        ("no kid", signed_naming("rsa-1", None, &good), "invalid_token"),
        ("an unknown kid", signed("rsa-2", &good), "invalid_token"),
        ("expired", hs(&with(good.clone(), json!({"exp": now - 60}))), "token_expired"),
        ("not yet valid", hs(&with(good.clone(), json!({"nbf": now + 300}))), "invalid_token"),
        ("issued in the future", hs(&with(good.clone(), json!({"iat": now + 300}))), "invalid_token"),
        ("no exp", hs(&with(good.clone(), json!({"exp": null}))), "invalid_token"),
        ("no sub", hs(&with(good.clone(), json!({"sub": null}))), "invalid_token"),
        ("every tenant", hs(&with(good.clone(), json!({"tenant": "*"}))), "invalid_token"),
        (
            "every tenant, in a list",
            hs(&with(good.clone(), json!({"tenant": null, "tenants": ["acme", "*"]}))),
            "invalid_token",
        ),
        ("another tenant", hs(&with(good.clone(), json!({"tenant": "globex"}))), "wrong_tenant"),
        ("garbage in three parts", "abc.def.ghi".into(), "invalid_token"),
    ];
    for (what, token, code) in &cases {
        assert_eq!(&refused(addr, "acme", token).await, code, "{what}");
        let res = bearer(addr, "acme", token).await;
        assert_feed_error(&res, 401, "unauthorized");
        if *code != "wrong_tenant" {
            assert_eq!(res.header("www-authenticate"), Some(r#"Bearer error="invalid_token""#), "{what}");
        }
    }
    let res = bearer(addr, "acme", &hs(&with(good.clone(), json!({"tenant": "globex"})))).await;
    assert_eq!(res.header("www-authenticate"), None, "a valid token for another tenant is not an invalid token");
    // A tokens-file lookup for anything that is not a JWT (none configured here).
    assert_eq!(refused(addr, "acme", "token_admin_a").await, "unauthorized", "no demo tokens with JWTs configured");
    let res = get(addr, "acme", &[("X-User-Token", "token_admin_a")]).await;
    assert_feed_error(&res, 401, "unauthorized");
    assert_eq!(res.header("www-authenticate"), None, "not a JWT");

    // Counted by reason.
    let metrics = raw::request(addr, "GET", "/metrics", &[], b"").await;
    let text = metrics.text();
    let count = |series: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(-1.0)
    };
    assert!(count(r#"eventfeed_auth_failures_total{channel="socket",reason="expired"}"#) >= 1.0, "{text}");
    assert!(count(r#"eventfeed_auth_failures_total{channel="rest",reason="wrong_tenant"}"#) >= 1.0, "{text}");
    assert!(count(r#"eventfeed_auth_failures_total{channel="rest",reason="invalid"}"#) >= 10.0, "{text}");
    assert!(server.server.stop().await);
}

#[tokio::test]
async fn bearer_on_rest_x_user_token_wins_and_cors_allows_authorization() {
    let dir = Dir::new("jwt-bearer");
    let tokens = dir
        .write("tokens.json", r#"{"tokens":[{"token":"svc_reader","user":"svc","tenants":["acme"],"role":"reader"}]}"#);
    let cors = eventfeed::http::Cors::new(["http://localhost:5173".to_owned()]);
    let config = eventfeed::feed::FeedConfig { cors, ..Default::default() };
    let server = FeedServer::start(jwt::app_config(Some(tokens), &jwt::secret_config(), config)).await;
    let addr = server.addr();
    let token = hs(&claims("alice", "acme", 600));
    // A tokens-file token works as a Bearer too.
    assert_eq!(bearer(addr, "acme", "svc_reader").await.status, 200);
    // Both headers: X-User-Token wins (here a reader, so the write is refused).
    let auth = format!("Bearer {token}");
    let headers = [
        ("X-TENANT-ID", "acme"),
        ("X-User-Token", "svc_reader"),
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let res = raw::request(addr, "POST", "/api/events", &headers, br#"{"message":"m"}"#).await;
    assert_feed_error(&res, 403, "forbidden");
    assert_eq!(post_bearer(addr, "acme", &token, "m").await.status, 201);
    // Not a Bearer credential: missing.
    let res = get(addr, "acme", &[("Authorization", &format!("Basic {token}"))]).await;
    assert_feed_error(&res, 401, "unauthorized");
    // CORS lets a browser send Authorization.
    let pre = raw::request(
        addr,
        "OPTIONS",
        "/api/events",
        &[
            ("Origin", "http://localhost:5173"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        b"",
    )
    .await;
    let allowed = pre.header("access-control-allow-headers").unwrap_or("").to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert!(server.server.stop().await);
}

#[tokio::test]
async fn a_stream_takes_a_bearer_jwt_and_ends_at_its_expiry() {
    let server = FeedServer::start(jwt::app(None, &jwt::secret_config())).await;
    let addr = server.addr();
    let short = hs(&claims("alice", "acme", 2));
    let long = hs(&claims("bob", "acme", 600));
    let auth = format!("Bearer {short}");
    let mut stream =
        SseClient::get(addr, "/api/events/stream", &[("X-TENANT-ID", "acme"), ("Authorization", &auth)]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(post_bearer(addr, "acme", &long, "while valid").await.status, 201);
    let got = stream.events(1).await;
    assert_eq!(got[0]["message"], "while valid");
    // At its exp: an error record, then the end of the stream.
    let mut last = None;
    while let Some(record) = stream.next().await {
        if record.event.is_some() {
            last = Some(record);
        }
    }
    let last = last.expect("a record before the end");
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(last.json()["code"], "token_expired");
    // An expired Bearer cannot open a stream.
    let res = SseClient::get(addr, "/api/events/stream", &[("X-TENANT-ID", "acme"), ("Authorization", &auth)]).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.header("www-authenticate"), Some(r#"Bearer error="invalid_token""#));
    let metrics = raw::request(addr, "GET", "/metrics", &[], b"").await;
    assert!(metrics.text().lines().any(|l| l == "eventfeed_token_expiries_total 1"), "{}", metrics.text());
    assert!(server.server.stop().await);
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_url_at_most_once_per_30_seconds() {
    let idp = JwksServer::start(jwks(&["rsa-1"])).await;
    let config = JwtConfig { jwks: Some(JwksSource::Url(idp.url())), leeway: Duration::ZERO, ..JwtConfig::default() };
    let app = jwt::app(None, &config);
    app.start().await;
    assert_eq!(idp.fetches(), 1, "fetched at start-up");
    let server = FeedServer::start(app).await;
    let addr = server.addr();
    let good = claims("alice", "acme", 600);
    assert_eq!(bearer(addr, "acme", &signed("rsa-1", &good)).await.status, 200);
    assert_eq!(idp.fetches(), 1, "a known kid fetches nothing");
    // The provider adds a key: the first token signed with it makes the
    // server fetch again, and waits for that fetch.
    idp.set(jwks(&["rsa-1", "ec-2"]));
    let client = FeedClient::connect_auth(addr, json!({"tenantId": "acme", "token": signed("ec-2", &good)})).await;
    assert!(client.is_ok(), "the new key verifies after one refetch");
    assert_eq!(idp.fetches(), 2);
    // Many tokens with kids nobody has, at once: at most one more fetch.
    let mut waits = Vec::new();
    for i in 0..20 {
        let token = signed_naming("ed-1", Some(&format!("nobody-{i}")), &good);
        waits.push(tokio::spawn(async move { bearer(addr, "acme", &token).await.status }));
    }
    for w in waits {
        assert_eq!(w.await.unwrap(), 401);
    }
    assert!(idp.fetches() <= 3, "at most one refetch per 30 s: {}", idp.fetches());
    assert_eq!(bearer(addr, "acme", &signed("ec-2", &good)).await.status, 200, "known keys still verify");
    assert!(server.server.stop().await);
}

#[tokio::test]
async fn custom_claim_names_read_an_identity_providers_tokens() {
    // Keycloak-like: tenants under org.ids, roles under realm_access.roles.
    let config = JwtConfig {
        tenant_claim: Some("org.ids".into()),
        role_claim: "realm_access.roles".into(),
        ..jwt::secret_config()
    };
    let server = FeedServer::start(jwt::app(None, &config)).await;
    let addr = server.addr();
    let now = unix();
    let token = |roles: Value, ids: Value| {
        hs(&json!({"sub": "kc-user", "exp": now + 600, "org": {"ids": ids}, "realm_access": {"roles": roles}}))
    };
    let admin = token(json!(["offline_access", "admin"]), json!(["acme", "globex"]));
    assert_eq!(post_bearer(addr, "globex", &admin, "m").await.status, 201);
    let reader = token(json!(["offline_access"]), json!(["acme"]));
    assert_eq!(bearer(addr, "acme", &reader).await.status, 200);
    assert_feed_error(&post_bearer(addr, "acme", &reader, "m").await, 403, "forbidden");
    assert_feed_error(&bearer(addr, "globex", &reader).await, 401, "unauthorized");
    let star = token(json!(["admin"]), json!(["*"]));
    assert_eq!(refused(addr, "acme", &star).await, "invalid_token", "never every tenant");
    // The default claim is not read when another is configured.
    let plain = hs(&claims("alice", "acme", 600));
    assert_eq!(refused(addr, "acme", &plain).await, "invalid_token");
    assert!(server.server.stop().await);
}

#[tokio::test]
async fn issuer_and_audience_must_match_when_set() {
    let config = JwtConfig {
        issuer: Some("https://idp.example.com/".into()),
        audience: Some("eventfeed".into()),
        ..jwt::secret_config()
    };
    let server = FeedServer::start(jwt::app(None, &config)).await;
    let addr = server.addr();
    let base =
        with(claims("alice", "acme", 600), json!({"iss": "https://idp.example.com/", "aud": ["web", "eventfeed"]}));
    assert_eq!(bearer(addr, "acme", &hs(&base)).await.status, 200);
    for (what, claims) in [
        ("another issuer", with(base.clone(), json!({"iss": "https://evil.example.com/"}))),
        ("no issuer", with(base.clone(), json!({"iss": null}))),
        ("another audience", with(base.clone(), json!({"aud": "web"}))),
        ("no audience", with(base.clone(), json!({"aud": null}))),
    ] {
        assert_eq!(refused(addr, "acme", &hs(&claims)).await, "invalid_token", "{what}");
    }
    assert!(server.server.stop().await);
}
