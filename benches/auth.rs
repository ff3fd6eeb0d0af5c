//! Criterion benchmarks of authentication, what a CONNECT, a REST request or
//! a stream pays once (never per delivered event): a tokens-file token, and
//! a JWT signed with the HS256 secret or a JWKS key (RS256, ES256, EdDSA);
//! and a live socket's check after a reload.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use eventfeed::config::{JwksSource, JwtConfig};
use eventfeed::feed::{Answer, Credentials, Tokens};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "the bench's HS256 secret, 32+ bytes long";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)).unwrap()
}

fn key(kid: &str, alg: Algorithm) -> EncodingKey {
    let pem = fixture(&format!("{kid}.pem"));
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_ed_pem(&pem).unwrap(),
    }
}

fn auth(c: &mut Criterion) {
    let keys = [("rsa-1", Algorithm::RS256), ("ec-1", Algorithm::ES256), ("ed-1", Algorithm::EdDSA)];
    let jwks = JwkSet {
        keys: keys
            .iter()
            .map(|(kid, alg)| {
                let mut jwk = Jwk::from_encoding_key(&key(kid, *alg), *alg).unwrap();
                jwk.common.key_id = Some((*kid).into());
                jwk
            })
            .collect(),
    };
    let dir = std::env::temp_dir().join(format!("eventfeed-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, serde_json::to_string(&jwks).unwrap()).unwrap();
    let tokens_path = dir.join("tokens.json");
    std::fs::write(
        &tokens_path,
        r#"{"tokens":[{"token":"svc_a","user":"svc","tenants":["acme"],"role":"admin"},
                      {"token":"svc_b","user":"svc_b","tenants":["*"],"role":"reader"}]}"#,
    )
    .unwrap();
    let config = JwtConfig {
        secret: Some(SECRET.into()),
        jwks: Some(JwksSource::File(jwks_path)),
        leeway: Duration::from_secs(30),
        ..JwtConfig::default()
    };
    let credentials = Arc::new(Credentials::load(Some(tokens_path), &config).unwrap());
    std::fs::remove_dir_all(&dir).ok();

    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"sub": "alice", "tenants": ["acme", "globex"], "role": "admin", "iat": now, "exp": now + 3600});
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut cases = vec![("tokens file", "svc_a".to_owned()), ("JWT HS256", hs)];
    for (kid, alg) in keys {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        cases.push((
            match alg {
                Algorithm::RS256 => "JWT RS256",
                Algorithm::ES256 => "JWT ES256",
                _ => "JWT EdDSA",
            },
            jsonwebtoken::encode(&header, &claims, &key(kid, alg)).unwrap(),
        ));
    }
    for (name, token) in &cases {
        let Answer::Now(Ok(who)) = credentials.authenticate(Some("acme"), Some(token)) else {
            panic!("{name} is accepted at once")
        };
        c.bench_function(&format!("auth/authenticate, {name}"), |b| {
            b.iter(|| match credentials.authenticate(black_box(Some("acme")), black_box(Some(token))) {
                Answer::Now(r) => black_box(r.is_ok()),
                Answer::Later(_) => unreachable!(),
            })
        });
        c.bench_function(&format!("auth/check a live socket after a reload, {name}"), |b| {
            b.iter(|| black_box(credentials.check(black_box("acme"), &who.credential)))
        });
    }
    let _ = Tokens::none();
}

criterion_group!(benches, auth);
criterion_main!(benches);
