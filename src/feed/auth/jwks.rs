//! The public keys JWTs are verified with (`NB_BACKEND_JWT_JWKS`): a JWKS
//! document from a file or an `http://` / `https://` URL, its RS256, ES256
//! and EdDSA (Ed25519) keys by `kid`.
//!
//! A file is read at start-up and on `SIGHUP`. A URL is fetched at start-up
//! (start-up waits for it, bounded, then goes on and retries), on `SIGHUP`,
//! every 10 minutes, and when a token names a `kid` the set does not have —
//! at most once per 30 s; requests that arrive meanwhile wait for that fetch.
//! A key that disappears from the document stops validating: that is how
//! keys are rotated and revoked. `https://` uses rustls (with the `ring`
//! provider) and the Mozilla root certificates bundled by `webpki-roots`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

use crate::config::JwksSource;

/// A fetch of the JWKS gives up after this long.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document accepted.
pub const MAX_DOCUMENT: usize = 1024 * 1024;
/// An unknown `kid` triggers a refetch at most this often.
pub const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// A URL is fetched again this often regardless.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);

/// One verification key.
pub struct Key {
    /// Its `kid`.
    pub kid: Arc<str>,
    /// The one algorithm it verifies (from the key, never from a token).
    pub algorithm: Algorithm,
    /// The key itself.
    pub decoding: DecodingKey,
    /// Its RFC 7638 thumbprint: the same `kid` with other key material is another key.
    pub thumbprint: Arc<str>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// The keys of one JWKS document, by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<Key>>,
}

/// The algorithm a JWK is for: its `alg` when it has one, else what its key
/// type implies; `None` for anything but RS256, ES256 and EdDSA.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Some(implied),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Some(implied),
        Some(KeyAlgorithm::EdDSA) if implied == Algorithm::EdDSA => Some(implied),
        Some(_) => None,
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys without a `kid`, of another algorithm, or
    /// that cannot be used are skipped (a warning names them); a document
    /// that is not a JWKS is an error.
    pub fn parse(text: &str) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            let Some(kid) = jwk.common.key_id.clone() else {
                tracing::warn!(index, "JWKS key without a kid skipped");
                continue;
            };
            let Some(algorithm) = algorithm_of(jwk) else {
                tracing::warn!(index, kid, "JWKS key of an algorithm other than RS256, ES256, EdDSA skipped");
                continue;
            };
            let (Ok(decoding), Ok(thumbprint)) = (DecodingKey::from_jwk(jwk), jwk.thumbprint(ThumbprintHash::SHA256))
            else {
                tracing::warn!(index, kid, "JWKS key that cannot be used skipped");
                continue;
            };
            let (kid, thumbprint): (Arc<str>, Arc<str>) = (kid.into(), thumbprint.into());
            keys.insert(kid.to_string(), Arc::new(Key { kid, algorithm, decoding, thumbprint }));
        }
        Ok(KeySet { keys })
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&Arc<Key>> {
        self.keys.get(kid)
    }

    /// Whether the key `kid` with this thumbprint is still in the set.
    pub fn holds(&self, kid: &str, thumbprint: &str) -> bool {
        self.keys.get(kid).is_some_and(|k| &*k.thumbprint == thumbprint)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `other` holds exactly the same keys.
    fn same_as(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len() && self.keys.values().all(|k| other.holds(&k.kid, &k.thumbprint))
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The JWKS in force, and how to get it again.
pub struct Jwks {
    source: JwksSource,
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch for an unknown `kid` started; held while one runs,
    /// so requests that arrive meanwhile wait for it.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    client: Option<HttpsClient>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("source", &self.source).field("keys", &self.keys().len()).finish()
    }
}

impl Jwks {
    /// The JWKS of `source`. A file is read now (an error stops start-up);
    /// a URL starts empty until [`Jwks::fetch`].
    pub fn new(source: JwksSource) -> Result<Jwks, String> {
        let (keys, client) = match &source {
            JwksSource::File(path) => (Self::read(path)?, None),
            JwksSource::Url(_) => {
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_webpki_roots()
                    .https_or_http()
                    .enable_http1()
                    .build();
                (KeySet::default(), Some(Client::builder(TokioExecutor::new()).build(https)))
            }
        };
        Ok(Jwks { source, keys: RwLock::new(Arc::new(keys)), refetch: tokio::sync::Mutex::new(None), client })
    }

    fn read(path: &std::path::Path) -> Result<KeySet, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
        KeySet::parse(&text).map_err(|e| format!("JWKS file {}: {e}", path.display()))
    }

    /// Whether the keys come from a URL.
    pub fn is_url(&self) -> bool {
        matches!(self.source, JwksSource::Url(_))
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, keys: KeySet) -> bool {
        let mut current = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let changed = !current.same_as(&keys);
        *current = Arc::new(keys);
        changed
    }

    async fn get(&self, url: &str) -> Result<KeySet, String> {
        let Some(client) = &self.client else { return Err("no HTTP client".to_owned()) };
        let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
        let fetch = async {
            let res = client.get(uri).await.map_err(|e| format!("cannot fetch the JWKS: {e}"))?;
            if !res.status().is_success() {
                return Err(format!("fetching the JWKS answered {}", res.status()));
            }
            // Bound hit: a document over the limit is refused, the keys in force stay.
            let body = Limited::new(res.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .map_err(|e| format!("cannot read the JWKS: {e}"))?
                .to_bytes();
            let text = std::str::from_utf8(&body).map_err(|_| "the JWKS is not UTF-8".to_owned())?;
            KeySet::parse(text)
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch).await.map_err(|_| "fetching the JWKS timed out".to_owned())?
    }

    /// Gets the document again (a file re-read, a URL fetched); the keys in
    /// force change only when that works. Whether they changed.
    pub async fn fetch(&self) -> Result<bool, String> {
        let keys = match &self.source {
            JwksSource::File(path) => Self::read(path)?,
            JwksSource::Url(url) => self.get(url).await?,
        };
        Ok(self.replace(keys))
    }

    /// The keys after looking again for an unknown `kid`: a URL is fetched
    /// unless it was for that reason less than [`REFETCH_EVERY`] ago; callers
    /// that arrive while a fetch runs wait for it.
    pub async fn refetch_for(&self, kid: &str) -> Arc<KeySet> {
        if !self.is_url() {
            return self.keys();
        }
        let mut last = self.refetch.lock().await;
        if self.keys().get(kid).is_some() || last.is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
            return self.keys();
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "JWKS refetch for an unknown kid failed; the keys in force stay");
        }
        self.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ed25519 JWK (RFC 8037's example key).
    const ED: &str = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed1"}"#;

    #[test]
    fn keys_by_kid_with_the_algorithm_of_the_key() {
        let set = KeySet::parse(&format!(r#"{{"keys":[{ED}]}}"#)).unwrap();
        assert_eq!(set.len(), 1);
        let key = set.get("ed1").unwrap();
        assert_eq!(key.algorithm, Algorithm::EdDSA);
        assert!(set.holds("ed1", &key.thumbprint));
        assert!(!set.holds("ed1", "another"));
        assert!(set.get("nope").is_none());
    }

    #[test]
    fn unusable_keys_are_skipped_and_a_non_jwks_is_an_error() {
        let no_kid = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let hmac = r#"{"kty":"oct","k":"c2VjcmV0","kid":"h"}"#;
        let wrong_alg = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"x","alg":"RS256"}"#;
        let set = KeySet::parse(&format!(r#"{{"keys":[{no_kid},{hmac},{wrong_alg},{ED}]}}"#)).unwrap();
        assert_eq!(set.len(), 1, "only the usable one");
        assert!(KeySet::parse(r#"{"not":"a jwks"}"#).is_err());
        assert!(KeySet::parse("nope").is_err());
    }

    #[tokio::test]
    async fn an_https_url_that_fails_keeps_the_keys_and_says_why() {
        // A local port that speaks no TLS: the handshake fails, nothing panics
        // (the TLS provider is chosen at build time), the keys stay empty.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\nnot tls").await;
            }
        });
        let jwks = Jwks::new(JwksSource::Url(format!("https://{addr}/jwks.json"))).unwrap();
        let e = jwks.fetch().await.unwrap_err();
        assert!(e.contains("cannot fetch the JWKS"), "{e}");
        assert_eq!(jwks.keys().len(), 0);
        let closed = Jwks::new(JwksSource::Url("https://127.0.0.1:1/jwks.json".into())).unwrap();
        assert!(closed.fetch().await.is_err());
    }

    #[test]
    fn sets_compare_by_kid_and_material() {
        let a = KeySet::parse(&format!(r#"{{"keys":[{ED}]}}"#)).unwrap();
        let b = KeySet::parse(&format!(r#"{{"keys":[{ED}]}}"#)).unwrap();
        assert!(a.same_as(&b));
        assert!(!a.same_as(&KeySet::default()));
    }
}
