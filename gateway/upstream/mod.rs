//! Clusters: the endpoints of one destination (`host` + port) and the
//! pingora-load-balancing selector that picks one per request.

mod dns;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backends, LoadBalancer};

pub use dns::{DnsRefresher, DnsTargets};
use prometheus::Histogram;

/// One upstream cluster, named as Istio names it:
/// `outbound|<port>||<host>`.
pub struct Cluster {
    pub name: Arc<str>,
    /// The destination host, sent as `Host` unchanged (Envoy keeps the
    /// client's authority by default; this is kept for logs and dumps).
    pub host: String,
    /// The endpoints of a STATIC cluster (empty for a DNS one).
    pub endpoints: Vec<SocketAddr>,
    /// The names of a DNS cluster, resolved in the background.
    pub dns: Option<Arc<DnsTargets>>,
    lb: LoadBalancer<RoundRobin>,
    connect_timeout: Duration,
    /// `claimgate_upstream_response_seconds` of this cluster.
    pub response_seconds: Histogram,
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
        Ok(Cluster {
            response_seconds,
            name: name.into(),
            host,
            endpoints,
            dns: None,
            lb,
            connect_timeout,
        })
    }

    /// A cluster of `(host name, port)` targets, empty until the first
    /// lookup (`refresh_dns`).
    pub fn dns(
        name: String,
        host: String,
        targets: Vec<(String, u16)>,
        connect_timeout: Duration,
    ) -> Cluster {
        let dns = DnsTargets::new(targets);
        let lb = LoadBalancer::from_backends(Backends::new(dns.discovery()));
        let response_seconds = crate::metrics::get()
            .upstream_response
            .with_label_values(&[&name]);
        Cluster {
            response_seconds,
            name: name.into(),
            host,
            endpoints: Vec::new(),
            dns: Some(dns),
            lb,
            connect_timeout,
        }
    }

    /// Resolves a DNS cluster's names once and hands the answer to the
    /// balancer; nothing for a STATIC cluster.
    pub async fn refresh_dns(&self) {
        if let Some(dns) = &self.dns {
            dns.resolve().await;
            if let Err(error) = self.lb.update().await {
                tracing::warn!(cluster = %self.name, %error, "cannot update the endpoints");
            }
        }
    }

    /// The endpoints in force: the STATIC ones, or what DNS answered.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match &self.dns {
            Some(dns) => dns.addresses(),
            None => self.endpoints.clone(),
        }
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
        let candidates = match &self.dns {
            Some(_) => self.lb.backends().get_backend().len(),
            None => self.endpoints.len(),
        };
        let backend = self.lb.select(b"", candidates.max(1))?;
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
}
