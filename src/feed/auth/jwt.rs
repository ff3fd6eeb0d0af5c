//! JWT verification: which key, which claims, what they grant.
//!
//! The algorithm comes from the key, never from the token alone: an HS256
//! token is verified with `NB_BACKEND_JWT_SECRET` (and refused when none is
//! configured); any other is verified with the JWKS key its `kid` names, by
//! that key's one algorithm (RS256, ES256 or EdDSA). `alg: none`, a token
//! without a `kid` for the JWKS, an unknown `kid`, another issuer or audience
//! are refused.
//!
//! Claims: `sub` (the user, required), `exp` (required), `nbf` and `iat` (a
//! time ahead of now by more than the leeway is refused), the tenants
//! (`tenant` or `tenants`, or the configured claim; never `"*"`: only a
//! tokens-file entry may grant every tenant) and the role (`admin` or
//! `reader`; an array means admin when it contains `admin`; absent: reader).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::{Jwks, KeySet};
use super::{AuthFailure, Role};
use crate::config::JwtConfig;

/// Which key verified a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// `NB_BACKEND_JWT_SECRET`.
    Secret,
    /// A JWKS key.
    Jwks {
        /// Its `kid`.
        kid: Arc<str>,
        /// Its thumbprint (the same `kid` with other material is another key).
        thumbprint: Arc<str>,
    },
}

/// What a verified JWT grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtGrant {
    /// `sub`: the user.
    pub sub: String,
    /// The tenants it may use.
    pub tenants: Vec<String>,
    /// Its role.
    pub role: Role,
    /// `exp`, Unix seconds.
    pub exp: i64,
    /// `iat`, Unix seconds, if present.
    pub iat: Option<i64>,
    /// `jti`, if present.
    pub jti: Option<String>,
    /// The key that verified it.
    pub key: KeyRef,
    /// When it was verified, Unix seconds (its lifetime's start without `iat`).
    pub verified_at: i64,
}

impl JwtGrant {
    /// Whether it allows `tenant`.
    pub fn allows(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t == tenant)
    }
}

/// Why a token could not be verified with the keys in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unverified {
    /// It is refused.
    Failed(AuthFailure),
    /// It names a `kid` the JWKS does not have (a refetch may find it).
    UnknownKid(String),
}

/// Whether `token` has the shape of a JWT: three base64url parts (the
/// signature may be empty: an unsecured JWT is a JWT, and is refused as one).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Verifies JWTs with the configured keys.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    tenant_claim: Option<Vec<String>>,
    role_claim: Vec<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &self.secret.is_some())
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn path(dotted: &str) -> Vec<String> {
    dotted.split('.').map(str::to_owned).collect()
}

fn at<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(claims.get(first)?, |v, part| v.get(part))
}

/// The strings of a claim: one string, or an array of strings.
fn strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}

impl Verifier {
    /// A verifier for `config`, with the JWKS `jwks` (already loaded when a file).
    pub fn new(config: &JwtConfig, jwks: Option<Arc<Jwks>>) -> Verifier {
        Verifier {
            secret: config.secret.as_deref().and_then(|s| DecodingKey::from_secret(s.as_bytes()).ok()),
            jwks,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
            tenant_claim: config.tenant_claim.as_deref().map(path),
            role_claim: path(&config.role_claim),
        }
    }

    /// The JWKS, if one is configured.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// The clock skew allowed.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Verifies `token` with the keys in force (`keys`: the JWKS's).
    pub fn verify(&self, token: &str, keys: Option<&KeySet>) -> Result<JwtGrant, Unverified> {
        let invalid = Unverified::Failed(AuthFailure::InvalidToken);
        // Unverified, so only used to pick the key: the key decides the algorithm.
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid.clone())?;
        let (key, algorithm, key_ref) = match header.alg {
            Algorithm::HS256 => (self.secret.as_ref().ok_or(invalid.clone())?, Algorithm::HS256, KeyRef::Secret),
            _ => {
                let (Some(keys), Some(kid)) = (keys, header.kid.as_deref()) else { return Err(invalid) };
                let Some(found) = keys.get(kid) else { return Err(Unverified::UnknownKid(kid.to_owned())) };
                let key_ref = KeyRef::Jwks { kid: found.kid.clone(), thumbprint: found.thumbprint.clone() };
                (&found.decoding, found.algorithm, key_ref)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs() + u64::from(self.leeway.subsec_nanos() > 0);
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::from(["exp".to_owned(), "sub".to_owned()]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Unverified::Failed(AuthFailure::Expired),
            _ => invalid.clone(),
        })?;
        self.grant(&data.claims, key_ref).map_err(Unverified::Failed)
    }

    fn grant(&self, claims: &Map<String, Value>, key: KeyRef) -> Result<JwtGrant, AuthFailure> {
        let invalid = AuthFailure::InvalidToken;
        let now = unix_now();
        let sub = claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(invalid)?;
        let exp = claims.get("exp").and_then(Value::as_f64).ok_or(invalid)? as i64;
        let iat = match claims.get("iat") {
            None => None,
            Some(v) => Some(v.as_f64().ok_or(invalid)? as i64),
        };
        if iat.is_some_and(|iat| (iat - now) as f64 > self.leeway.as_secs_f64()) {
            return Err(invalid);
        }
        // Valid while now < exp (+ leeway); `now` is whole seconds, rounded
        // down, so `now >= exp` exactly when the moment `exp` has come. (The
        // JWT crate lets a token through for the whole second of its `exp`.)
        let leeway =
            i64::try_from(self.leeway.as_secs() + u64::from(self.leeway.subsec_nanos() > 0)).unwrap_or(i64::MAX);
        if now >= exp.saturating_add(leeway) {
            return Err(AuthFailure::Expired);
        }
        let jti = match claims.get("jti") {
            None => None,
            Some(v) => Some(v.as_str().ok_or(invalid)?.to_owned()),
        };
        let tenants = match &self.tenant_claim {
            Some(path) => at(claims, path).and_then(strings).ok_or(invalid)?,
            None => {
                let one = claims.get("tenant").map(|v| strings(v).filter(|v| v.len() == 1).ok_or(invalid));
                let many = claims.get("tenants").map(|v| strings(v).ok_or(invalid));
                match (one, many) {
                    (None, None) => return Err(invalid),
                    (one, many) => {
                        let mut all = one.transpose()?.unwrap_or_default();
                        all.extend(many.transpose()?.unwrap_or_default());
                        all
                    }
                }
            }
        };
        // A JWT never grants every tenant, nor none.
        if tenants.is_empty() || tenants.iter().any(|t| t == "*" || t.is_empty()) {
            return Err(invalid);
        }
        let role = match at(claims, &self.role_claim) {
            Some(Value::String(r)) if r == "admin" => Role::Admin,
            Some(Value::Array(roles)) if roles.iter().any(|r| r == "admin") => Role::Admin,
            _ => Role::Reader,
        };
        Ok(JwtGrant { sub: sub.to_owned(), tenants, role, exp, iat, jti, key, verified_at: now })
    }

    /// Whether the key that verified a grant is still in force.
    pub fn key_holds(&self, key: &KeyRef) -> bool {
        match key {
            KeyRef::Secret => self.secret.is_some(),
            KeyRef::Jwks { kid, thumbprint } => self.jwks.as_ref().is_some_and(|j| j.keys().holds(kid, thumbprint)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier(config: JwtConfig) -> Verifier {
        Verifier::new(&JwtConfig { secret: Some(SECRET.into()), ..config }, None)
    }

    fn sign(claims: Value) -> String {
        jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap())
            .unwrap()
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"sub": "alice", "tenant": "a", "exp": unix_now() + 600});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn shapes() {
        assert!(looks_like_jwt("aaa.bbb.ccc"));
        assert!(looks_like_jwt(&sign(claims(json!({})))));
        for not in ["token_admin_a", "a.b", "a.b.c.d", "a..c", "a.b.c=", "a b.c.d"] {
            assert!(!looks_like_jwt(not), "{not}");
        }
    }

    #[test]
    fn claims_grant_user_tenants_and_role() {
        let v = verifier(JwtConfig::default());
        let g = v.verify(&sign(claims(json!({"role": "admin", "jti": "j1", "iat": unix_now()}))), None).unwrap();
        assert_eq!((g.sub.as_str(), g.tenants.clone(), g.role), ("alice", vec!["a".to_owned()], Role::Admin));
        assert_eq!((g.jti.as_deref(), g.key.clone()), (Some("j1"), KeyRef::Secret));
        let g = v.verify(&sign(json!({"sub": "b", "tenants": ["x", "y"], "exp": unix_now() + 60})), None).unwrap();
        assert_eq!((g.tenants, g.role), (vec!["x".to_owned(), "y".to_owned()], Role::Reader));
        let arr = v.verify(&sign(claims(json!({"role": ["reader", "admin"]}))), None).unwrap();
        assert_eq!(arr.role, Role::Admin);
    }

    #[test]
    fn refusals() {
        let v = verifier(JwtConfig { leeway: Duration::ZERO, ..JwtConfig::default() });
        let failed = |token: &str| v.verify(token, None).unwrap_err();
        let invalid = Unverified::Failed(AuthFailure::InvalidToken);
        assert_eq!(failed(&sign(claims(json!({"exp": unix_now() - 10})))), Unverified::Failed(AuthFailure::Expired));
        assert_eq!(failed(&sign(claims(json!({"nbf": unix_now() + 100})))), invalid, "not yet valid");
        assert_eq!(failed(&sign(claims(json!({"iat": unix_now() + 100})))), invalid, "issued in the future");
        assert_eq!(failed(&sign(claims(json!({"tenant": "*"})))), invalid, "never every tenant");
        assert_eq!(failed(&sign(json!({"sub": "x", "tenants": ["a", "*"], "exp": unix_now() + 60}))), invalid);
        assert_eq!(failed(&sign(json!({"sub": "x", "exp": unix_now() + 60}))), invalid, "no tenant");
        assert_eq!(failed(&sign(json!({"tenant": "a", "exp": unix_now() + 60}))), invalid, "no sub");
        assert_eq!(failed(&sign(json!({"sub": "x", "tenant": "a"}))), invalid, "no exp");
        let other = jsonwebtoken::encode(
            &Header::default(),
            &claims(json!({})),
            &EncodingKey::from_secret(b"another secret of enough length!").unwrap(),
        )
        .unwrap();
        assert_eq!(failed(&other), invalid, "another key");
        // alg none: a header the library does not even parse.
        let none = format!("eyJhbGciOiJub25lIn0.{}.", "eyJzdWIiOiJ4In0");
        assert_eq!(failed(&none), invalid);
        // HS256 with no secret configured (only a JWKS): refused.
        let no_secret = Verifier::new(&JwtConfig::default(), None);
        assert_eq!(no_secret.verify(&sign(claims(json!({}))), None).unwrap_err(), invalid);
    }

    #[test]
    fn issuer_audience_and_custom_claims() {
        let v = verifier(JwtConfig {
            issuer: Some("https://idp".into()),
            audience: Some("feed".into()),
            tenant_claim: Some("org.tenants".into()),
            role_claim: "realm_access.roles".into(),
            ..JwtConfig::default()
        });
        let good = json!({"sub": "k", "exp": unix_now() + 60, "iss": "https://idp", "aud": ["x", "feed"],
            "org": {"tenants": ["a"]}, "realm_access": {"roles": ["admin"]}});
        let g = v.verify(&sign(good.clone()), None).unwrap();
        assert_eq!((g.tenants, g.role), (vec!["a".to_owned()], Role::Admin));
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = json!("https://other");
        assert!(v.verify(&sign(wrong_iss), None).is_err());
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("other");
        assert!(v.verify(&sign(wrong_aud), None).is_err());
        let mut no_claim = good;
        no_claim.as_object_mut().unwrap().remove("org");
        assert!(v.verify(&sign(no_claim), None).is_err());
    }
}
