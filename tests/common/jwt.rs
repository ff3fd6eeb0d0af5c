//! JWTs for the tests: claims, signing with the test keys of
//! `tests/fixtures/jwt`, JWKS documents built from them, files the server
//! re-reads, and a JWKS URL whose document a test changes.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use eventfeed::app::App;
use eventfeed::config::JwtConfig;
use eventfeed::engine::EngineConfig;
use eventfeed::feed::{Credentials, FeedConfig};
use eventfeed::sio::SioConfig;
use http_body_util::Full;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The HS256 secret of the tests.
pub const SECRET: &str = "the tests' HS256 secret, 32+ bytes long";

/// Now, in Unix seconds.
pub fn unix() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `secs` seconds from now, in ISO 8601 (a revocation's `issuedBefore`).
pub fn iso_after(secs: i64) -> String {
    eventfeed_protocol::date::iso_string((unix() + secs) as f64 * 1000.0).unwrap()
}

/// Claims of a token for `sub` in `tenant`, admin, issued now, valid `ttl` seconds.
pub fn claims(sub: &str, tenant: &str, ttl: i64) -> Value {
    let now = unix();
    json!({"sub": sub, "tenant": tenant, "role": "admin", "iat": now, "exp": now + ttl})
}

/// `claims` with `extra` merged in (a `null` member removes the claim).
pub fn with(mut claims: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// Base64url without padding (to build tokens by hand).
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An HS256 token signed with [`SECRET`].
pub fn hs(claims: &Value) -> String {
    hs_with(SECRET.as_bytes(), claims)
}

/// An HS256 token signed with `secret`.
pub fn hs_with(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)
}

/// The algorithm of a test key (by its file name).
pub fn alg_of(kid: &str) -> Algorithm {
    match kid.split('-').next().unwrap() {
        "rsa" => Algorithm::RS256,
        "ec" => Algorithm::ES256,
        "ed" => Algorithm::EdDSA,
        other => panic!("no test key kind {other}"),
    }
}

/// The private key `kid` (`rsa-1`, `ec-2`, `ed-1`, …).
pub fn key(kid: &str) -> EncodingKey {
    let pem = std::fs::read(fixture(&format!("{kid}.pem"))).unwrap();
    match alg_of(kid) {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_ed_pem(&pem).unwrap(),
    }
}

/// A token signed with the test key `kid`, naming it in its header.
pub fn signed(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg_of(kid));
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key(kid)).unwrap()
}

/// A token signed with `kid`'s key but naming `named` (or no `kid`).
pub fn signed_naming(kid: &str, named: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg_of(kid));
    header.kid = named.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key(kid)).unwrap()
}

/// The public PEM of `rsa-1` (what an algorithm-confusion attack signs with).
pub fn rsa_public_pem() -> Vec<u8> {
    std::fs::read(fixture("rsa-1.pub.pem")).unwrap()
}

/// A JWKS document of the public halves of `kids`.
pub fn jwks(kids: &[&str]) -> String {
    let keys = kids
        .iter()
        .map(|kid| {
            let mut jwk = Jwk::from_encoding_key(&key(kid), alg_of(kid)).unwrap();
            jwk.common.key_id = Some((*kid).into());
            jwk.common.key_algorithm = Some(match alg_of(kid) {
                Algorithm::RS256 => KeyAlgorithm::RS256,
                Algorithm::ES256 => KeyAlgorithm::ES256,
                _ => KeyAlgorithm::EdDSA,
            });
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// A directory of files for one test, removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    /// A fresh directory named after `test`.
    pub fn new(test: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("eventfeed-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `name` (atomically: a reload never reads half a file).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// JWT settings with the test secret and no leeway.
pub fn secret_config() -> JwtConfig {
    JwtConfig { secret: Some(SECRET.into()), leeway: Duration::ZERO, ..JwtConfig::default() }
}

/// An app with these credentials, recovery on for 30 s.
pub fn app(tokens_file: Option<PathBuf>, jwt: &JwtConfig) -> App {
    let credentials = Credentials::load(tokens_file, jwt).unwrap();
    let config = FeedConfig { recovery_window: Duration::from_secs(30), ..FeedConfig::default() };
    App::new(config, credentials, crate::feed::quiet_engine(1_000_000), SioConfig::default())
}

/// An app with these credentials and feed settings (recovery on for 30 s).
pub fn app_config(tokens_file: Option<PathBuf>, jwt: &JwtConfig, config: FeedConfig) -> App {
    let credentials = Credentials::load(tokens_file, jwt).unwrap();
    let config = FeedConfig { recovery_window: Duration::from_secs(30), ..config };
    App::new(config, credentials, crate::feed::quiet_engine(1_000_000), SioConfig::default())
}

/// An app with these credentials and this engine.
pub fn app_with(tokens_file: Option<PathBuf>, jwt: &JwtConfig, engine: EngineConfig) -> App {
    let credentials = Credentials::load(tokens_file, jwt).unwrap();
    let config = FeedConfig { recovery_window: Duration::from_secs(30), ..FeedConfig::default() };
    App::new(config, credentials, engine, SioConfig::default())
}

/// A JWKS URL on loopback whose document the test sets, counting fetches.
pub struct JwksServer {
    /// Where it listens.
    pub addr: SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    /// Serves `document` at `/jwks.json`.
    pub async fn start(document: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (doc, count) = (doc.clone(), count.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let body = doc.lock().unwrap().clone();
                        async move {
                            let res = http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        JwksServer { addr, document, fetches }
    }

    /// The URL of the document.
    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Replaces the document.
    pub fn set(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    /// How many times it was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}
