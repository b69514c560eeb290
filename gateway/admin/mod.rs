//! The admin listener: `/healthz`, `/ready`, `/metrics`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::jwks::JwksRegistry;
use crate::jwt::TokenCache;

pub struct Admin {
    jwks: Arc<JwksRegistry>,
    tokens: Arc<TokenCache>,
}

impl Admin {
    pub fn new(jwks: Arc<JwksRegistry>, tokens: Arc<TokenCache>) -> Admin {
        Admin { jwks, tokens }
    }

    fn answer(&self, method: &Method, path: &str) -> (StatusCode, String) {
        if method != Method::GET {
            return (StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        }
        match path {
            "/healthz" => (StatusCode::OK, "ok\n".into()),
            "/metrics" => {
                self.jwks.update_metrics();
                let entries = i64::try_from(self.tokens.len()).unwrap_or(i64::MAX);
                crate::metrics::get().jwt_cache_entries.set(entries);
                (StatusCode::OK, crate::metrics::get().render())
            }
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
        let content_type = if req.uri.path() == "/metrics" {
            "text/plain; version=0.0.4; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
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
