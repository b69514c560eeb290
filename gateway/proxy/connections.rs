//! Counting downstream connections: Pingora's proxy hooks see requests,
//! not connections, so the proxy application is wrapped once per listener
//! and the wrapper counts the connections it is handed.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

/// A `ServerApp` whose connections are counted in
/// `claimgate_downstream_connections` (open now) and
/// `claimgate_downstream_connections_total` (accepted).
pub struct Counted<A> {
    inner: Arc<A>,
}

impl<A> Counted<A> {
    pub fn new(inner: A) -> Counted<A> {
        Counted {
            inner: Arc::new(inner),
        }
    }
}

/// Decrements the open-connection gauge however the connection ends,
/// including when its task is dropped at shutdown.
struct Open;

impl Open {
    fn new() -> Open {
        let metrics = crate::metrics::get();
        metrics.downstream_connections.inc();
        metrics.downstream_connections_total.inc();
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        crate::metrics::get().downstream_connections.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = Open::new();
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
