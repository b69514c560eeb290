//! A small, fast HTTP/1.1 origin for the demo, the tests and the benchmarks:
//! it serves a key set at `/jwks.json` (when given one) and answers every
//! other request with the request it saw, as JSON (like httpbin's
//! `/headers`), so a caller can see exactly what the gateway forwarded.
//! `/delay/SECONDS` answers late.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Echoed back as `origin`, to tell upstreams apart.
    pub name: String,
    /// Served at `/jwks.json`.
    pub jwks: Option<Bytes>,
}

impl Origin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if let (Some(jwks), "/jwks.json") = (&self.jwks, req.uri().path()) {
            return json(jwks.clone());
        }
        // A header sent several times reads as its values joined by `,`.
        let mut headers = serde_json::Map::new();
        for (k, v) in req.headers() {
            let v = String::from_utf8_lossy(v.as_bytes());
            match headers.get_mut(k.as_str()) {
                Some(serde_json::Value::String(joined)) => {
                    joined.push(',');
                    joined.push_str(&v);
                }
                _ => {
                    headers.insert(k.as_str().to_string(), v.into());
                }
            }
        }
        let body = serde_json::json!({
            "origin": self.name,
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "headers": headers,
        });
        json(Bytes::from(body.to_string()))
    }
}

/// `/delay/SECONDS` (fractions allowed, at most 10) answers that much
/// later, like httpbin's: a slow upstream for drain tests.
fn delay(path: &str) -> Option<std::time::Duration> {
    let seconds: f64 = path.strip_prefix("/delay/")?.parse().ok()?;
    std::time::Duration::try_from_secs_f64(seconds.min(10.0)).ok()
}

fn json(body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves `origin` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, origin: Origin) {
    let origin = Arc::new(origin);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let origin = origin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let origin = origin.clone();
                async move {
                    if let Some(wait) = delay(req.uri().path()) {
                        tokio::time::sleep(wait).await;
                    }
                    Ok::<_, Infallible>(origin.answer(&req))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Starts `origin` on its own thread and runtime, listening on `addr`
/// (`127.0.0.1:0` for any free port); returns the bound address.
pub fn spawn(addr: &str, origin: Origin) -> std::io::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("origin-{}", local.port()))
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, origin).await,
                    Err(e) => tracing::error!(error = %e, "origin cannot listen"),
                }
            })
        })?;
    Ok(local)
}
