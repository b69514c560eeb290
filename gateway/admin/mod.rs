//! The admin listener: `/healthz`, `/ready`, `/metrics`, `/config_dump`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::jwks::JwksRegistry;
use crate::jwt::TokenCache;
use crate::snapshot::Snapshot;

pub struct Admin {
    jwks: Arc<JwksRegistry>,
    tokens: Arc<TokenCache>,
    state: Arc<ArcSwap<Snapshot>>,
}

impl Admin {
    pub fn new(
        jwks: Arc<JwksRegistry>,
        tokens: Arc<TokenCache>,
        state: Arc<ArcSwap<Snapshot>>,
    ) -> Admin {
        Admin {
            jwks,
            tokens,
            state,
        }
    }

    /// Sets the gauges that are read rather than counted.
    fn update_gauges(&self) {
        let metrics = crate::metrics::get();
        self.jwks.update_metrics();
        let entries = i64::try_from(self.tokens.len()).unwrap_or(i64::MAX);
        metrics.jwt_cache_entries.set(entries);
        // Only the clusters in force: a cluster a reload removed disappears.
        metrics.upstream_endpoints.reset();
        metrics.upstream_endpoints_healthy.reset();
        for cluster in &self.state.load().clusters {
            let (all, healthy) = cluster.health();
            let label = [&*cluster.name];
            metrics
                .upstream_endpoints
                .with_label_values(&label)
                .set(i64::try_from(all).unwrap_or(i64::MAX));
            metrics
                .upstream_endpoints_healthy
                .with_label_values(&label)
                .set(i64::try_from(healthy).unwrap_or(i64::MAX));
        }
    }

    /// The configuration in force, as JSON, secrets redacted.
    fn config_dump(&self) -> String {
        let snapshot = self.state.load();
        let p = &snapshot.provenance;
        let documents: Vec<serde_json::Value> = p
            .documents
            .iter()
            .map(|(source, doc)| {
                let mut doc = doc.clone();
                redact(&mut doc);
                serde_json::json!({"source": source, "document": doc})
            })
            .collect();
        let dump = serde_json::json!({
            "generation": p.generation,
            "loaded_at": p.loaded_at,
            "files": p.files,
            "sha256": p.sha256,
            "pending_restart": p.pending_restart,
            "listeners": snapshot.listener_addrs(),
            "clusters": snapshot.clusters.iter().map(|c| serde_json::json!({
                "name": &*c.name,
                "endpoints": c.addresses().iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                "dns": c.dns.as_ref().map(|d| d.targets.iter().map(|(n, p)| format!("{n}:{p}")).collect::<Vec<_>>()),
            })).collect::<Vec<_>>(),
            "documents": documents,
        });
        let mut text = serde_json::to_string_pretty(&dump).unwrap_or_default();
        text.push('\n');
        text
    }

    fn answer(&self, method: &Method, path: &str) -> (StatusCode, String) {
        if method != Method::GET {
            return (StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        }
        match path {
            "/healthz" => (StatusCode::OK, "ok\n".into()),
            "/metrics" => {
                self.update_gauges();
                (StatusCode::OK, crate::metrics::get().render())
            }
            "/config_dump" => (StatusCode::OK, self.config_dump()),
            "/ready" => {
                let waiting: Vec<String> = self
                    .jwks
                    .sources()
                    .iter()
                    .filter(|s| !s.is_loaded())
                    .map(|s| s.uri.clone())
                    .collect();
                if waiting.is_empty() {
                    (StatusCode::OK, "ready\n".into())
                } else {
                    let text = format!("waiting for key sets: {}\n", waiting.join(", "));
                    (StatusCode::SERVICE_UNAVAILABLE, text)
                }
            }
            _ => (StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (status, body) = self.answer(&req.method, req.uri.path());
        let content_type = match req.uri.path() {
            "/metrics" => "text/plain; version=0.0.4; charset=utf-8",
            "/config_dump" if status == StatusCode::OK => "application/json",
            _ => "text/plain; charset=utf-8",
        };
        let mut response = Response::new(body.into_bytes());
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        response
    }
}

/// JWK members that are secret: a symmetric key, and the private parts of
/// RSA, EC and OKP keys (which do not belong in a JWKS, but may be pasted
/// into one by mistake).
const SECRET_MEMBERS: &[&str] = &["k", "d", "p", "q", "dp", "dq", "qi", "oth"];

/// Replaces every secret in a config document: the secret members of any
/// JWK, including those inside an inline `jwks` string.
pub fn redact(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let is_jwk = map.get("kty").is_some_and(Value::is_string);
            for (key, member) in map.iter_mut() {
                if is_jwk && SECRET_MEMBERS.contains(&key.as_str()) {
                    *member = Value::String("[redacted]".into());
                } else if key == "jwks" {
                    if let Value::String(text) = member {
                        *member = match serde_json::from_str::<Value>(text) {
                            Ok(mut jwks) => {
                                redact(&mut jwks);
                                Value::String(jwks.to_string())
                            }
                            Err(_) => Value::String("[redacted: not JSON]".into()),
                        };
                    } else {
                        redact(member);
                    }
                } else {
                    redact(member);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_in_inline_jwks_are_redacted_and_public_keys_kept() {
        let jwks = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"},
            {"kty": "RSA", "n": "AQAB-n", "e": "AQAB", "d": "private"},
        ]})
        .to_string();
        let mut doc = json!({"spec": {"jwtRules": [{"issuer": "i", "jwks": jwks}]}});
        redact(&mut doc);
        let shown = doc["spec"]["jwtRules"][0]["jwks"].as_str().unwrap();
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(!shown.contains("private"), "{shown}");
        assert!(shown.contains("AQAB-n"), "{shown}");
        assert_eq!(doc["spec"]["jwtRules"][0]["issuer"], "i");
    }

    #[test]
    fn a_jwks_that_is_not_json_is_hidden_whole() {
        let mut doc = json!({"jwks": "{not json, but maybe a secret"});
        redact(&mut doc);
        assert_eq!(doc["jwks"], "[redacted: not JSON]");
    }
}
