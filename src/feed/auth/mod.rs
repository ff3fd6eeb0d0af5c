//! Authentication and authorization: the one check REST, streams and
//! socket CONNECTs use, and what keeps live connections honest.
//!
//! - [`tokens`]: the tokens file (static tokens for services and demos).
//! - [`jwt`]: JWTs from the operator's backend or identity provider,
//!   verified with `NB_BACKEND_JWT_SECRET` (HS256) or a JWKS ([`jwks`]).
//! - [`revocations`]: JWT users and ids cut off before their `exp`.
//!
//! A presented value of three base64url parts is verified as a JWT (when
//! JWTs are configured); anything else is looked up in the tokens file. The
//! caller always names its tenant, which must be one the credential allows.
//! [`Credentials::reload`] (on `SIGHUP`) re-reads each source on its own; a
//! source that fails keeps its previous version. Whatever may have changed
//! what is accepted bumps a generation that live connections watch
//! ([`Credentials::check`] then says whether theirs still hold). Tokens are
//! never logged.

pub mod jwks;
pub mod jwt;
pub mod revocations;
pub mod tokens;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use jwt::{JwtGrant, KeyRef};
pub use revocations::Revocations;
pub use tokens::{Tokens, TokensError, token_digest};

use super::error::FeedError;
use super::recovery::Kept;
use super::store::Answer;
use crate::config::JwtConfig;
use jwks::Jwks;
use jwt::{Unverified, Verifier, looks_like_jwt};

/// The longest tenant id accepted, in bytes.
pub const MAX_TENANT_ID_LEN: usize = 128;

/// How long start-up waits for a JWKS URL before it goes on (and retries).
pub const JWKS_START_WAIT: Duration = Duration::from_secs(10);

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read and write.
    Admin,
    /// Read only.
    Reader,
}

/// An authenticated caller, for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name (the events' `author`).
    pub user: String,
    /// The tenant the request is for.
    pub tenant: String,
    /// The role.
    pub role: Role,
}

impl Principal {
    /// Checks that this caller may write.
    pub fn require_writer(&self) -> Result<(), FeedError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Reader => Err(FeedError::Forbidden),
        }
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A token of the tokens file, by its SHA-256.
    Token {
        /// The digest.
        digest: [u8; 32],
    },
    /// A JWT.
    Jwt(Box<JwtGrant>),
}

impl Credential {
    /// What a session kept for recovery is bound to: a tokens-file token
    /// itself, or a JWT's user (so a fresh JWT of the same user recovers).
    pub fn binding(&self) -> [u8; 32] {
        match self {
            Credential::Token { digest } => *digest,
            Credential::Jwt(grant) => {
                let mut h = Sha256::new();
                h.update(b"jwt-subject\0");
                h.update(grant.sub.as_bytes());
                h.finalize().into()
            }
        }
    }

    /// The JWT, if it is one.
    pub fn jwt(&self) -> Option<&JwtGrant> {
        match self {
            Credential::Jwt(grant) => Some(grant),
            Credential::Token { .. } => None,
        }
    }
}

/// A caller that proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Who, for which tenant.
    pub principal: Principal,
    /// With what.
    pub credential: Credential,
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No tenant or no token (or a tenant name that cannot be one).
    Missing,
    /// A token the tokens file does not have.
    UnknownToken,
    /// A credential that does not allow the tenant asked for.
    WrongTenant,
    /// A JWT that cannot be verified: signature, key, algorithm, claims.
    InvalidToken,
    /// A JWT past its `exp`.
    Expired,
    /// A JWT of a revoked user or id.
    Revoked,
}

impl AuthFailure {
    /// The code a refused CONNECT's data carries (what a client decides on:
    /// fetch a new token, or give up).
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::Missing | AuthFailure::UnknownToken => "unauthorized",
            AuthFailure::WrongTenant => "wrong_tenant",
            AuthFailure::InvalidToken => "invalid_token",
            AuthFailure::Expired => "token_expired",
            AuthFailure::Revoked => "revoked",
        }
    }

    /// What a refused CONNECT's data says, for people.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "auth.tenantId and auth.token are required",
            AuthFailure::UnknownToken => "invalid credentials",
            AuthFailure::WrongTenant => "this token does not allow this tenant",
            AuthFailure::InvalidToken => "the token cannot be verified",
            AuthFailure::Expired => "the token expired",
            AuthFailure::Revoked => "the token was revoked",
        }
    }

    /// The `reason` label of the auth-failure counter.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::UnknownToken | AuthFailure::InvalidToken => "invalid",
            AuthFailure::WrongTenant => "wrong_tenant",
            AuthFailure::Expired => "expired",
            AuthFailure::Revoked => "revoked",
        }
    }

    /// The REST answer: 401; with `WWW-Authenticate` for a JWT that failed
    /// (not for a valid one naming another tenant: the token is fine, the
    /// request is not).
    pub fn to_error(self, presented_jwt: bool) -> FeedError {
        if presented_jwt && !matches!(self, AuthFailure::Missing | AuthFailure::WrongTenant) {
            FeedError::InvalidToken
        } else {
            FeedError::Unauthorized
        }
    }
}

/// What a live connection's credential is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Still accepted, with this role.
    Accepted(Role),
    /// No longer accepted (removed, tenant withdrawn, revoked).
    Revoked,
    /// A JWT whose key left the JWKS: like an expiry, the client comes back
    /// with a token signed by a current key.
    KeyGone,
}

/// The outcome of a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reload {
    /// The sources that failed (their previous versions stay), with why.
    pub failed: Vec<String>,
}

/// Everything that says who may connect: the tokens file, the JWT keys and
/// claims rules, the revocations; reloadable.
#[derive(Debug)]
pub struct Credentials {
    tokens_file: Option<PathBuf>,
    tokens: RwLock<Arc<Tokens>>,
    revocations_file: Option<PathBuf>,
    revocations: RwLock<Arc<Revocations>>,
    jwt: Option<Verifier>,
    /// Bumped whenever what is accepted may have changed.
    generation: watch::Sender<u64>,
}

impl From<Tokens> for Credentials {
    fn from(tokens: Tokens) -> Self {
        Credentials {
            tokens_file: None,
            tokens: RwLock::new(Arc::new(tokens)),
            revocations_file: None,
            revocations: RwLock::default(),
            jwt: None,
            generation: watch::Sender::new(0),
        }
    }
}

fn read<T>(lock: &RwLock<Arc<T>>) -> Arc<T> {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(lock: &RwLock<Arc<T>>, value: T) {
    *lock.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
}

/// Whether `tenant` can be a tenant id at all: a short name without control
/// characters (a `"*"` credential must not mint arbitrarily long keys into
/// the store and the limiters).
fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty() && tenant.len() <= MAX_TENANT_ID_LEN && !tenant.chars().any(char::is_control)
}

impl Credentials {
    /// The credentials configured: the tokens file (`None` and no JWT
    /// setting: the demo tokens; `None` with JWTs: no static token), the JWT
    /// rules and keys (a JWKS file is read now; a URL is fetched by
    /// [`Credentials::start`]), the revocations. An error names the source
    /// and the entry, never a token.
    pub fn load(tokens_file: Option<PathBuf>, jwt: &JwtConfig) -> Result<Credentials, String> {
        let tokens = match &tokens_file {
            Some(path) => Tokens::load(path).map_err(|e| e.to_string())?,
            None if jwt.enabled() => Tokens::none(),
            None => Tokens::demo(),
        };
        let revocations = match &jwt.revocations {
            Some(path) => Revocations::load(path)?,
            None => Revocations::default(),
        };
        let jwks = jwt.jwks.clone().map(Jwks::new).transpose()?.map(Arc::new);
        Ok(Credentials {
            tokens_file,
            tokens: RwLock::new(Arc::new(tokens)),
            revocations_file: jwt.revocations.clone(),
            revocations: RwLock::new(Arc::new(revocations)),
            jwt: jwt.enabled().then(|| Verifier::new(jwt, jwks)),
            generation: watch::Sender::new(0),
        })
    }

    /// Whether these are the public demo tokens.
    pub fn is_demo(&self) -> bool {
        read(&self.tokens).is_demo()
    }

    /// Whether JWTs are accepted.
    pub fn accepts_jwts(&self) -> bool {
        self.jwt.is_some()
    }

    /// The JWT clock skew allowed (zero without JWTs).
    pub fn leeway(&self) -> Duration {
        self.jwt.as_ref().map_or(Duration::ZERO, Verifier::leeway)
    }

    /// Fetches a JWKS URL (start-up waits for it, at most
    /// [`JWKS_START_WAIT`], then goes on) and refreshes it every
    /// [`jwks::REFRESH_EVERY`] until `shutdown`, retrying sooner while it has
    /// no keys.
    pub async fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        let Some(jwks) = self.jwt.as_ref().and_then(Verifier::jwks).filter(|j| j.is_url()).cloned() else { return };
        let first = tokio::time::timeout(JWKS_START_WAIT, jwks.fetch()).await;
        match &first {
            Ok(Ok(_)) => tracing::info!(keys = jwks.keys().len(), "JWKS fetched"),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot fetch the JWKS; retrying"),
            Err(_) => tracing::error!("the JWKS did not come in time; retrying"),
        }
        let credentials = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = if jwks.keys().is_empty() { jwks::REFETCH_EVERY } else { jwks::REFRESH_EVERY };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
                match jwks.fetch().await {
                    Ok(true) => {
                        tracing::info!(keys = jwks.keys().len(), "JWKS changed");
                        credentials.changed();
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; the keys in force stay"),
                }
            }
        });
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// A receiver that sees every change of what is accepted.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Authenticates `token` for `tenant`: at once, or — a JWT whose `kid`
    /// the JWKS URL may have gained — after one bounded refetch.
    pub fn authenticate(
        self: &Arc<Self>,
        tenant: Option<&str>,
        token: Option<&str>,
    ) -> Answer<
        Result<Authenticated, AuthFailure>,
        impl Future<Output = Result<Authenticated, AuthFailure>> + Send + use<>,
    > {
        let (Some(tenant), Some(token)) = (tenant, token) else {
            return Answer::Now(Err(AuthFailure::Missing));
        };
        if !valid_tenant(tenant) || token.is_empty() {
            return Answer::Now(Err(AuthFailure::Missing));
        }
        let Some(verifier) = self.jwt.as_ref().filter(|_| looks_like_jwt(token)) else {
            let found = read(&self.tokens).authenticate(tenant, token);
            return Answer::Now(
                found.map(|(principal, digest)| Authenticated { principal, credential: Credential::Token { digest } }),
            );
        };
        let keys = verifier.jwks().map(|j| j.keys());
        match verifier.verify(token, keys.as_deref()) {
            Ok(grant) => Answer::Now(self.grant(tenant, grant)),
            Err(Unverified::Failed(failure)) => Answer::Now(Err(failure)),
            Err(Unverified::UnknownKid(kid)) => {
                let (credentials, tenant, token) = (self.clone(), tenant.to_owned(), token.to_owned());
                // Boxed: rare, and large (a JWKS fetch). Every request that
                // authenticates holds room for this future, so inline it
                // would put each one past the allocator's per-thread cache.
                Answer::Later(Box::pin(async move {
                    let Some(verifier) = credentials.jwt.as_ref() else { return Err(AuthFailure::InvalidToken) };
                    let Some(jwks) = verifier.jwks() else { return Err(AuthFailure::InvalidToken) };
                    let keys = jwks.refetch_for(&kid).await;
                    match verifier.verify(&token, Some(&keys)) {
                        Ok(grant) => credentials.grant(&tenant, grant),
                        Err(Unverified::Failed(failure)) => Err(failure),
                        Err(Unverified::UnknownKid(_)) => Err(AuthFailure::InvalidToken),
                    }
                }))
            }
        }
    }

    /// What a verified JWT grants for `tenant`.
    fn grant(&self, tenant: &str, grant: JwtGrant) -> Result<Authenticated, AuthFailure> {
        if !grant.allows(tenant) {
            return Err(AuthFailure::WrongTenant);
        }
        if read(&self.revocations).revokes(&grant.sub, tenant, grant.jti.as_deref(), grant.iat) {
            return Err(AuthFailure::Revoked);
        }
        let principal = Principal { user: grant.sub.clone(), tenant: tenant.to_owned(), role: grant.role };
        Ok(Authenticated { principal, credential: Credential::Jwt(Box::new(grant)) })
    }

    /// Verifies a JWT presented to refresh a live socket's (no refetch: a
    /// socket's refresh waits for nothing).
    pub fn verify_refresh(&self, token: &str) -> Result<JwtGrant, AuthFailure> {
        let Some(verifier) = self.jwt.as_ref().filter(|_| looks_like_jwt(token)) else {
            return Err(AuthFailure::InvalidToken);
        };
        let keys = verifier.jwks().map(|j| j.keys());
        verifier.verify(token, keys.as_deref()).map_err(|e| match e {
            Unverified::Failed(failure) => failure,
            Unverified::UnknownKid(_) => AuthFailure::InvalidToken,
        })
    }

    /// Whether a JWT of `sub` (with this `jti` and `iat`) is revoked for `tenant`.
    pub fn revoked(&self, sub: &str, tenant: &str, jti: Option<&str>, iat: Option<i64>) -> bool {
        read(&self.revocations).revokes(sub, tenant, jti, iat)
    }

    /// What a live connection's credential, for `tenant`, is worth now.
    pub fn check(&self, tenant: &str, credential: &Credential) -> Check {
        match credential {
            Credential::Token { digest } => match read(&self.tokens).role_of(digest, tenant) {
                Some(role) => Check::Accepted(role),
                None => Check::Revoked,
            },
            Credential::Jwt(grant) => {
                if self.revoked(&grant.sub, tenant, grant.jti.as_deref(), grant.iat) {
                    Check::Revoked
                } else if !self.jwt.as_ref().is_some_and(|v| v.key_holds(&grant.key)) {
                    Check::KeyGone
                } else {
                    Check::Accepted(grant.role)
                }
            }
        }
    }

    /// Whether a session kept for recovery is still held by its credentials:
    /// its tokens-file token still allows its tenant, or its JWT's user and
    /// `jti` are not revoked there.
    pub fn keeps(&self, kept: &Kept) -> bool {
        match &kept.jwt {
            None => read(&self.tokens).role_of(&kept.token_digest, &kept.tenant).is_some(),
            Some(jwt) => !self.revoked(&kept.user, &kept.tenant, jwt.jti.as_deref(), jwt.iat),
        }
    }

    /// Re-reads the tokens file, the revocations file and the JWKS, each on
    /// its own: one that fails keeps its previous version. Bumps the
    /// generation (live connections look again) whatever happened.
    pub async fn reload(&self) -> Reload {
        let mut failed = Vec::new();
        if let Some(path) = &self.tokens_file {
            match Tokens::load(path) {
                Ok(tokens) => write(&self.tokens, tokens),
                Err(e) => failed.push(e.to_string()),
            }
        }
        if let Some(path) = &self.revocations_file {
            match Revocations::load(path) {
                Ok(revocations) => write(&self.revocations, revocations),
                Err(e) => failed.push(e),
            }
        }
        if let Some(jwks) = self.jwt.as_ref().and_then(Verifier::jwks)
            && let Err(e) = jwks.fetch().await
        {
            failed.push(e);
        }
        self.changed();
        Reload { failed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_tie_tokens_to_themselves_and_jwts_to_their_user() {
        let token = Credential::Token { digest: token_digest("t") };
        assert_eq!(token.binding(), token_digest("t"));
        let grant = |sub: &str, jti: &str| JwtGrant {
            sub: sub.into(),
            tenants: vec!["a".into()],
            role: Role::Reader,
            exp: 10,
            iat: Some(1),
            jti: Some(jti.into()),
            key: KeyRef::Secret,
            verified_at: 1,
        };
        let one = Credential::Jwt(Box::new(grant("alice", "1")));
        let fresh = Credential::Jwt(Box::new(grant("alice", "2")));
        assert_eq!(one.binding(), fresh.binding(), "a fresh JWT of the same user recovers");
        assert_ne!(one.binding(), Credential::Jwt(Box::new(grant("bob", "1"))).binding());
        assert_ne!(one.binding(), token.binding());
    }

    #[tokio::test]
    async fn tokens_and_tenant_names() {
        let c = Arc::new(Credentials::from(Tokens::demo()));
        let now = |tenant: Option<&str>, token: Option<&str>| match c.authenticate(tenant, token) {
            Answer::Now(r) => r,
            Answer::Later(_) => panic!("a tokens-file token is answered at once"),
        };
        assert!(now(Some("company_a"), Some("token_admin_a")).is_ok());
        assert_eq!(now(None, Some("token_admin_a")), Err(AuthFailure::Missing));
        assert_eq!(now(Some("company_a"), None), Err(AuthFailure::Missing));
        assert_eq!(now(Some(&"x".repeat(129)), Some("token_admin_a")), Err(AuthFailure::Missing));
        assert_eq!(now(Some("a\nb"), Some("token_admin_a")), Err(AuthFailure::Missing));
        assert_eq!(now(Some("company_a"), Some("x.y.z")), Err(AuthFailure::UnknownToken), "no JWTs configured");
        let who = now(Some("company_a"), Some("token_reader_a")).unwrap();
        assert_eq!(c.check("company_a", &who.credential), Check::Accepted(Role::Reader));
        assert_eq!(c.check("company_b", &who.credential), Check::Revoked);
    }
}
