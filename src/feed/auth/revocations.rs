//! Revoked JWTs (`NB_BACKEND_JWT_REVOCATIONS`): how a departed user or a
//! leaked token is cut off before its `exp`.
//!
//! ```json
//! {"revoked": [
//!   {"sub": "alice", "tenant": "company_a", "issuedBefore": "2026-12-06T10:00:00Z"},
//!   {"sub": "bob", "issuedBefore": "2026-12-06T10:00:00Z"},
//!   {"jti": "4f2c…"}
//! ]}
//! ```
//!
//! A JWT of that user (in that tenant, when one is named) issued before that
//! time — or without an `iat` — is refused; so is one with that `jti`. A user
//! who logs in again after the time gets a token that is accepted.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

/// One user's revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UserRevocation {
    sub: String,
    tenant: Option<String>,
    /// Unix seconds: tokens issued before it are refused.
    issued_before: i64,
}

/// The revoked users and token ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    users: Vec<UserRevocation>,
    ids: HashSet<String>,
}

impl Revocations {
    /// Reads a revocations file; an error names the entry, never a value.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read revocations file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("revocations file {}: {e}", path.display()))
    }

    /// Parses the JSON of a revocations file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
        let Some(Value::Array(list)) = root.get("revoked") else {
            return Err("expected {\"revoked\": [...]}".to_owned());
        };
        let mut out = Revocations::default();
        for (index, entry) in list.iter().enumerate() {
            let fail = |what: &str| format!("entry {index}: {what}");
            let Value::Object(fields) = entry else { return Err(fail("must be an object")) };
            let text = |name: &str| match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(fail(&format!("{name:?} must be a non-empty string"))),
            };
            if let Some(unknown) =
                fields.keys().find(|k| !["sub", "tenant", "issuedBefore", "jti"].contains(&k.as_str()))
            {
                return Err(fail(&format!("unknown field {unknown:?}")));
            }
            match (text("jti")?, text("sub")?) {
                (Some(jti), None) if fields.len() == 1 => {
                    out.ids.insert(jti);
                }
                (None, Some(sub)) => {
                    let before =
                        text("issuedBefore")?.ok_or_else(|| fail("\"issuedBefore\" is required with \"sub\""))?;
                    let issued_before =
                        time::OffsetDateTime::parse(&before, &time::format_description::well_known::Rfc3339)
                            .map_err(|_| {
                                fail("\"issuedBefore\" must be an ISO 8601 time such as 2026-12-06T10:00:00Z")
                            })?
                            .unix_timestamp();
                    out.users.push(UserRevocation { sub, tenant: text("tenant")?, issued_before });
                }
                _ => return Err(fail("give either {\"jti\"} or {\"sub\", \"issuedBefore\", \"tenant\"?}")),
            }
        }
        Ok(out)
    }

    /// Whether a JWT of `sub` with this `jti` and `iat`, used for `tenant`,
    /// is revoked.
    pub fn revokes(&self, sub: &str, tenant: &str, jti: Option<&str>, iat: Option<i64>) -> bool {
        if jti.is_some_and(|j| self.ids.contains(j)) {
            return true;
        }
        self.users.iter().any(|u| {
            u.sub == sub
                && u.tenant.as_deref().is_none_or(|t| t == tenant)
                && iat.is_none_or(|iat| iat < u.issued_before)
        })
    }

    /// How many revocations there are.
    pub fn len(&self) -> usize {
        self.users.len() + self.ids.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_796_551_200; // 2026-12-06T10:00:00Z

    #[test]
    fn users_by_issue_time_and_tenant_and_tokens_by_id() {
        let r = Revocations::parse(
            r#"{"revoked":[
                {"sub":"alice","tenant":"a","issuedBefore":"2026-12-06T10:00:00Z"},
                {"sub":"bob","issuedBefore":"2026-12-06T10:00:00Z"},
                {"jti":"leaked"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.revokes("alice", "a", None, Some(T - 1)));
        assert!(!r.revokes("alice", "a", None, Some(T)), "issued at or after the time: accepted");
        assert!(!r.revokes("alice", "b", None, Some(T - 1)), "another tenant");
        assert!(r.revokes("alice", "a", None, None), "no iat: revoked");
        assert!(r.revokes("bob", "anything", None, Some(T - 5)));
        assert!(r.revokes("carol", "a", Some("leaked"), Some(T + 100)));
        assert!(!r.revokes("carol", "a", Some("fine"), Some(T - 100)));
    }

    #[test]
    fn a_malformed_file_names_the_entry() {
        for (text, want) in [
            ("{", "not JSON"),
            (r#"{"revoked":{}}"#, "expected"),
            (r#"{"revoked":[{"sub":"x"}]}"#, "entry 0: \"issuedBefore\" is required"),
            (r#"{"revoked":[{"jti":"a"},{"sub":"x","issuedBefore":"yesterday"}]}"#, "entry 1: \"issuedBefore\""),
            (r#"{"revoked":[{"jti":"a","sub":"x"}]}"#, "entry 0: give either"),
            (r#"{"revoked":[{"jti":5}]}"#, "entry 0: \"jti\" must be"),
            (r#"{"revoked":[{"who":"x"}]}"#, "entry 0: unknown field"),
        ] {
            let err = Revocations::parse(text).unwrap_err();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }
}
