//! Clusters: the endpoints of one destination (`host` + port) and the
//! pingora-load-balancing selector that picks one per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::LoadBalancer;
use prometheus::{Histogram, IntCounter};

/// One upstream cluster, named as Istio names it:
/// `outbound|<port>||<host>`.
pub struct Cluster {
    pub name: Arc<str>,
    /// The destination host, sent as `Host` unchanged (Envoy keeps the
    /// client's authority by default; this is kept for logs and dumps).
    pub host: String,
    pub endpoints: Vec<SocketAddr>,
    lb: LoadBalancer<RoundRobin>,
    connect_timeout: Duration,
    /// `claimgate_upstream_response_seconds` of this cluster.
    pub response_seconds: Histogram,
    /// `claimgate_upstream_retries_total` of this cluster.
    pub retries: IntCounter,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Cluster {
    pub fn new(
        name: String,
        host: String,
        endpoints: Vec<SocketAddr>,
        connect_timeout: Duration,
    ) -> std::io::Result<Cluster> {
        let lb = LoadBalancer::try_from_iter(endpoints.iter().copied())?;
        let response_seconds = crate::metrics::get()
            .upstream_response
            .with_label_values(&[&name]);
        let retries = crate::metrics::get()
            .upstream_retries
            .with_label_values(&[&name]);
        Ok(Cluster {
            response_seconds,
            retries,
            name: name.into(),
            host,
            endpoints,
            lb,
            connect_timeout,
        })
    }

    /// (endpoints, endpoints the balancer may pick).
    pub fn health(&self) -> (usize, usize) {
        let backends = self.lb.backends().get_backend();
        let healthy = backends
            .iter()
            .filter(|b| self.lb.backends().ready(b))
            .count();
        (backends.len(), healthy)
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The next endpoint, as a plain-HTTP peer; `None` when the cluster has
    /// no endpoint to offer.
    pub fn peer(&self) -> Option<Box<HttpPeer>> {
        self.peer_avoiding(&[])
    }

    /// The next endpoint that is not in `tried`, or, when every endpoint
    /// was, the next one (Envoy's `previous_hosts` retry predicate).
    pub fn peer_avoiding(&self, tried: &[SocketAddr]) -> Option<Box<HttpPeer>> {
        let iterations = self.endpoints.len().max(1);
        let backend = if tried.is_empty() {
            self.lb.select(b"", iterations)
        } else {
            self.lb
                .select_with(b"", iterations, |b, healthy| {
                    healthy && b.addr.as_inet().is_none_or(|a| !tried.contains(a))
                })
                .or_else(|| self.lb.select(b"", iterations))
        }?;
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        Some(Box::new(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_endpoint() {
        let endpoints: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
        ];
        let c = Cluster::new(
            "c".into(),
            "h".into(),
            endpoints.clone(),
            Duration::from_secs(1),
        )
        .unwrap();
        let mut seen: Vec<String> = (0..6)
            .map(|_| c.peer().unwrap()._address.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_retry_avoids_endpoints_already_tried_while_others_remain() {
        let endpoints: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
        ];
        let c = Cluster::new(
            "c".into(),
            "h".into(),
            endpoints.clone(),
            Duration::from_secs(1),
        )
        .unwrap();
        for _ in 0..6 {
            let peer = c.peer_avoiding(&endpoints[..2]).unwrap();
            assert_eq!(peer._address.to_string(), "127.0.0.1:3");
        }
        // Every endpoint tried: any will do.
        assert!(c.peer_avoiding(&endpoints).is_some());
    }
}
