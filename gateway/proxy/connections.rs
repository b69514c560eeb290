//! Counting and guarding downstream connections: Pingora's proxy hooks see
//! requests, not connections, so the proxy application is wrapped once per
//! listener, and the wrapper counts the connections it is handed and puts
//! a `HeadGuard` in front of each before Pingora reads a request head.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::head_guard::{self, HeadLimits};

/// A `ServerApp` whose connections are counted in
/// `claimgate_downstream_connections` (open now) and
/// `claimgate_downstream_connections_total` (accepted), and whose request
/// heads are limited by `head_guard`.
pub struct Counted<A> {
    inner: Arc<A>,
    /// The limits for a new connection: asked per connection, so that a
    /// reloaded configuration applies to the connections accepted after it.
    limits: Box<dyn Fn() -> HeadLimits + Send + Sync>,
}

impl<A> Counted<A> {
    pub fn new(inner: A, limits: impl Fn() -> HeadLimits + Send + Sync + 'static) -> Counted<A> {
        Counted {
            inner: Arc::new(inner),
            limits: Box::new(limits),
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
        let session = head_guard::wrap(session, (self.limits)());
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
