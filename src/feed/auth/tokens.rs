//! The tokens file, and the demo tokens: static tokens meant for services
//! and demos, each kept as its SHA-256 digest (a file may give either the
//! token or its digest). A presented token is hashed once and compared
//! against every entry in constant time, without stopping at a match, so
//! neither the match nor its position shows in the timing.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthFailure, Principal, Role};

#[derive(Debug, Clone)]
struct Entry {
    digest: [u8; 32],
    user: String,
    tenants: Vec<String>,
    role: Role,
}

impl Entry {
    fn allows(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t == "*" || t == tenant)
    }
}

/// The set of known tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<Entry>,
    demo: bool,
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not the expected JSON.
    #[error("tokens file {path} is not valid: {message}")]
    Format {
        /// The path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// One entry is wrong.
    #[error("tokens file {path}: entry {index}{user}: {message}")]
    Entry {
        /// The path.
        path: String,
        /// The entry's position (0-based).
        index: usize,
        /// ` (user "…")` when the entry names one.
        user: String,
        /// What is wrong.
        message: String,
    },
}

/// The fields an entry may have.
const FIELDS: [&str; 5] = ["token", "token_sha256", "user", "tenants", "role"];

/// One entry of a tokens file, checked field by field; the error says which
/// field is wrong and how (never its value: it may be a token).
fn parse_entry(raw: &Value) -> Result<Entry, String> {
    let Value::Object(fields) = raw else {
        return Err("an entry must be an object {token | token_sha256, user, tenants, role}".to_owned());
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field {unknown:?} (expected one of {FIELDS:?})"));
    }
    let string = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("{name:?} must be a string")),
    };
    let user = match string("user")? {
        Some(u) if !u.trim().is_empty() => u.to_owned(),
        _ => return Err("\"user\" is missing or empty".to_owned()),
    };
    let digest = match (string("token")?, string("token_sha256")?) {
        (Some(t), None) if !t.is_empty() => sha256(t.as_bytes()),
        (None, Some(h)) => parse_hex32(h).ok_or("\"token_sha256\" must be 64 hex characters")?,
        (Some(_), Some(_)) => return Err("give either \"token\" or \"token_sha256\", not both".to_owned()),
        _ => return Err("\"token\" or \"token_sha256\" is required".to_owned()),
    };
    const TENANTS: &str = "\"tenants\" must be a non-empty list of tenant ids (or [\"*\"])";
    let tenants = match fields.get("tenants") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|t| t.as_str().filter(|t| !t.is_empty()).map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(TENANTS)?,
        _ => return Err(TENANTS.to_owned()),
    };
    let role = match string("role")? {
        Some("admin") => Role::Admin,
        Some("reader") => Role::Reader,
        _ => return Err("\"role\" must be \"admin\" or \"reader\"".to_owned()),
    };
    Ok(Entry { digest, user, tenants, role })
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The SHA-256 digest of a token (what sessions are bound to; never the token).
pub fn token_digest(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

impl Tokens {
    /// The demo tokens of the contract: `token_admin_a`, `token_admin_b`, `token_reader_a`.
    pub fn demo() -> Self {
        let e = |token: &str, user: &str, tenant: &str, role| Entry {
            digest: sha256(token.as_bytes()),
            user: user.to_owned(),
            tenants: vec![tenant.to_owned()],
            role,
        };
        Tokens {
            entries: vec![
                e("token_admin_a", "admin_a", "company_a", Role::Admin),
                e("token_admin_b", "admin_b", "company_b", Role::Admin),
                e("token_reader_a", "reader_a", "company_a", Role::Reader),
            ],
            demo: true,
        }
    }

    /// No static token at all (JWTs only).
    pub fn none() -> Self {
        Tokens { entries: Vec::new(), demo: false }
    }

    /// Whether these are the demo tokens.
    pub fn is_demo(&self) -> bool {
        self.demo
    }

    /// Loads a tokens file; any malformed entry is an error naming it.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read { path: p.clone(), source })?;
        Self::parse(&text, &p)
    }

    /// Parses the JSON of a tokens file (`origin` names it in errors). Every
    /// entry is checked field by field, so an error names the entry (its
    /// index, and its user when it has one) and the field — never a token.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TokensError> {
        let format = |message: &str| TokensError::Format { path: origin.to_owned(), message: message.to_owned() };
        let root: Value = serde_json::from_str(text).map_err(|e| {
            // Where the JSON breaks, not what it says (a token may be nearby).
            format(&format!("not JSON (line {}, column {})", e.line(), e.column()))
        })?;
        let Value::Object(mut root) = root else {
            return Err(format("the file must be an object {\"tokens\": [...]}"));
        };
        let Some(Value::Array(list)) = root.remove("tokens") else {
            return Err(format("\"tokens\" must be a list of entries"));
        };
        if let Some(other) = root.keys().next() {
            return Err(format(&format!("unknown field {other:?} (only \"tokens\")")));
        }
        let entries = list
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                parse_entry(raw).map_err(|message| TokensError::Entry {
                    path: origin.to_owned(),
                    index,
                    user: match raw.get("user") {
                        Some(Value::String(u)) => format!(" (user {u:?})"),
                        _ => String::new(),
                    },
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tokens { entries, demo: false })
    }

    /// Authenticates `token` for `tenant` (a name already checked); gives
    /// the token's digest too (what a socket's recovery is bound to).
    pub fn authenticate(&self, tenant: &str, token: &str) -> Result<(Principal, [u8; 32]), AuthFailure> {
        let digest = sha256(token.as_bytes());
        match self.find(&digest) {
            Some(e) if e.allows(tenant) => {
                Ok((Principal { user: e.user.clone(), tenant: tenant.to_owned(), role: e.role }, digest))
            }
            Some(_) => Err(AuthFailure::WrongTenant),
            None => Err(AuthFailure::UnknownToken),
        }
    }

    /// The role the token with this digest has for `tenant` now, if it is
    /// still accepted there (after a reload, say).
    pub fn role_of(&self, digest: &[u8; 32], tenant: &str) -> Option<Role> {
        self.find(digest).filter(|e| e.allows(tenant)).map(|e| e.role)
    }

    fn find(&self, digest: &[u8; 32]) -> Option<&Entry> {
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            // Every entry is compared; no early exit.
            if bool::from(entry.digest.ct_eq(digest)) && found.is_none() {
                found = Some(entry);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(t: &Tokens, tenant: &str, token: &str) -> Result<Principal, AuthFailure> {
        t.authenticate(tenant, token).map(|(p, _)| p)
    }

    #[test]
    fn demo_tokens() {
        let t = Tokens::demo();
        let p = auth(&t, "company_a", "token_admin_a").unwrap();
        assert_eq!((p.user.as_str(), p.role), ("admin_a", Role::Admin));
        assert_eq!(auth(&t, "company_b", "token_admin_a"), Err(AuthFailure::WrongTenant));
        assert_eq!(auth(&t, "company_a", "nope"), Err(AuthFailure::UnknownToken));
        let star =
            Tokens::parse(r#"{"tokens":[{"token":"s","user":"s","tenants":["*"],"role":"admin"}]}"#, "t").unwrap();
        assert!(auth(&star, &"x".repeat(128), "s").is_ok());
        let r = auth(&t, "company_a", "token_reader_a").unwrap();
        assert_eq!(r.role, Role::Reader);
        assert!(t.is_demo());
        let (p, digest) = t.authenticate("company_a", "token_admin_a").unwrap();
        assert_eq!((p.user.as_str(), digest), ("admin_a", token_digest("token_admin_a")));
        assert_eq!(t.role_of(&digest, "company_a"), Some(Role::Admin));
        assert_eq!(t.role_of(&digest, "company_b"), None);
    }

    #[test]
    fn file_with_plain_and_hashed_tokens() {
        let digest: String = sha256(b"svc-secret").iter().map(|b| format!("{b:02x}")).collect();
        let text = format!(
            r#"{{"tokens":[
                {{"token":"token_admin_a","user":"admin_a","tenants":["company_a"],"role":"admin"}},
                {{"token_sha256":"{digest}","user":"svc","tenants":["*"],"role":"reader"}}
            ]}}"#
        );
        let t = Tokens::parse(&text, "tokens.json").unwrap();
        assert!(!t.is_demo());
        assert_eq!(auth(&t, "anything", "svc-secret").unwrap().user, "svc");
        assert_eq!(auth(&t, "company_a", "token_admin_a").unwrap().role, Role::Admin);
        assert_eq!(parse_hex32(&digest.to_uppercase()), parse_hex32(&digest), "hex is case-insensitive");
    }

    #[test]
    fn malformed_entries_are_named() {
        let cases = [
            (r#"{"tokens":[{"user":"a","tenants":["x"],"role":"admin"}]}"#, "entry 0 (user \"a\")"),
            (r#"{"tokens":[{"token":"t","tenants":["x"],"role":"admin"}]}"#, "entry 0"),
            (
                r#"{"tokens":[{"token":"t","user":"a","tenants":["x"],"role":"admin"},{"token":"u","user":"b","tenants":[],"role":"admin"}]}"#,
                "entry 1 (user \"b\")",
            ),
            (r#"{"tokens":[{"token":"t","user":"a","tenants":["x"],"role":"root"}]}"#, "\"role\""),
            (r#"{"tokens":[{"token_sha256":"abc","user":"a","tenants":["x"],"role":"admin"}]}"#, "64 hex"),
            (r#"{"tokens":[{"token":"t","token_sha256":"ab","user":"a","tenants":["x"],"role":"admin"}]}"#, "not both"),
        ];
        for (text, want) in cases {
            let err = Tokens::parse(text, "f.json").unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
        assert!(matches!(Tokens::parse("{", "f.json"), Err(TokensError::Format { .. })));
        assert!(matches!(Tokens::parse(r#"{"tokens":[],"x":1}"#, "f.json"), Err(TokensError::Format { .. })));
        assert!(matches!(Tokens::parse(r#"{"tokens":{}}"#, "f.json"), Err(TokensError::Format { .. })));
        assert!(matches!(Tokens::parse("[]", "f.json"), Err(TokensError::Format { .. })));
    }

    #[test]
    fn every_wrong_shape_names_the_entry_and_the_field_but_never_a_token() {
        let entry = |fields: &str| {
            format!(r#"{{"tokens":[{{"token":"ok","user":"a","tenants":["x"],"role":"admin"}},{fields}]}}"#)
        };
        let cases = [
            (r#"{"token":"SECRET","user":"b","tenants":"x","role":"admin"}"#, "\"tenants\""),
            (r#"{"token":"SECRET","user":"b","tenants":[5],"role":"admin"}"#, "\"tenants\""),
            (r#"{"token":"SECRET","user":"b","tenants":[""],"role":"admin"}"#, "\"tenants\""),
            (r#"{"token":["SECRET"],"user":"b","tenants":["x"],"role":"admin"}"#, "\"token\" must be a string"),
            (r#"{"token":"SECRET","user":"b","tenants":["x"],"role":5}"#, "\"role\" must be a string"),
            (
                r#"{"token":"SECRET","user":"b","tenants":["x"],"role":"admin","tokn":"SECRET"}"#,
                "unknown field \"tokn\"",
            ),
            (r#"{"token":"SECRET","user":7,"tenants":["x"],"role":"admin"}"#, "\"user\" must be a string"),
            (r#"{"token_sha256":"SECRET","user":"b","tenants":["x"],"role":"admin"}"#, "64 hex"),
            (r#""SECRET""#, "must be an object"),
        ];
        for (fields, want) in cases {
            let err = Tokens::parse(&entry(fields), "f.json").unwrap_err().to_string();
            assert!(err.contains("f.json: entry 1"), "{err}");
            assert!(err.contains(want), "{err} should contain {want}");
            assert!(!err.contains("SECRET"), "a token in the message: {err}");
            if fields.contains(r#""user":"b""#) {
                assert!(err.contains(r#"(user "b")"#), "{err}");
            }
        }
        let broken = Tokens::parse(r#"{"tokens":[{"token":"SECRET""#, "f.json").unwrap_err().to_string();
        assert!(!broken.contains("SECRET") && broken.contains("line 1"), "{broken}");
    }
}
