//! Request mirroring (`mirror`, `mirrors`), as Envoy's shadowing: a copy of
//! the request, with `-shadow` added to its host, goes to the mirror's
//! cluster from a task of its own; its answer is read and dropped. The
//! client's request never waits for it: a mirror that is slow, fails or
//! is refused changes nothing for the client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::upstream::Cluster;

/// Copies in flight at once; beyond that, a copy is dropped (and counted),
/// so a stuck mirror cannot pile up memory.
const MAX_IN_FLIGHT: usize = 1024;

/// The largest request body copied; a larger request is not mirrored.
pub const MAX_BODY: usize = 64 * 1024;

/// How long one copy may take in all.
const COPY_TIMEOUT: Duration = Duration::from_secs(10);

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// A copy waiting for the rest of the request body.
pub struct Pending {
    copies: Vec<(Arc<Cluster>, Box<HttpPeer>)>,
    header: RequestHeader,
    body: BytesMut,
}

impl Pending {
    pub fn new(copies: Vec<(Arc<Cluster>, Box<HttpPeer>)>, header: RequestHeader) -> Pending {
        Pending {
            copies,
            header,
            body: BytesMut::new(),
        }
    }

    /// Adds a piece of the body; `false` when the body is too large to copy
    /// (the copies are then dropped and counted).
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.body.len() + chunk.len() > MAX_BODY {
            for (cluster, _) in &self.copies {
                count(cluster, "too_large");
            }
            return false;
        }
        self.body.extend_from_slice(chunk);
        true
    }

    /// Sends every copy with the body received.
    pub fn send(self) {
        let body = self.body.freeze();
        for (cluster, peer) in self.copies {
            spawn(cluster, peer, self.header.clone(), body.clone());
        }
    }
}

/// `host[:port]` becomes `host-shadow[:port]`, as Envoy sends it.
pub fn shadow_host(host: &str) -> String {
    let port_at = if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    };
    match port_at {
        Some(at) => format!("{}-shadow{}", &host[..at], &host[at..]),
        None => format!("{host}-shadow"),
    }
}

fn count(cluster: &Cluster, result: &str) {
    crate::metrics::get()
        .mirror_requests
        .with_label_values(&[&*cluster.name, result])
        .inc();
}

/// Sends one copy from a task of its own.
fn spawn(cluster: Arc<Cluster>, peer: Box<HttpPeer>, header: RequestHeader, body: Bytes) {
    if IN_FLIGHT.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        count(&cluster, "dropped");
        return;
    }
    tokio::spawn(async move {
        let sent = tokio::time::timeout(COPY_TIMEOUT, send(&peer, header, body)).await;
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        let result = match sent {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::debug!(error = %e, cluster = %cluster.name, "mirror copy failed");
                "error"
            }
            Err(_) => "timeout",
        };
        count(&cluster, result);
    });
}

async fn send(peer: &HttpPeer, header: RequestHeader, body: Bytes) -> pingora::Result<()> {
    let (mut session, _) = connector().get_http_session(peer).await?;
    session.write_request_header(Box::new(header)).await?;
    if !body.is_empty() {
        session.write_request_body(body, true).await?;
    }
    session.finish_request_body().await?;
    session.read_response_header().await?;
    while session.read_response_body().await?.is_some() {}
    // The connection is kept for the next copy.
    connector()
        .release_http_session(session, peer, Some(Duration::from_secs(60)))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_host_keeps_the_port() {
        assert_eq!(shadow_host("example.com"), "example.com-shadow");
        assert_eq!(shadow_host("example.com:8080"), "example.com-shadow:8080");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
    }
}
