//! Access control for the REST API, as Qdrant does it:
//!
//! - `service.api_key`: full access; `service.read_only_api_key`: reads only (a write is
//!   403). Either key is accepted as `api-key: <key>` or `Authorization: Bearer <key>`;
//!   keys are compared in constant time. A missing or wrong key is 401.
//! - `service.jwt_rbac: true`: a bearer token may also be an HS256 JWT signed with the api
//!   key, whose claims narrow the access: `access: "r"` (read everything), `"m"` (manage:
//!   everything), or a list of `{collection, access: "r" | "rw"}`; `exp` is checked;
//!   `value_exists: {collection, matches: [{key, value}]}` makes the token valid only while
//!   a point with all those payload values exists (checked per request by the caller of
//!   [`check`], which can count points).
//! - `/healthz`, `/livez` and `/readyz` stay open.
//!
//! What a request needs is derived from its method and path alone ([`required`]), before
//! any handler runs, so no route can forget to check.

use crate::envelope::error_response;
use axum::http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use std::time::Instant;

/// The configured keys.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    pub api_key: Option<String>,
    pub read_only_api_key: Option<String>,
    pub jwt_rbac: bool,
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.api_key.is_some() || self.read_only_api_key.is_some()
    }
}

/// What a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Health probes: nothing.
    Open,
    /// Read one collection's data or info.
    Read(String),
    /// Write one collection's points.
    Write(String),
    /// Read cluster-wide information (lists, cluster state, telemetry).
    ReadGlobal,
    /// Change collections, indexes, aliases, the cluster.
    Manage,
}

/// What a credential grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    Full,
    ReadAll,
    /// Per collection: `true` = read and write, `false` = read only.
    Collections(Vec<(String, bool)>),
}

impl Grant {
    fn allows(&self, need: &Need) -> bool {
        match (self, need) {
            (_, Need::Open) | (Grant::Full, _) => true,
            (Grant::ReadAll, Need::Read(_) | Need::ReadGlobal) => true,
            (Grant::ReadAll, _) => false,
            (Grant::Collections(list), Need::Read(c)) => list.iter().any(|(n, _)| n == c),
            (Grant::Collections(list), Need::Write(c)) => list.iter().any(|(n, rw)| n == c && *rw),
            (Grant::Collections(_), Need::ReadGlobal | Need::Manage) => false,
        }
    }
}

/// Read endpoints that are POSTed (their bodies are queries).
const READ_POSTS: &[&str] = &[
    "points",
    "points/scroll",
    "points/count",
    "points/search",
    "points/search/batch",
    "points/search/groups",
    "points/search/matrix/pairs",
    "points/search/matrix/offsets",
    "points/query",
    "points/query/batch",
    "points/query/groups",
    "points/recommend",
    "points/recommend/batch",
    "points/recommend/groups",
    "points/discover",
    "points/discover/batch",
    "facet",
];

/// What `method path` needs.
pub fn required(method: &Method, path: &str) -> Need {
    let path = path.trim_end_matches('/');
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return Need::Open;
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    match parts.as_slice() {
        ["collections", c, rest @ ..] if *c != "aliases" => {
            let name = percent_decode(c);
            let sub = rest.join("/");
            if read {
                Need::Read(name)
            } else if sub.starts_with("points") {
                if *method == Method::POST && READ_POSTS.contains(&sub.as_str()) {
                    Need::Read(name)
                } else {
                    Need::Write(name)
                }
            } else if *method == Method::POST && READ_POSTS.contains(&sub.as_str()) {
                Need::Read(name)
            } else {
                Need::Manage
            }
        }
        _ if read => Need::ReadGlobal,
        _ => Need::Manage,
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality that takes the same time wherever the inputs differ (lengths may leak).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credential a request presents: `api-key`, else `Authorization: Bearer`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[derive(Deserialize)]
struct Claims {
    access: Option<serde_json::Value>,
    value_exists: Option<serde_json::Value>,
}

/// A token's `value_exists` condition: some point of `collection` matches `filter`.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueExists {
    pub collection: String,
    /// `{"must": [{"key", "match": {"value"}}, ...]}`
    pub filter: serde_json::Value,
}

fn value_exists(v: &serde_json::Value) -> Result<ValueExists, String> {
    let bad = || {
        "invalid `value_exists` claim: expected {collection, matches: [{key, value}]}".to_string()
    };
    let collection = v
        .get("collection")
        .and_then(|c| c.as_str())
        .ok_or_else(bad)?;
    let matches = v
        .get("matches")
        .and_then(|m| m.as_array())
        .ok_or_else(bad)?;
    let must = matches
        .iter()
        .map(|m| {
            let key = m.get("key").and_then(|k| k.as_str()).ok_or_else(bad)?;
            let value = m.get("value").filter(|x| !x.is_null()).ok_or_else(bad)?;
            Ok(serde_json::json!({"key": key, "match": {"value": value}}))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if must.is_empty() {
        return Err(bad());
    }
    Ok(ValueExists {
        collection: collection.to_string(),
        filter: serde_json::json!({"must": must}),
    })
}

/// The grant of a JWT signed with `key` (HS256), or why it is refused.
fn jwt_grant(token: &str, key: &str) -> Result<(Grant, Option<ValueExists>), String> {
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    let mut v = Validation::new(Algorithm::HS256);
    v.required_spec_claims = Default::default(); // `exp` is optional; checked when present
    v.validate_exp = true;
    v.leeway = 0;
    let data = decode::<Claims>(token, &DecodingKey::from_secret(key.as_bytes()), &v)
        .map_err(|e| format!("invalid token: {e}"))?;
    let c = data.claims;
    let cond = c.value_exists.as_ref().map(value_exists).transpose()?;
    let grant = match c.access {
        None => Ok(Grant::Full),
        Some(serde_json::Value::String(s)) if s == "m" => Ok(Grant::Full),
        Some(serde_json::Value::String(s)) if s == "r" => Ok(Grant::ReadAll),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .map(|e| {
                let name = e.get("collection").and_then(|v| v.as_str());
                let access = e.get("access").and_then(|v| v.as_str());
                match (name, access) {
                    (Some(n), Some("r")) => Ok((n.to_string(), false)),
                    (Some(n), Some("rw")) => Ok((n.to_string(), true)),
                    _ => Err("invalid `access` claim entry".to_string()),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Grant::Collections),
        Some(_) => Err("invalid `access` claim".into()),
    }?;
    Ok((grant, cond))
}

/// Decide a request: `Ok(None)` to serve it, `Ok(Some(condition))` to serve it if the
/// token's `value_exists` condition holds, or the error response.
pub fn check(
    cfg: &AuthConfig,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<ValueExists>, Box<axum::response::Response>> {
    if !cfg.enabled() {
        return Ok(None);
    }
    let need = required(method, path);
    if need == Need::Open {
        return Ok(None);
    }
    let deny =
        |status: StatusCode, msg: &str| Box::new(error_response(status, msg, Instant::now()));
    let Some(given) = presented(headers) else {
        return Err(deny(
            StatusCode::UNAUTHORIZED,
            "Must provide an API key or an Authorization bearer token",
        ));
    };
    let mut cond = None;
    let grant = if cfg
        .api_key
        .as_deref()
        .is_some_and(|k| constant_time_eq(k.as_bytes(), given.as_bytes()))
    {
        Grant::Full
    } else if cfg
        .read_only_api_key
        .as_deref()
        .is_some_and(|k| constant_time_eq(k.as_bytes(), given.as_bytes()))
    {
        Grant::ReadAll
    } else if let (true, Some(key)) = (cfg.jwt_rbac, cfg.api_key.as_deref()) {
        match jwt_grant(given, key) {
            Ok((g, c)) => {
                cond = c;
                g
            }
            Err(e) => {
                return Err(deny(
                    StatusCode::UNAUTHORIZED,
                    &format!("Invalid API key or token: {e}"),
                ))
            }
        }
    } else {
        return Err(deny(StatusCode::UNAUTHORIZED, "Invalid API key or token"));
    };
    if grant.allows(&need) {
        Ok(cond)
    } else {
        Err(deny(
            StatusCode::FORBIDDEN,
            &format!("Forbidden: the credential does not grant {need:?} access"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_needs() {
        let r = |m: Method, p: &str| required(&m, p);
        assert_eq!(r(Method::GET, "/healthz"), Need::Open);
        assert_eq!(r(Method::GET, "/readyz"), Need::Open);
        assert_eq!(r(Method::GET, "/collections"), Need::ReadGlobal);
        assert_eq!(r(Method::GET, "/"), Need::ReadGlobal);
        assert_eq!(r(Method::GET, "/collections/a"), Need::Read("a".into()));
        assert_eq!(r(Method::PUT, "/collections/a"), Need::Manage);
        assert_eq!(r(Method::DELETE, "/collections/a"), Need::Manage);
        assert_eq!(r(Method::PUT, "/collections/a/index"), Need::Manage);
        assert_eq!(r(Method::POST, "/collections/aliases"), Need::Manage);
        assert_eq!(
            r(Method::PUT, "/collections/a/points"),
            Need::Write("a".into())
        );
        assert_eq!(
            r(Method::POST, "/collections/a/points"),
            Need::Read("a".into())
        );
        assert_eq!(
            r(Method::POST, "/collections/a/points/search/batch"),
            Need::Read("a".into())
        );
        assert_eq!(
            r(Method::POST, "/collections/a/points/delete"),
            Need::Write("a".into())
        );
        assert_eq!(
            r(Method::POST, "/collections/a%2Fb/points/query"),
            Need::Read("a/b".into())
        );
        assert_eq!(r(Method::POST, "/collections/a/cluster"), Need::Manage);
        assert_eq!(r(Method::DELETE, "/cluster/peer/3"), Need::Manage);
    }

    #[test]
    fn grants() {
        let w = Need::Write("a".into());
        assert!(Grant::Full.allows(&Need::Manage));
        assert!(Grant::ReadAll.allows(&Need::Read("x".into())));
        assert!(!Grant::ReadAll.allows(&w));
        let g = Grant::Collections(vec![("a".into(), true), ("b".into(), false)]);
        assert!(g.allows(&w));
        assert!(g.allows(&Need::Read("b".into())));
        assert!(!g.allows(&Need::Write("b".into())));
        assert!(!g.allows(&Need::Read("c".into())));
        assert!(!g.allows(&Need::Manage));
        assert!(!g.allows(&Need::ReadGlobal));
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
