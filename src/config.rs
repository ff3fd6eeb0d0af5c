//! Configuration from the environment, with the contract's defaults.
//!
//! Every variable is listed once in [`VARS`] (name, default, meaning); `eventfeed
//! --help` prints that table. A bad value stops start-up with a message that
//! names the variable and the accepted range.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A rate: `count` per `per`, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
    /// Requests allowed at once (the bucket size).
    pub burst: u32,
}

/// Settings of Redis mode.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` (or `rediss://`, `redis+unix://`).
    pub url: String,
    /// Prefix of every key this server writes.
    pub prefix: String,
    /// The adapter's channel prefix (`key` of `@socket.io/redis-adapter`).
    pub adapter_key: String,
    /// Deadline of every Redis call.
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "eventfeed".into(),
            adapter_key: "socket.io".into(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Where a JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read at start-up and on `SIGHUP`.
    File(PathBuf),
    /// An `http://` or `https://` URL, fetched at start-up, on an unknown
    /// `kid` (at most once per 30 s), every 10 minutes, and on `SIGHUP`.
    Url(String),
}

/// Settings of JWT authentication (none set: JWTs are not accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The HS256 key (at least 32 bytes).
    pub secret: Option<String>,
    /// The JWKS (RS256, ES256 and EdDSA keys, by `kid`).
    pub jwks: Option<JwksSource>,
    /// `iss` must equal it, when set.
    pub issuer: Option<String>,
    /// `aud` must contain it, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The revocations file.
    pub revocations: Option<PathBuf>,
    /// The claim (a dotted path) naming the tenants; `None`: `tenant` or `tenants`.
    pub tenant_claim: Option<String>,
    /// The claim (a dotted path) naming the role.
    pub role_claim: String,
}

impl JwtConfig {
    /// Whether any way to verify a JWT is configured.
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.jwks.is_some()
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret: None,
            jwks: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            revocations: None,
            tenant_claim: None,
            role_claim: "role".into(),
        }
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub host: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// The Socket.IO namespace of the feed.
    pub namespace: String,
    /// Events kept per tenant.
    pub buffer_size: usize,
    /// Engine.IO ping interval.
    pub ping_interval: Duration,
    /// Engine.IO ping timeout.
    pub ping_timeout: Duration,
    /// Engine.IO `maxPayload` (bytes).
    pub max_payload: usize,
    /// The tokens file; `None` means the demo tokens.
    pub tokens_file: Option<PathBuf>,
    /// Writes per user; `None` when off.
    pub rate_limit: Option<Rate>,
    /// Writes per tenant; `None` when off.
    pub tenant_rate_limit: Option<Rate>,
    /// Browser origins allowed besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Largest REST body (bytes).
    pub max_body: usize,
    /// Connection state recovery window.
    pub recovery_window: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
    /// Idempotency keys remembered per tenant at most.
    pub idempotency_keys: usize,
    /// The log filter (`tracing` env-filter syntax).
    pub log: String,
    /// Logs as JSON lines instead of text.
    pub log_json: bool,
    /// Frames queued per session before it is dropped as a slow consumer.
    pub max_queue: usize,
    /// Open connections at most.
    pub max_connections: usize,
    /// Sockets one tenant may have connected at once.
    pub max_tenant_connections: usize,
    /// Redis mode (`NB_BACKEND_REDIS_URL` set): several instances as one.
    pub redis: Option<RedisConfig>,
    /// JWT authentication.
    pub jwt: JwtConfig,
    /// The Socket.IO Admin UI (`NB_BACKEND_ADMIN_UI=on`); `None`: off.
    pub admin: Option<AdminUi>,
}

/// The Admin UI's settings (`NB_BACKEND_ADMIN_*`).
#[derive(Clone)]
pub struct AdminUi {
    /// The user name.
    pub username: String,
    /// The bcrypt hash of the password.
    pub password_hash: String,
    /// Read-only (the default).
    pub readonly: bool,
    /// How long a login's session lasts.
    pub session_ttl: Duration,
}

impl std::fmt::Debug for AdminUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is a secret too (it can be attacked offline): never printed.
        f.debug_struct("AdminUi")
            .field("username", &self.username)
            .field("readonly", &self.readonly)
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

/// One configuration variable: name, default, meaning.
pub struct Var {
    /// The environment variable.
    pub name: &'static str,
    /// Its default, as text.
    pub default: &'static str,
    /// What it sets, and the accepted values.
    pub help: &'static str,
}

/// Every variable the server reads.
pub const VARS: &[Var] = &[
    Var { name: "NB_BACKEND_HOST", default: "127.0.0.1", help: "address to listen on (an IP address)" },
    Var { name: "NB_BACKEND_PORT", default: "3000", help: "port to listen on (0..=65535; 0 picks a free port)" },
    Var {
        name: "NB_BACKEND_SIO_NAMESPACE",
        default: "/events",
        help: "Socket.IO namespace of the feed (starts with /)",
    },
    Var { name: "NB_BACKEND_EVENTS_BUFFER_SIZE", default: "500", help: "events kept per tenant (1..=1000000)" },
    Var {
        name: "NB_BACKEND_SIO_PING_INTERVAL",
        default: "25000",
        help: "Engine.IO ping interval in ms (100..=3600000)",
    },
    Var { name: "NB_BACKEND_SIO_PING_TIMEOUT", default: "20000", help: "Engine.IO ping timeout in ms (100..=3600000)" },
    Var {
        name: "NB_BACKEND_MAX_PAYLOAD",
        default: "1000000",
        help: "Engine.IO maxPayload in bytes: polling bodies and websocket messages (1024..=100000000)",
    },
    Var { name: "NB_BACKEND_TOKENS_FILE", default: "", help: "JSON tokens file; empty: demo tokens (with a warning)" },
    Var {
        name: "NB_BACKEND_RATE_LIMIT",
        default: "100/s",
        help: "writes per user: N/s or N/m, optional burst N/s:B (default burst 2N), or off",
    },
    Var { name: "NB_BACKEND_TENANT_RATE_LIMIT", default: "1000/s", help: "writes per tenant: same syntax, or off" },
    Var {
        name: "NB_BACKEND_ALLOWED_ORIGINS",
        default: "",
        help: "comma-separated browser origins (scheme://host[:port]) allowed besides the server's own",
    },
    Var { name: "NB_BACKEND_MAX_BODY", default: "65536", help: "largest REST request body in bytes (64..=16777216)" },
    Var {
        name: "NB_BACKEND_RECOVERY_WINDOW",
        default: "120000",
        help: "connection state recovery window in ms (0 disables; ..=3600000)",
    },
    Var {
        name: "NB_BACKEND_IDEMPOTENCY_WINDOW",
        default: "3600000",
        help: "how long a write's Idempotency-Key is remembered, in ms (1000..=604800000)",
    },
    Var {
        name: "NB_BACKEND_IDEMPOTENCY_KEYS",
        default: "100000",
        help: "Idempotency-Keys remembered per tenant at most; the oldest are forgotten first (1..=10000000)",
    },
    Var {
        name: "NB_BACKEND_LOG",
        default: "info",
        help: "log filter: error, warn, info, debug, trace, or a tracing filter",
    },
    Var { name: "NB_BACKEND_LOG_FORMAT", default: "text", help: "log format: text or json" },
    Var {
        name: "NB_BACKEND_MAX_QUEUE",
        default: "1024",
        help: "packets queued per connection before it is dropped as a slow consumer (16..=1000000)",
    },
    Var { name: "NB_BACKEND_MAX_CONNECTIONS", default: "100000", help: "open TCP connections at most (1..=10000000)" },
    Var {
        name: "NB_BACKEND_MAX_TENANT_CONNECTIONS",
        default: "10000",
        help: "sockets one tenant may have connected at once (1..=10000000)",
    },
    Var {
        name: "NB_BACKEND_REDIS_URL",
        default: "",
        help: "redis://[user:pass@]host:port[/db]: share the store and broadcast with other instances; empty: in memory",
    },
    Var { name: "NB_BACKEND_REDIS_PREFIX", default: "eventfeed", help: "prefix of the Redis keys this server writes" },
    Var {
        name: "NB_BACKEND_REDIS_ADAPTER_KEY",
        default: "socket.io",
        help: "channel prefix shared with @socket.io/redis-adapter servers (their `key` option)",
    },
    Var { name: "NB_BACKEND_REDIS_TIMEOUT", default: "2000", help: "deadline of every Redis call in ms (50..=60000)" },
    Var { name: "NB_BACKEND_JWT_SECRET", default: "", help: "HS256 key for JWTs (at least 32 bytes); empty: none" },
    Var {
        name: "NB_BACKEND_JWT_JWKS",
        default: "",
        help: "JWKS for JWTs (RS256, ES256, EdDSA by kid): a file path or an http(s):// URL; empty: none",
    },
    Var { name: "NB_BACKEND_JWT_ISSUER", default: "", help: "when set, a JWT's iss must equal it" },
    Var { name: "NB_BACKEND_JWT_AUDIENCE", default: "", help: "when set, a JWT's aud must contain it" },
    Var {
        name: "NB_BACKEND_JWT_LEEWAY",
        default: "30000",
        help: "clock skew allowed on a JWT's exp, nbf and iat, in ms (0..=600000)",
    },
    Var {
        name: "NB_BACKEND_JWT_REVOCATIONS",
        default: "",
        help: "JSON file of revoked JWT users (sub, tenant, issuedBefore) and ids (jti); re-read on SIGHUP",
    },
    Var {
        name: "NB_BACKEND_JWT_TENANT_CLAIM",
        default: "",
        help: "claim (dotted path) holding a JWT's tenant or tenants; empty: tenant or tenants",
    },
    Var { name: "NB_BACKEND_JWT_ROLE_CLAIM", default: "role", help: "claim (dotted path) holding a JWT's role" },
    Var {
        name: "NB_BACKEND_ADMIN_UI",
        default: "off",
        help: "on: serve the Socket.IO Admin UI's namespace /admin (needs the two below)",
    },
    Var { name: "NB_BACKEND_ADMIN_USERNAME", default: "", help: "the Admin UI's user name" },
    Var {
        name: "NB_BACKEND_ADMIN_PASSWORD_HASH",
        default: "",
        help: "the bcrypt hash of the Admin UI's password ($2b$...)",
    },
    Var {
        name: "NB_BACKEND_ADMIN_READONLY",
        default: "true",
        help: "true: the Admin UI only looks; false: it may emit, join, leave and disconnect",
    },
    Var {
        name: "NB_BACKEND_ADMIN_SESSION_TTL",
        default: "86400000",
        help: "how long an Admin UI login lasts, in ms (60000..=2592000000)",
    },
];

/// The `--help` text.
pub fn help() -> String {
    let mut out = String::from(
        "eventfeed: a real-time, multi-tenant event feed server (Engine.IO v4 / Socket.IO v5)\n\n\
         Usage: eventfeed [--help]\n       echo -n PASSWORD | eventfeed --hash-password   \
         (the bcrypt hash for NB_BACKEND_ADMIN_PASSWORD_HASH)\n\nConfiguration (environment variables):\n",
    );
    for v in VARS {
        let default = if v.default.is_empty() { "(none)" } else { v.default };
        out.push_str(&format!("  {:<30} default {:<10} {}\n", v.name, default, v.help));
    }
    out
}

/// A configuration error: the variable and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} is invalid: expected {expected}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// The value given.
    pub value: String,
    /// What is accepted.
    pub expected: String,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `get` (the environment, or a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let value = |name: &'static str| -> (String, &'static str) {
            let default = VARS.iter().find(|v| v.name == name).map_or("", |v| v.default);
            (
                get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned()),
                name,
            )
        };
        let err = |(v, name): (String, &'static str), expected: &str| ConfigError {
            name,
            value: v,
            expected: expected.to_owned(),
        };
        let int = |name: &'static str, lo: u64, hi: u64| -> Result<u64, ConfigError> {
            let (v, n) = value(name);
            v.parse::<u64>()
                .ok()
                .filter(|x| (lo..=hi).contains(x))
                .ok_or_else(|| err((v, n), &format!("an integer from {lo} to {hi}")))
        };
        let ms = |name: &'static str, lo: u64, hi: u64| int(name, lo, hi).map(Duration::from_millis);

        let host = {
            let v = value("NB_BACKEND_HOST");
            v.0.parse().map_err(|_| err(v, "an IP address such as 127.0.0.1 or 0.0.0.0"))?
        };
        let namespace = {
            let v = value("NB_BACKEND_SIO_NAMESPACE");
            if !v.0.starts_with('/') || v.0.contains(',') || v.0.len() > 128 {
                return Err(err(v, "a namespace starting with / (no commas, at most 128 characters)"));
            }
            v.0
        };
        let tokens_file = get("NB_BACKEND_TOKENS_FILE").filter(|v| !v.trim().is_empty()).map(PathBuf::from);
        let rate = |name: &'static str| {
            let v = value(name);
            parse_rate(&v.0).map_err(|_| err(v, "N/s or N/m (N from 1 to 1000000), optionally :BURST, or off"))
        };
        let allowed_origins = {
            let v = value("NB_BACKEND_ALLOWED_ORIGINS");
            let mut out = Vec::new();
            for o in v.0.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                let ok = (o.starts_with("http://") || o.starts_with("https://"))
                    && o.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains('/'));
                if !ok {
                    return Err(err(v.clone(), "comma-separated origins like https://app.example.com:8443"));
                }
                out.push(o.to_owned());
            }
            out
        };
        let log_json = {
            let v = value("NB_BACKEND_LOG_FORMAT");
            match v.0.as_str() {
                "text" => false,
                "json" => true,
                _ => return Err(err(v, "text or json")),
            }
        };
        let redis = match get("NB_BACKEND_REDIS_URL").map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
            None => None,
            Some(url) => {
                if redis::Client::open(url.as_str()).is_err() {
                    // The URL may hold a password: do not echo it.
                    return Err(ConfigError {
                        name: "NB_BACKEND_REDIS_URL",
                        value: "(hidden)".into(),
                        expected: "a Redis URL such as redis://127.0.0.1:6379 or redis://:password@host:6379/0".into(),
                    });
                }
                let prefix = value("NB_BACKEND_REDIS_PREFIX");
                if prefix.0.len() > 64 || prefix.0.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(err(prefix, "at most 64 characters, no spaces"));
                }
                let adapter_key = value("NB_BACKEND_REDIS_ADAPTER_KEY");
                if adapter_key.0.len() > 64 || adapter_key.0.contains('#') {
                    return Err(err(adapter_key, "at most 64 characters, no #"));
                }
                Some(RedisConfig {
                    url,
                    prefix: prefix.0,
                    adapter_key: adapter_key.0,
                    timeout: ms("NB_BACKEND_REDIS_TIMEOUT", 50, 60_000)?,
                })
            }
        };
        let optional = |name: &'static str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let secret = optional("NB_BACKEND_JWT_SECRET");
        if let Some(s) = &secret
            && s.len() < 32
        {
            // The key is a secret: never echoed.
            return Err(ConfigError {
                name: "NB_BACKEND_JWT_SECRET",
                value: "(hidden)".into(),
                expected: format!("at least 32 bytes (this one has {})", s.len()),
            });
        }
        let jwks = match optional("NB_BACKEND_JWT_JWKS") {
            None => None,
            Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
                if v.parse::<http::Uri>().is_err() {
                    return Err(err((v, "NB_BACKEND_JWT_JWKS"), "a file path or an http(s):// URL"));
                }
                Some(JwksSource::Url(v))
            }
            Some(v) if v.contains("://") => {
                return Err(err((v, "NB_BACKEND_JWT_JWKS"), "a file path or an http(s):// URL"));
            }
            Some(v) => Some(JwksSource::File(PathBuf::from(v))),
        };
        let claim = |name: &'static str| -> Result<Option<String>, ConfigError> {
            match optional(name) {
                Some(v) if v.split('.').any(|part| part.is_empty()) => {
                    Err(err((v, name), "a claim name, or a dotted path such as realm_access.roles"))
                }
                other => Ok(other),
            }
        };
        let jwt = JwtConfig {
            secret,
            jwks,
            issuer: optional("NB_BACKEND_JWT_ISSUER"),
            audience: optional("NB_BACKEND_JWT_AUDIENCE"),
            leeway: ms("NB_BACKEND_JWT_LEEWAY", 0, 600_000)?,
            revocations: optional("NB_BACKEND_JWT_REVOCATIONS").map(PathBuf::from),
            tenant_claim: claim("NB_BACKEND_JWT_TENANT_CLAIM")?,
            role_claim: claim("NB_BACKEND_JWT_ROLE_CLAIM")?.unwrap_or_else(|| "role".into()),
        };
        if !jwt.enabled() {
            // A JWT rule without a key to verify JWTs with would mean nothing
            // (and would leave the demo tokens on): refuse it.
            let rules = [
                ("NB_BACKEND_JWT_ISSUER", jwt.issuer.is_some()),
                ("NB_BACKEND_JWT_AUDIENCE", jwt.audience.is_some()),
                ("NB_BACKEND_JWT_REVOCATIONS", jwt.revocations.is_some()),
                ("NB_BACKEND_JWT_TENANT_CLAIM", jwt.tenant_claim.is_some()),
                ("NB_BACKEND_JWT_ROLE_CLAIM", optional("NB_BACKEND_JWT_ROLE_CLAIM").is_some()),
                ("NB_BACKEND_JWT_LEEWAY", optional("NB_BACKEND_JWT_LEEWAY").is_some()),
            ];
            if let Some((name, _)) = rules.iter().find(|(_, set)| *set) {
                return Err(ConfigError {
                    name,
                    value: optional(name).unwrap_or_default(),
                    expected: "NB_BACKEND_JWT_SECRET or NB_BACKEND_JWT_JWKS set too (a JWT rule needs a key)".into(),
                });
            }
        }
        let admin = {
            let v = value("NB_BACKEND_ADMIN_UI");
            match v.0.as_str() {
                "off" | "false" => None,
                "on" | "true" => {
                    let username = optional("NB_BACKEND_ADMIN_USERNAME").ok_or_else(|| ConfigError {
                        name: "NB_BACKEND_ADMIN_USERNAME",
                        value: String::new(),
                        expected: "a user name (NB_BACKEND_ADMIN_UI=on needs it)".into(),
                    })?;
                    let password_hash = optional("NB_BACKEND_ADMIN_PASSWORD_HASH")
                        .filter(|h| crate::sio::admin::valid_hash(h))
                        .ok_or_else(|| ConfigError {
                            name: "NB_BACKEND_ADMIN_PASSWORD_HASH",
                            value: "(hidden)".into(),
                            expected: "a bcrypt hash such as $2b$10$... (NB_BACKEND_ADMIN_UI=on needs it; \
                                       make one with: echo -n PASSWORD | eventfeed --hash-password)"
                                .into(),
                        })?;
                    let readonly = {
                        let v = value("NB_BACKEND_ADMIN_READONLY");
                        match v.0.as_str() {
                            "true" => true,
                            "false" => false,
                            _ => return Err(err(v, "true or false")),
                        }
                    };
                    Some(AdminUi {
                        username,
                        password_hash,
                        readonly,
                        session_ttl: ms("NB_BACKEND_ADMIN_SESSION_TTL", 60_000, 2_592_000_000)?,
                    })
                }
                _ => return Err(err(v, "on or off")),
            }
        };
        Ok(Config {
            admin,
            jwt,
            redis,
            host,
            port: int("NB_BACKEND_PORT", 0, 65535)? as u16,
            namespace,
            buffer_size: int("NB_BACKEND_EVENTS_BUFFER_SIZE", 1, 1_000_000)? as usize,
            ping_interval: ms("NB_BACKEND_SIO_PING_INTERVAL", 100, 3_600_000)?,
            ping_timeout: ms("NB_BACKEND_SIO_PING_TIMEOUT", 100, 3_600_000)?,
            max_payload: int("NB_BACKEND_MAX_PAYLOAD", 1024, 100_000_000)? as usize,
            tokens_file,
            rate_limit: rate("NB_BACKEND_RATE_LIMIT")?,
            tenant_rate_limit: rate("NB_BACKEND_TENANT_RATE_LIMIT")?,
            allowed_origins,
            max_body: int("NB_BACKEND_MAX_BODY", 64, 16 * 1024 * 1024)? as usize,
            recovery_window: ms("NB_BACKEND_RECOVERY_WINDOW", 0, 3_600_000)?,
            idempotency_window: ms("NB_BACKEND_IDEMPOTENCY_WINDOW", 1_000, 604_800_000)?,
            idempotency_keys: int("NB_BACKEND_IDEMPOTENCY_KEYS", 1, 10_000_000)? as usize,
            log: value("NB_BACKEND_LOG").0,
            log_json,
            max_queue: int("NB_BACKEND_MAX_QUEUE", 16, 1_000_000)? as usize,
            max_connections: int("NB_BACKEND_MAX_CONNECTIONS", 1, 10_000_000)? as usize,
            max_tenant_connections: int("NB_BACKEND_MAX_TENANT_CONNECTIONS", 1, 10_000_000)? as usize,
        })
    }
}

/// Parses `N/s`, `N/m`, `N/s:B` or `off`.
fn parse_rate(s: &str) -> Result<Option<Rate>, ()> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (rate, burst) = match s.split_once(':') {
        Some((r, b)) => (r, Some(b.parse::<u32>().map_err(|_| ())?)),
        None => (s, None),
    };
    let (count, unit) = rate.split_once('/').ok_or(())?;
    let count: u32 = count.trim().parse().map_err(|_| ())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        _ => return Err(()),
    };
    if !(1..=1_000_000).contains(&count) || burst == Some(0) {
        return Err(());
    }
    Ok(Some(Rate { count, per, burst: burst.unwrap_or(count.saturating_mul(2)) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_contracts() {
        let c = with(&[]).unwrap();
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert_eq!(c.port, 3000);
        assert_eq!(c.namespace, "/events");
        assert_eq!(c.buffer_size, 500);
        assert_eq!(c.ping_interval, Duration::from_millis(25000));
        assert_eq!(c.ping_timeout, Duration::from_millis(20000));
        assert_eq!(c.max_payload, 1_000_000);
        assert_eq!(c.tokens_file, None);
        assert_eq!(c.rate_limit, Some(Rate { count: 100, per: Duration::from_secs(1), burst: 200 }));
        assert_eq!(c.tenant_rate_limit, Some(Rate { count: 1000, per: Duration::from_secs(1), burst: 2000 }));
        assert!(c.allowed_origins.is_empty());
        assert_eq!(c.max_body, 65536);
        assert_eq!(c.recovery_window, Duration::from_millis(120000));
        assert_eq!((c.idempotency_window, c.idempotency_keys), (Duration::from_secs(3600), 100_000));
        assert_eq!(c.log, "info");
        assert!(!c.log_json);
        assert!(c.redis.is_none(), "in memory unless NB_BACKEND_REDIS_URL is set");
    }

    #[test]
    fn redis_settings() {
        let c = with(&[("NB_BACKEND_REDIS_URL", "redis://127.0.0.1:6390/2")]).unwrap();
        let r = c.redis.unwrap();
        assert_eq!(
            (r.url.as_str(), r.prefix.as_str(), r.adapter_key.as_str()),
            ("redis://127.0.0.1:6390/2", "eventfeed", "socket.io")
        );
        assert_eq!(r.timeout, Duration::from_millis(2000));
        let e = with(&[("NB_BACKEND_REDIS_URL", "http://x:secret@h")]).unwrap_err();
        assert_eq!(e.name, "NB_BACKEND_REDIS_URL");
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = with(&[("NB_BACKEND_REDIS_URL", "redis://h"), ("NB_BACKEND_REDIS_TIMEOUT", "1")]).unwrap_err();
        assert_eq!(e.name, "NB_BACKEND_REDIS_TIMEOUT");
    }

    #[test]
    fn bad_values_name_the_variable_and_the_range() {
        let e = with(&[("NB_BACKEND_PORT", "70000")]).unwrap_err();
        assert_eq!(e.name, "NB_BACKEND_PORT");
        assert!(e.to_string().contains("from 0 to 65535"), "{e}");
        assert_eq!(with(&[("NB_BACKEND_EVENTS_BUFFER_SIZE", "0")]).unwrap_err().name, "NB_BACKEND_EVENTS_BUFFER_SIZE");
        assert_eq!(with(&[("NB_BACKEND_HOST", "localhost:1")]).unwrap_err().name, "NB_BACKEND_HOST");
        assert_eq!(with(&[("NB_BACKEND_SIO_NAMESPACE", "events")]).unwrap_err().name, "NB_BACKEND_SIO_NAMESPACE");
        assert_eq!(with(&[("NB_BACKEND_RATE_LIMIT", "fast")]).unwrap_err().name, "NB_BACKEND_RATE_LIMIT");
        assert_eq!(
            with(&[("NB_BACKEND_ALLOWED_ORIGINS", "example.com")]).unwrap_err().name,
            "NB_BACKEND_ALLOWED_ORIGINS"
        );
        assert_eq!(with(&[("NB_BACKEND_LOG_FORMAT", "xml")]).unwrap_err().name, "NB_BACKEND_LOG_FORMAT");
        assert_eq!(with(&[("NB_BACKEND_SIO_PING_INTERVAL", "-5")]).unwrap_err().name, "NB_BACKEND_SIO_PING_INTERVAL");
    }

    #[test]
    fn rates_and_origins() {
        let c = with(&[
            ("NB_BACKEND_RATE_LIMIT", "off"),
            ("NB_BACKEND_TENANT_RATE_LIMIT", "50/m:10"),
            ("NB_BACKEND_ALLOWED_ORIGINS", "https://a.example.com, http://b.example.com:8080"),
        ])
        .unwrap();
        assert_eq!(c.rate_limit, None);
        assert_eq!(c.tenant_rate_limit, Some(Rate { count: 50, per: Duration::from_secs(60), burst: 10 }));
        assert_eq!(c.allowed_origins, vec!["https://a.example.com", "http://b.example.com:8080"]);
    }

    #[test]
    fn jwt_settings() {
        let c = with(&[]).unwrap();
        assert!(!c.jwt.enabled(), "no JWT setting: JWTs are not accepted");
        let secret = "s".repeat(32);
        let c = with(&[
            ("NB_BACKEND_JWT_SECRET", &secret),
            ("NB_BACKEND_JWT_JWKS", "https://idp.example.com/.well-known/jwks.json"),
            ("NB_BACKEND_JWT_ISSUER", "https://idp.example.com/"),
            ("NB_BACKEND_JWT_LEEWAY", "5000"),
            ("NB_BACKEND_JWT_ROLE_CLAIM", "realm_access.roles"),
        ])
        .unwrap();
        assert_eq!(c.jwt.jwks, Some(JwksSource::Url("https://idp.example.com/.well-known/jwks.json".into())));
        assert_eq!(c.jwt.leeway, Duration::from_secs(5));
        assert_eq!(c.jwt.role_claim, "realm_access.roles");
        assert_eq!(c.jwt.issuer.as_deref(), Some("https://idp.example.com/"));
        let c = with(&[("NB_BACKEND_JWT_JWKS", "/etc/eventfeed/jwks.json")]).unwrap();
        assert_eq!(c.jwt.jwks, Some(JwksSource::File("/etc/eventfeed/jwks.json".into())));
        let e = with(&[("NB_BACKEND_JWT_SECRET", "short but secret")]).unwrap_err();
        assert_eq!(e.name, "NB_BACKEND_JWT_SECRET");
        assert!(!e.to_string().contains("short but secret"), "the secret is never echoed: {e}");
        assert_eq!(with(&[("NB_BACKEND_JWT_JWKS", "ftp://x/jwks")]).unwrap_err().name, "NB_BACKEND_JWT_JWKS");
        let e = with(&[("NB_BACKEND_JWT_SECRET", &secret), ("NB_BACKEND_JWT_ROLE_CLAIM", "a..b")]).unwrap_err();
        assert_eq!(e.name, "NB_BACKEND_JWT_ROLE_CLAIM");
        let e = with(&[("NB_BACKEND_JWT_ISSUER", "https://idp.example.com/")]).unwrap_err();
        assert_eq!(e.name, "NB_BACKEND_JWT_ISSUER", "a rule without a key");
    }

    #[test]
    fn help_lists_every_variable() {
        let h = help();
        for v in VARS {
            assert!(h.contains(v.name), "{}", v.name);
        }
    }

    #[test]
    fn the_admin_ui_needs_a_user_and_a_bcrypt_hash() {
        assert!(with(&[]).unwrap().admin.is_none(), "off by default");
        let on = ("NB_BACKEND_ADMIN_UI", "on");
        assert_eq!(with(&[on]).unwrap_err().name, "NB_BACKEND_ADMIN_USERNAME");
        let user = ("NB_BACKEND_ADMIN_USERNAME", "ops");
        let e = with(&[on, user]).unwrap_err();
        assert_eq!(e.name, "NB_BACKEND_ADMIN_PASSWORD_HASH");
        assert!(e.expected.contains("--hash-password"), "{e}");
        let plain = ("NB_BACKEND_ADMIN_PASSWORD_HASH", "hunter2");
        let e = with(&[on, user, plain]).unwrap_err();
        assert_eq!(e.value, "(hidden)", "a password given by mistake is not echoed");
        let hash = bcrypt::hash("pw", 4).unwrap();
        let good = ("NB_BACKEND_ADMIN_PASSWORD_HASH", hash.as_str());
        let admin = with(&[on, user, good]).unwrap().admin.unwrap();
        assert!(admin.readonly, "read-only by default");
        assert_eq!(admin.session_ttl, Duration::from_secs(86_400));
        assert!(!format!("{admin:?}").contains(&hash), "the hash is never printed");
        let rw = with(&[on, user, good, ("NB_BACKEND_ADMIN_READONLY", "false")]).unwrap().admin.unwrap();
        assert!(!rw.readonly);
        assert_eq!(with(&[("NB_BACKEND_ADMIN_UI", "maybe")]).unwrap_err().name, "NB_BACKEND_ADMIN_UI");
    }
}
