//! The OpenAPI document (`GET /api/openapi.json`, kept by hand in
//! src/feed/openapi.json) held to the running server, so it stays exact.
//!
//! - The document: served without a token, OpenAPI 3.1, every `$ref`
//!   resolves, its examples fit their schemas, its error codes are the
//!   server's (`FeedError`), and its paths and methods are exactly the
//!   dispatcher's table (`feed::rest::ROUTES`), both ways.
//! - The walk: for every operation, a request made of the valid examples
//!   (those whose `x-status` is the operation's success) must succeed; then
//!   each example of a parameter or body, put in that request alone, must
//!   get its `x-status`, with the error `code` the document gives for that
//!   status. A parameter with no valid example (an event id) takes its value
//!   from a documented link. Beside the examples: every method a path does
//!   not list (405, `Allow`), a body of a media type the operation does not
//!   list (415), and a 429 for each code documented (writes repeated until
//!   `rate_limited`, streams held until `too_many_connections`). Every
//!   answer's status, `Content-Type`, required headers and JSON body are
//!   checked against the document, and every status the document gives an
//!   operation must have been seen (but 408, 500 and 503, which a client
//!   cannot provoke here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/feed.rs"]
mod feed;
#[path = "common/raw.rs"]
mod raw;
#[path = "common/sse.rs"]
mod sse;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use eventfeed::app::App;
use eventfeed::config::Rate;
use eventfeed::feed::rest::{OPENAPI, ROUTES};
use eventfeed::feed::{FeedConfig, FeedError, Tokens};
use eventfeed::sio::SioConfig;
use feed::{FeedServer, quiet_engine};
use raw::{HttpConn, WAIT, eventually};
use serde_json::{Value, json};
use sse::SseClient;

/// The keys of a path item that are operations.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
/// Statuses a client cannot provoke from outside in this setting: a body
/// slower than 10 s, an internal error, a store (Redis) that does not answer.
/// 409 too: a keyed write still in progress here, which in memory mode lasts
/// microseconds.
const NOT_PROVOKED: [u16; 4] = [408, 409, 500, 503];
/// Writes allowed at once: more than the walk makes before it provokes 429.
const WRITE_BURST: u32 = 30;
/// Subscribers (sockets and streams) a tenant may have here.
const TENANT_CONNECTIONS: usize = 3;

/// The server of the walk: demo tokens, a low write rate limit and a small
/// tenant connection limit (so both 429s can be provoked), and a quick
/// keep-alive so a stream the test dropped is noticed at once.
async fn server() -> FeedServer {
    let config = FeedConfig {
        rate_limit: Some(Rate { count: 10, per: Duration::from_secs(60), burst: WRITE_BURST }),
        max_tenant_connections: TENANT_CONNECTIONS,
        stream_keep_alive: Duration::from_millis(20),
        ..FeedConfig::default()
    };
    FeedServer::start(App::new(config, Tokens::demo(), quiet_engine(1_000_000), SioConfig::default())).await
}

/// Every error of the server; the match fails to build when one is added, so
/// the document's codes are checked against all of them.
fn every_error() -> Vec<FeedError> {
    let all = vec![
        FeedError::bad_request("x"),
        FeedError::Unauthorized,
        FeedError::InvalidToken,
        FeedError::Forbidden,
        FeedError::Refused("x"),
        FeedError::OriginNotAllowed,
        FeedError::NotFound("x"),
        FeedError::MethodNotAllowed { allow: &["GET"] },
        FeedError::PayloadTooLarge("x"),
        FeedError::Timeout,
        FeedError::UnsupportedMediaType,
        FeedError::Validation("x"),
        FeedError::Conflict { retry_after: 1 },
        FeedError::IdempotencyKeyReused,
        FeedError::RateLimited { retry_after: 1 },
        FeedError::TooManyConnections { retry_after: 1 },
        FeedError::Unavailable { retry_after: 1 },
        FeedError::Internal,
    ];
    for e in &all {
        match e {
            FeedError::BadRequest(_)
            | FeedError::Unauthorized
            | FeedError::InvalidToken
            | FeedError::Forbidden
            | FeedError::Refused(_)
            | FeedError::OriginNotAllowed
            | FeedError::NotFound(_)
            | FeedError::MethodNotAllowed { .. }
            | FeedError::PayloadTooLarge(_)
            | FeedError::Timeout
            | FeedError::UnsupportedMediaType
            | FeedError::Validation(_)
            | FeedError::Conflict { .. }
            | FeedError::IdempotencyKeyReused
            | FeedError::RateLimited { .. }
            | FeedError::TooManyConnections { .. }
            | FeedError::Unavailable { .. }
            | FeedError::Internal => {}
        }
    }
    all
}

// ---------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------

/// The parsed document, with `$ref` resolution.
struct Doc {
    root: Value,
}

impl Doc {
    fn parse() -> Self {
        Doc { root: serde_json::from_str(OPENAPI).expect("src/feed/openapi.json is JSON") }
    }

    /// The value a local `$ref` names.
    #[track_caller]
    fn target(&self, reference: &str) -> &Value {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("{reference}: only local references"));
        self.root.pointer(pointer).unwrap_or_else(|| panic!("{reference} does not resolve"))
    }

    /// `v`, or what its `$ref` chain ends at.
    fn resolve<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        while let Some(r) = v.get("$ref").and_then(Value::as_str) {
            v = self.target(r);
        }
        v
    }

    /// Every operation: (path, METHOD, operation object).
    fn operations(&self) -> Vec<Operation<'_>> {
        let mut out = Vec::new();
        for (path, item) in self.root["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                // Path-level parameters, unless the operation redefines one.
                let mut params: Vec<&Value> =
                    op["parameters"].as_array().into_iter().flatten().map(|p| self.resolve(p)).collect();
                for p in item["parameters"].as_array().into_iter().flatten().map(|p| self.resolve(p)) {
                    if !params.iter().any(|q| q["name"] == p["name"] && q["in"] == p["in"]) {
                        params.push(p);
                    }
                }
                out.push(Operation { path, method: method.to_ascii_uppercase(), op, params, doc: self });
            }
        }
        out
    }

    /// The methods documented for `path`, upper case, sorted.
    fn methods_of(&self, path: &str) -> BTreeSet<String> {
        self.root["paths"][path]
            .as_object()
            .map(|item| item.keys().filter(|k| METHODS.contains(&k.as_str())).map(|k| k.to_ascii_uppercase()).collect())
            .unwrap_or_default()
    }
}

/// One documented operation.
struct Operation<'a> {
    path: &'a str,
    method: String,
    op: &'a Value,
    params: Vec<&'a Value>,
    doc: &'a Doc,
}

impl Operation<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn id(&self) -> &str {
        self.op["operationId"].as_str().unwrap_or_else(|| panic!("{}: no operationId", self.name()))
    }

    /// The documented statuses.
    fn statuses(&self) -> BTreeSet<u16> {
        self.op["responses"].as_object().expect("responses").keys().map(|k| k.parse().expect("a status code")).collect()
    }

    /// The one 2xx status: what the valid examples get.
    fn success(&self) -> u16 {
        let ok: Vec<u16> = self.statuses().into_iter().filter(|s| (200..300).contains(s)).collect();
        assert_eq!(ok.len(), 1, "{}: one success status", self.name());
        ok[0]
    }

    /// The documented response for `status`.
    #[track_caller]
    fn response(&self, status: u16) -> &Value {
        let r = self.op["responses"].get(status.to_string());
        self.doc.resolve(r.unwrap_or_else(|| panic!("{}: status {status} is not documented", self.name())))
    }

    /// The error code the document gives for `status`, if its example is an
    /// error (the first, when its examples give several).
    fn code(&self, status: u16) -> Option<String> {
        self.codes(status).into_iter().next()
    }

    /// Every error code the examples of `status` give (`example`, or each
    /// of `examples`).
    fn codes(&self, status: u16) -> Vec<String> {
        let Some(content) = self.response(status)["content"].as_object() else { return Vec::new() };
        let mut codes = Vec::new();
        for media in content.values() {
            let examples = media
                .get("example")
                .into_iter()
                .chain(media["examples"].as_object().into_iter().flatten().map(|(_, e)| &e["value"]));
            codes.extend(examples.filter_map(|e| e["error"]["code"].as_str().map(str::to_owned)));
        }
        codes
    }

    /// Whether the success is a Server-Sent Events stream.
    fn is_stream(&self) -> bool {
        self.response(self.success())["content"].get("text/event-stream").is_some()
    }

    /// The request body's media types and their objects.
    fn body_media(&self) -> Vec<(&str, &Value)> {
        match self.op.get("requestBody") {
            Some(b) => self.doc.resolve(b)["content"]
                .as_object()
                .expect("requestBody content")
                .iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// The examples of a parameter or media type: (name, value, x-status).
fn examples<'a>(doc: &'a Doc, holder: &'a Value) -> Vec<(&'a str, &'a Value, u16)> {
    holder["examples"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, ex)| {
            let ex = doc.resolve(ex);
            let status = ex["x-status"].as_u64().unwrap_or_else(|| panic!("example {name}: no x-status"));
            (name.as_str(), &ex["value"], u16::try_from(status).unwrap())
        })
        .collect()
}

/// A value as it goes into a path, query or header.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// A JSON Schema check of the keywords the document uses; any other keyword
// fails the test (so the document cannot say something left unchecked).
// ---------------------------------------------------------------------------

const ANNOTATIONS: [&str; 4] = ["description", "examples", "default", "title"];

fn validate(doc: &Doc, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let fail = |why: String| Err(format!("{at}: {why} (value {v})"));
    let Some(schema) = schema.as_object() else { return fail(format!("not a schema: {schema}")) };
    for (k, rule) in schema {
        match k.as_str() {
            "$ref" => validate(doc, doc.target(rule.as_str().unwrap()), v, at)?,
            "type" => {
                let fits = |t: &str| match t {
                    "object" => v.is_object(),
                    "array" => v.is_array(),
                    "string" => v.is_string(),
                    "boolean" => v.is_boolean(),
                    "null" => v.is_null(),
                    "number" => v.is_number(),
                    "integer" => v.is_i64() || v.is_u64(),
                    other => panic!("{at}: unknown type {other}"),
                };
                let ok = match rule {
                    Value::String(t) => fits(t),
                    Value::Array(ts) => ts.iter().any(|t| fits(t.as_str().unwrap())),
                    _ => panic!("{at}: bad type {rule}"),
                };
                if !ok {
                    return fail(format!("not of type {rule}"));
                }
            }
            "properties" => {
                for (name, sub) in rule.as_object().unwrap() {
                    if let Some(member) = v.get(name) {
                        validate(doc, sub, member, &format!("{at}.{name}"))?;
                    }
                }
            }
            "required" => {
                for name in rule.as_array().unwrap() {
                    if v.is_object() && v.get(name.as_str().unwrap()).is_none() {
                        return fail(format!("{name} is missing"));
                    }
                }
            }
            "additionalProperties" => {
                let known = schema.get("properties").and_then(Value::as_object);
                for (name, member) in v.as_object().into_iter().flatten() {
                    if known.is_some_and(|k| k.contains_key(name)) {
                        continue;
                    }
                    match rule {
                        Value::Bool(false) => return fail(format!("{name} is not a documented member")),
                        Value::Bool(true) => {}
                        sub => validate(doc, sub, member, &format!("{at}.{name}"))?,
                    }
                }
            }
            "items" => {
                for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                    validate(doc, rule, item, &format!("{at}[{i}]"))?;
                }
            }
            "enum" => {
                if !rule.as_array().unwrap().contains(v) {
                    return fail(format!("not one of {rule}"));
                }
            }
            "const" => {
                if rule != v {
                    return fail(format!("not {rule}"));
                }
            }
            "anyOf" => {
                let fits = rule.as_array().unwrap().iter().any(|sub| validate(doc, sub, v, at).is_ok());
                if !fits {
                    return fail(format!("fits none of {rule}"));
                }
            }
            "pattern" => {
                // ECMA-262 in the document; the subset it uses (classes of
                // \uXXXX ranges, anchors) reads the same in Rust's regex.
                if v.as_str().is_some_and(|s| !pattern(rule.as_str().unwrap()).is_match(s)) {
                    return fail(format!("does not match {rule}"));
                }
            }
            "minimum" | "maximum" => {
                if let Some(n) = v.as_f64() {
                    let bound = rule.as_f64().unwrap();
                    if (k == "minimum" && n < bound) || (k == "maximum" && n > bound) {
                        return fail(format!("{k} {bound}"));
                    }
                }
            }
            "minLength" | "maxLength" => {
                if let Some(s) = v.as_str() {
                    // JSON Schema counts code points, as the contract counts characters.
                    let n = s.chars().count() as u64;
                    let bound = rule.as_u64().unwrap();
                    if (k == "minLength" && n < bound) || (k == "maxLength" && n > bound) {
                        return fail(format!("{k} {bound}"));
                    }
                }
            }
            "maxItems" => {
                if v.as_array().is_some_and(|a| a.len() as u64 > rule.as_u64().unwrap()) {
                    return fail(format!("maxItems {rule}"));
                }
            }
            "format" => {
                if let Some(s) = v.as_str() {
                    let ok = match rule.as_str().unwrap() {
                        "uuid" => uuid::Uuid::try_parse(s).is_ok(),
                        "date-time" => is_date_time(s),
                        "uri-reference" => !s.is_empty() && !s.contains(char::is_whitespace),
                        other => panic!("{at}: unknown format {other}"),
                    };
                    if !ok {
                        return fail(format!("not a {rule}"));
                    }
                }
            }
            other if ANNOTATIONS.contains(&other) => {}
            other => panic!("{at}: the test does not check the keyword {other:?}: teach validate() or use another"),
        }
    }
    Ok(())
}

/// The compiled `pattern` (compiled once: the walk checks many values).
fn pattern(source: &str) -> regex::Regex {
    static COMPILED: std::sync::Mutex<BTreeMap<String, regex::Regex>> = std::sync::Mutex::new(BTreeMap::new());
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    let re = compiled
        .entry(source.to_owned())
        .or_insert_with(|| regex::Regex::new(source).unwrap_or_else(|e| panic!("pattern {source}: {e}")));
    re.clone()
}

/// RFC 3339 `date-time`: `2026-11-27T08:14:38.123Z` or with an offset.
fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' || !digits(8..10) {
        return false;
    }
    if !matches!(b[10], b'T' | b't') || !digits(11..13) || b[13] != b':' || !digits(14..16) || b[16] != b':' {
        return false;
    }
    if !digits(17..19) {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    let o = rest.as_bytes();
    rest == "Z"
        || rest == "z"
        || (o.len() == 6
            && matches!(o[0], b'+' | b'-')
            && o[1..3].iter().all(u8::is_ascii_digit)
            && o[3] == b':'
            && o[4..6].iter().all(u8::is_ascii_digit))
}

/// Every `$ref` in `v`, with where it is.
fn refs<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "$ref" {
                    out.push((at.clone(), x.as_str().expect("$ref is a string")));
                } else {
                    refs(x, format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                refs(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Every schema with `examples` in `v`: (where, schema).
fn schemas_with_examples<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(o) => {
            if o.contains_key("type") && o.get("examples").is_some_and(Value::is_array) {
                out.push((at.clone(), v));
            }
            for (k, x) in o {
                schemas_with_examples(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                schemas_with_examples(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_served_sound_and_names_exactly_the_dispatchers_routes() {
    let server = server().await;
    let res = raw::request(server.addr(), "GET", "/api/openapi.json", &[], b"").await;
    assert_eq!(res.status, 200, "served without a token: {res:?}");
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.text(), OPENAPI, "the file, as it is");
    let health = raw::request(server.addr(), "GET", "/healthz", &[], b"").await;
    assert_eq!(res.header("cache-control"), health.header("cache-control"), "cached as the other REST answers");

    let doc = Doc::parse();
    let version = doc.root["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1."), "OpenAPI 3.1, not {version}");
    assert_eq!(doc.root["info"]["version"], env!("CARGO_PKG_VERSION"), "the document's version is the crate's");

    let mut found = Vec::new();
    refs(&doc.root, String::new(), &mut found);
    assert!(found.len() > 50, "the document uses references");
    for (at, reference) in &found {
        assert!(
            reference.strip_prefix('#').and_then(|p| doc.root.pointer(p)).is_some(),
            "{at}: $ref {reference} does not resolve"
        );
    }

    // Paths and methods: the document and the dispatcher's table, both ways.
    let table: BTreeMap<&str, BTreeSet<String>> =
        ROUTES.iter().map(|r| (r.path, r.methods.iter().map(|m| m.to_string()).collect())).collect();
    assert_eq!(table.len(), ROUTES.len(), "each path once in the table");
    let documented: BTreeMap<&str, BTreeSet<String>> =
        doc.root["paths"].as_object().unwrap().keys().map(|p| (p.as_str(), doc.methods_of(p))).collect();
    assert_eq!(documented, table, "the document's paths and methods are the dispatcher's");

    // Operations: named once; links point at one; one success each.
    let ops = doc.operations();
    let ids: BTreeSet<&str> = ops.iter().map(Operation::id).collect();
    assert_eq!(ids.len(), ops.len(), "operationIds are unique");
    for op in &ops {
        op.success();
        for status in op.statuses() {
            for link in op.response(status)["links"].as_object().into_iter().flatten().map(|(_, l)| l) {
                assert!(ids.contains(link["operationId"].as_str().unwrap()), "{}: link to {link}", op.name());
            }
        }
    }

    // Error codes: the schema's are the server's; each documented (status,
    // code) is one the server answers.
    let errors = every_error();
    let codes: BTreeSet<&str> = errors.iter().map(FeedError::code).collect();
    let schema_codes: BTreeSet<&str> = doc.root["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
        ["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(schema_codes, codes, "the Error schema's codes are the server's");
    for op in &ops {
        for status in op.statuses() {
            for code in op.codes(status) {
                assert!(
                    errors.iter().any(|e| e.code() == code && e.status().as_u16() == status),
                    "{}: the server never answers {status} with {code}",
                    op.name()
                );
            }
        }
    }

    // Examples fit their schemas: every response's, the valid ones of
    // parameters and bodies, and the schemas' own.
    for op in &ops {
        let name = op.name();
        for status in op.statuses() {
            let response = op.response(status);
            for (media, m) in response["content"].as_object().into_iter().flatten() {
                if let Some(example) = m.get("example") {
                    validate(&doc, &m["schema"], example, &format!("{name} {status} {media}")).unwrap();
                }
                for (ex, e) in m["examples"].as_object().into_iter().flatten() {
                    validate(&doc, &m["schema"], &e["value"], &format!("{name} {status} {media} {ex}")).unwrap();
                }
            }
            for (header, h) in response["headers"].as_object().into_iter().flatten() {
                assert!(doc.resolve(h)["schema"].is_object(), "{name} {status}: header {header} has a schema");
            }
        }
        for p in &op.params {
            for (ex, value, status) in examples(&doc, p) {
                if status == op.success() {
                    validate(&doc, &p["schema"], value, &format!("{name} {} example {ex}", p["name"])).unwrap();
                }
            }
        }
        for (media, m) in op.body_media() {
            for (ex, value, status) in examples(&doc, m) {
                if status == op.success() {
                    validate(&doc, &m["schema"], value, &format!("{name} body {media} example {ex}")).unwrap();
                }
            }
        }
    }
    // The message's schema says what the server's rules say, character by
    // character: alone, before and after a letter, and among white space.
    let message = &doc.root["components"]["schemas"]["NewEvent"]["properties"]["message"];
    let special = [0xFEFF, 0xFFFD, 0x1F600, 0x10FFFF].into_iter();
    for c in (0..=0x3100).chain(special).filter_map(char::from_u32) {
        for text in [c.to_string(), format!("x{c}"), format!("{c}x"), format!("{c} \t\n{c}")] {
            let schema = validate(&doc, message, &json!(text), "message").is_ok();
            let server = eventfeed::feed::event::validate_message(&text).is_ok();
            assert_eq!(schema, server, "{text:?}: the schema and the server disagree");
        }
    }
    let long = "x".repeat(2049);
    assert!(
        validate(&doc, message, &json!(long), "message").is_err()
            && eventfeed::feed::event::validate_message(&long).is_err()
    );

    let mut with_examples = Vec::new();
    schemas_with_examples(&doc.root["components"]["schemas"], "#/components/schemas".into(), &mut with_examples);
    assert!(!with_examples.is_empty());
    for (at, schema) in with_examples {
        for example in schema["examples"].as_array().unwrap() {
            validate(&doc, schema, example, &at).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// The walk
// ---------------------------------------------------------------------------

/// A request to send.
#[derive(Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An answer, with the first record of a stream.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    first_record: Option<sse::Record>,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {:?} {}", self.method, self.target, self.headers, String::from_utf8_lossy(&self.body))
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, String::from_utf8_lossy(&self.body))?;
        match &self.first_record {
            Some(record) => write!(f, " first record {record:?}"),
            None => Ok(()),
        }
    }
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What replaces a part of the valid request.
enum Swap<'a> {
    None,
    /// This parameter (by `in` and name) takes this value.
    Param(&'a str, &'a str, &'a Value),
    /// The body is this JSON.
    Body(&'a Value),
    /// The body is the valid one, sent with this `Content-Type`.
    MediaType(&'a str),
}

struct Walk<'a> {
    server: &'a FeedServer,
    doc: &'a Doc,
    /// Parameter values from links: (operationId, parameter name) → value.
    linked: HashMap<(String, String), Value>,
    /// The statuses seen, per operation.
    seen: BTreeMap<String, BTreeSet<u16>>,
}

impl<'a> Walk<'a> {
    /// The request of `op` made of the valid examples, with `swap`.
    fn request(&self, op: &Operation<'_>, swap: &Swap<'_>) -> Req {
        let success = op.success();
        let mut target = op.path.to_owned();
        let mut query = Vec::new();
        let mut headers = Vec::new();
        for p in &op.params {
            let (name, place) = (p["name"].as_str().unwrap(), p["in"].as_str().unwrap());
            let value = match swap {
                Swap::Param(i, n, v) if *i == place && *n == name => Some((*v).clone()),
                _ => examples(self.doc, p)
                    .into_iter()
                    .find(|(_, _, status)| *status == success)
                    .map(|(_, v, _)| v.clone())
                    .or_else(|| self.linked.get(&(op.id().to_owned(), name.to_owned())).cloned()),
            };
            let Some(value) = value else {
                assert!(!p["required"].as_bool().unwrap_or(false), "{}: no valid value for {name}", op.name());
                continue;
            };
            let text = as_text(&value);
            match place {
                "path" => target = target.replace(&format!("{{{name}}}"), &text),
                "query" => query.push(format!("{name}={text}")),
                "header" => headers.push((name.to_owned(), text)),
                other => panic!("{}: parameter in {other}", op.name()),
            }
        }
        assert!(!target.contains('{'), "{}: a path parameter has no value: {target}", op.name());
        if !query.is_empty() {
            target = format!("{target}?{}", query.join("&"));
        }
        let mut body = Vec::new();
        if let Some((media, m)) = op.body_media().first() {
            let valid = examples(self.doc, m).into_iter().find(|(_, _, s)| *s == success).map(|(_, v, _)| v);
            let value = match swap {
                Swap::Body(v) => *v,
                _ => valid.unwrap_or_else(|| panic!("{}: no valid body example", op.name())),
            };
            let media = match swap {
                Swap::MediaType(other) => other,
                _ => media,
            };
            headers.push(("Content-Type".to_owned(), media.to_string()));
            body = serde_json::to_vec(value).unwrap();
        }
        Req { method: op.method.clone(), target, headers, body }
    }

    /// Sends `req`; a stream's first record is read, then the stream dropped
    /// (and the test waits until the server let it go).
    async fn send(&self, req: &Req, stream: bool) -> Answer {
        let headers: Vec<(&str, &str)> = req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if stream && req.method == "GET" {
            let mut client = SseClient::get(self.server.addr(), &req.target, &headers).await;
            let first_record = if client.status == 200 { client.next().await } else { None };
            let answer = Answer {
                status: client.status,
                headers: client.headers.clone(),
                body: client.body.clone(),
                first_record,
            };
            drop(client);
            self.streams_become(0).await;
            return answer;
        }
        let mut conn = HttpConn::connect(self.server.addr()).await;
        let res = tokio::time::timeout(WAIT, async {
            conn.send(&req.method, &req.target, &headers, &req.body).await?;
            conn.read_response_to(&req.method).await
        })
        .await
        .unwrap_or_else(|_| panic!("{req:?}: no answer in time"))
        .unwrap_or_else(|e| panic!("{req:?}: {e}"));
        Answer { status: res.status, headers: res.headers, body: res.body, first_record: None }
    }

    async fn streams_become(&self, n: usize) {
        let streams = self.server.app.feed.delivery().streams().clone();
        eventually(&format!("{n} streams are open"), || streams.open() == n).await;
    }

    /// Checks `answer` against the document: `want`, and for it the
    /// `Content-Type`, the required headers, the body's schema and error code.
    #[track_caller]
    fn check(&mut self, op: &Operation<'_>, what: &str, req: &Req, answer: &Answer, want: u16) {
        let name = op.name();
        let context = || format!("{name}, {what}: {req:?} got {answer:?}");
        assert_eq!(answer.status, want, "{}", context());
        let response = op.response(want);
        let content_type = answer.header("content-type").unwrap_or_else(|| panic!("no Content-Type: {}", context()));
        let media = &response["content"]
            .get(content_type)
            .unwrap_or_else(|| panic!("Content-Type {content_type} is not documented for {want}: {}", context()));
        for (header, h) in response["headers"].as_object().into_iter().flatten() {
            let h = self.doc.resolve(h);
            let Some(value) = answer.header(header) else {
                assert!(!h["required"].as_bool().unwrap_or(false), "no {header}: {}", context());
                continue;
            };
            let value = match h["schema"]["type"].as_str() {
                Some("integer") => json!(value.parse::<i64>().unwrap_or_else(|_| panic!("{header}: {}", context()))),
                _ => json!(value),
            };
            validate(self.doc, &h["schema"], &value, &format!("{name} {want} header {header}")).unwrap();
        }
        if want == 405 {
            let allow: BTreeSet<String> = answer.header("allow").unwrap().split(", ").map(str::to_owned).collect();
            assert_eq!(allow, self.doc.methods_of(op.path), "Allow lists the documented methods: {}", context());
        }
        if req.method == "HEAD" {
            assert!(answer.body.is_empty(), "a HEAD answer has no body: {}", context());
        } else if content_type == "text/event-stream" {
            let record = answer.first_record.as_ref().unwrap_or_else(|| panic!("no first record: {}", context()));
            assert_eq!(record.retry.as_deref(), Some("2000"), "a stream starts with retry: {}", context());
        } else if content_type == "application/json" {
            let body: Value =
                serde_json::from_slice(&answer.body).unwrap_or_else(|_| panic!("not JSON: {}", context()));
            if let Err(e) = validate(self.doc, &media["schema"], &body, &format!("{name} {want}")) {
                panic!("{e}: {}", context());
            }
            let codes = op.codes(want);
            if !codes.is_empty() {
                let got = body["error"]["code"].as_str().unwrap_or_default();
                assert!(codes.iter().any(|c| c == got), "a documented code ({codes:?}): {}", context());
            }
        } else {
            assert!(std::str::from_utf8(&answer.body).is_ok(), "text: {}", context());
        }
        self.seen.entry(name).or_default().insert(want);
    }

    /// Sends the link's source operations and keeps the values they give.
    async fn follow_links(&mut self, ops: &[Operation<'_>]) {
        for source in ops {
            for status in source.statuses() {
                for (name, link) in source.response(status)["links"].as_object().into_iter().flatten() {
                    let req = self.request(source, &Swap::None);
                    let answer = self.send(&req, source.is_stream()).await;
                    self.check(source, &format!("the source of link {name}"), &req, &answer, status);
                    let body: Value = serde_json::from_slice(&answer.body).unwrap();
                    let target = link["operationId"].as_str().unwrap();
                    for (param, expression) in link["parameters"].as_object().unwrap() {
                        let expression = expression.as_str().unwrap();
                        let pointer = expression.strip_prefix("$response.body#").unwrap_or_else(|| {
                            panic!("link {name}: only $response.body#/… is followed, not {expression}")
                        });
                        let value = body.pointer(pointer).unwrap_or_else(|| panic!("link {name}: {pointer} in {body}"));
                        // A parameter may be qualified by its place (`path.id`).
                        let param = param.split_once('.').map_or(param.as_str(), |(_, n)| n);
                        self.linked.insert((target.to_owned(), param.to_owned()), value.clone());
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn every_example_and_every_provokable_status_is_answered_as_documented() {
    let server = server().await;
    let doc = Doc::parse();
    let ops = doc.operations();
    let mut walk = Walk { server: &server, doc: &doc, linked: HashMap::new(), seen: BTreeMap::new() };
    walk.follow_links(&ops).await;

    for op in &ops {
        // The valid request: every documented path and method answers (not
        // the dispatcher's 404), with the success.
        let req = walk.request(op, &Swap::None);
        let answer = walk.send(&req, op.is_stream()).await;
        walk.check(op, "the valid request", &req, &answer, op.success());

        // Each example alone in the valid request.
        for p in &op.params {
            let (name, place) = (p["name"].as_str().unwrap(), p["in"].as_str().unwrap());
            for (ex, value, status) in examples(&doc, p) {
                let req = walk.request(op, &Swap::Param(place, name, value));
                let answer = walk.send(&req, op.is_stream()).await;
                walk.check(op, &format!("{place} {name} example {ex}"), &req, &answer, status);
            }
        }
        for (media, m) in op.body_media() {
            for (ex, value, status) in examples(&doc, m) {
                let req = walk.request(op, &Swap::Body(value));
                let answer = walk.send(&req, op.is_stream()).await;
                walk.check(op, &format!("body {media} example {ex}"), &req, &answer, status);
            }
            // A media type the operation does not list.
            let other = "text/plain";
            assert!(op.body_media().iter().all(|(m, _)| *m != other));
            let req = walk.request(op, &Swap::MediaType(other));
            let answer = walk.send(&req, false).await;
            walk.check(op, "a body of another media type", &req, &answer, 415);
        }
    }

    // Every method a path does not list: 405 with Allow, for each of its operations.
    for route in ROUTES {
        let listed = doc.methods_of(route.path);
        let path_ops: Vec<&Operation<'_>> = ops.iter().filter(|o| o.path == route.path).collect();
        let probes = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE"];
        for method in probes.into_iter().filter(|m| !listed.contains(*m)) {
            let mut req = walk.request(path_ops[0], &Swap::None);
            req.method = method.to_owned();
            let answer = walk.send(&req, false).await;
            for op in &path_ops {
                walk.check(op, &format!("{method}, not listed"), &req, &answer, 405);
            }
        }
    }

    // 429: the limits, by the code the document gives.
    for op in ops.iter().filter(|o| o.statuses().contains(&429)) {
        let req = walk.request(op, &Swap::None);
        match op.code(429).as_deref() {
            Some("rate_limited") => {
                // Repeat a valid write until the limit answers (it allows
                // WRITE_BURST at once, fewer than this loop's bound).
                let mut answer = walk.send(&req, false).await;
                let mut sent = 1;
                while answer.status == op.success() {
                    assert!(sent <= 2 * WRITE_BURST, "{}: never rate limited", op.name());
                    answer = walk.send(&req, false).await;
                    sent += 1;
                }
                walk.check(op, "a write repeated", &req, &answer, 429);
            }
            Some("too_many_connections") => {
                // Open streams, each held, until the tenant's limit answers.
                let headers: Vec<(&str, &str)> = req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mut held = Vec::new();
                loop {
                    let mut client = SseClient::get(server.addr(), &req.target, &headers).await;
                    if client.status != 200 {
                        assert_eq!(held.len(), TENANT_CONNECTIONS, "{}: refused at the limit", op.name());
                        let answer = Answer {
                            status: client.status,
                            headers: client.headers.clone(),
                            body: client.body.clone(),
                            first_record: None,
                        };
                        walk.check(op, "streams held", &req, &answer, 429);
                        break;
                    }
                    assert!(held.len() < TENANT_CONNECTIONS, "{}: never refused", op.name());
                    assert!(client.next().await.is_some(), "a held stream starts");
                    held.push(client);
                }
                drop(held);
                walk.streams_become(0).await;
            }
            other => panic!("{}: no way to provoke 429 {other:?}", op.name()),
        }
    }

    // Every status documented was seen, but those a client cannot provoke.
    for op in &ops {
        let want: BTreeSet<u16> = op.statuses().into_iter().filter(|s| !NOT_PROVOKED.contains(s)).collect();
        let seen = walk.seen.get(&op.name()).cloned().unwrap_or_default();
        assert_eq!(seen, want, "{}: the statuses seen are the documented ones", op.name());
    }
    assert!(server.server.stop().await, "drained in time");
}
