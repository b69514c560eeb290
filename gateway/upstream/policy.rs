//! A cluster's DestinationRule traffic policy: how an endpoint is picked
//! (round robin, random, least request, consistent hash) and when one is
//! set aside for failing (outlier detection), with the per-endpoint state
//! both need.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// `loadBalancer.simple`, or `consistentHash`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Balance {
    #[default]
    RoundRobin,
    Random,
    /// Two endpoints picked at random, the one with fewer requests in
    /// flight wins (Envoy's LEAST_REQUEST).
    LeastRequest,
    /// Pingora's Ketama ring over a key taken from the request.
    Hash(HashOn),
}

/// What a consistent hash is taken over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashOn {
    Header(http::HeaderName),
    Cookie(String),
    SourceIp,
    QueryParameter(String),
}

/// `outlierDetection`, with Istio's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outlier {
    /// 0: off.
    pub consecutive_5xx: u32,
    /// 0: off.
    pub consecutive_gateway: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 10,
        }
    }
}

/// `connectionPool`: Envoy's circuit breakers, which shed with 503 rather
/// than queue without bound, and the settings of the connections. `None`
/// is Istio's default: no limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Pool {
    /// `tcp.maxConnections`: requests at the cluster at once, each on its
    /// own HTTP/1.1 connection; more wait (up to `max_pending`).
    pub max_connections: Option<usize>,
    /// `http.http1MaxPendingRequests`: requests waiting for one of those
    /// connections; one more is refused at once.
    pub max_pending: Option<usize>,
    /// `http.http2MaxRequests`: requests in flight to the cluster; one more
    /// is refused at once.
    pub max_requests: Option<usize>,
    /// `http.maxRetries`: requests retrying at once; past it a failed
    /// attempt is answered as it is, not retried.
    pub max_retries: Option<usize>,
    /// `tcp.connectTimeout`, instead of `Settings.upstreamConnectTimeout`.
    pub connect_timeout: Option<Duration>,
    /// `http.idleTimeout`: how long an idle pooled connection is kept.
    pub idle_timeout: Option<Duration>,
    /// `tcp.tcpKeepalive`: (time, interval, probes).
    pub keepalive: Option<(Duration, Duration, usize)>,
}

impl Pool {
    /// Whether any request limit is set (else no admission is needed).
    pub fn limits(&self) -> bool {
        self.max_connections.is_some()
            || self.max_pending.is_some()
            || self.max_requests.is_some()
            || self.max_retries.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Policy {
    pub balance: Balance,
    pub outlier: Option<Outlier>,
    pub pool: Pool,
    /// `tls`: TLS to the endpoints (`None`: plain HTTP).
    pub tls: Option<super::tls::UpstreamTls>,
    /// `Settings.healthChecks` for this cluster's host and port.
    pub health: Option<super::HealthCheck>,
}

/// How a request to an endpoint ended, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500.
    Success,
    /// 500, 501, 505…: a 5xx the upstream chose to send.
    ServerError,
    /// 502, 503, 504, or no answer at all (connect failure, reset,
    /// timeout): Envoy's gateway errors, which are also 5xx errors.
    GatewayError,
}

impl Outcome {
    pub fn of_status(status: u16) -> Outcome {
        match status {
            502..=504 => Outcome::GatewayError,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        }
    }
}

/// One endpoint's counters.
#[derive(Debug, Default)]
pub struct Endpoint {
    pub in_flight: AtomicUsize,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Milliseconds since the cluster's epoch until which the endpoint is
    /// ejected; 0: not ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

/// Every endpoint's counters, made on first use.
#[derive(Debug)]
pub struct Endpoints {
    epoch: Instant,
    by_addr: RwLock<HashMap<SocketAddr, Arc<Endpoint>>>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            epoch: Instant::now(),
            by_addr: RwLock::default(),
        }
    }
}

impl Endpoints {
    pub fn get(&self, addr: SocketAddr) -> Arc<Endpoint> {
        if let Some(e) = self
            .by_addr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
        {
            return e.clone();
        }
        self.by_addr
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr)
            .or_default()
            .clone()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn is_ejected(&self, addr: SocketAddr) -> bool {
        let until = self
            .by_addr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .map_or(0, |e| e.ejected_until.load(Ordering::Relaxed));
        until > self.now_ms()
    }

    /// Endpoints ejected now.
    pub fn ejected_count(&self) -> usize {
        let now = self.now_ms();
        self.by_addr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| e.ejected_until.load(Ordering::Relaxed) > now)
            .count()
    }

    /// Counts `outcome` for `addr`; ejects it when it has failed `outlier`'s
    /// number of times in a row and fewer than `max_ejection_percent` of the
    /// `total` endpoints are out already. An ejection lasts
    /// `base_ejection` times the number of times the endpoint was ejected.
    pub fn report(&self, addr: SocketAddr, outcome: Outcome, outlier: &Outlier, total: usize) {
        let endpoint = self.get(addr);
        let (fivexx, gateway) = match outcome {
            Outcome::Success => {
                endpoint.consecutive_5xx.store(0, Ordering::Relaxed);
                endpoint.consecutive_gateway.store(0, Ordering::Relaxed);
                return;
            }
            Outcome::ServerError => {
                endpoint.consecutive_gateway.store(0, Ordering::Relaxed);
                (
                    endpoint.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1,
                    0,
                )
            }
            Outcome::GatewayError => (
                endpoint.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1,
                endpoint.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1,
            ),
        };
        let tripped = (outlier.consecutive_5xx > 0 && fivexx >= outlier.consecutive_5xx)
            || (outlier.consecutive_gateway > 0 && gateway >= outlier.consecutive_gateway);
        if !tripped || self.is_ejected(addr) {
            return;
        }
        let allowed = total * outlier.max_ejection_percent as usize / 100;
        // Envoy ejects at least one host when the percentage rounds to 0.
        if self.ejected_count() >= allowed.max(1) {
            return;
        }
        let times = endpoint.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let lasts = outlier.base_ejection.saturating_mul(times);
        let until = self.now_ms() + u64::try_from(lasts.as_millis()).unwrap_or(u64::MAX / 2);
        endpoint.ejected_until.store(until, Ordering::Relaxed);
        endpoint.consecutive_5xx.store(0, Ordering::Relaxed);
        endpoint.consecutive_gateway.store(0, Ordering::Relaxed);
        tracing::warn!(endpoint = %addr, ?lasts, "outlier ejected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 80))
    }

    #[test]
    fn consecutive_errors_eject_within_the_percentage_and_success_resets() {
        let outlier = Outlier {
            consecutive_5xx: 3,
            consecutive_gateway: 0,
            base_ejection: Duration::from_millis(200),
            max_ejection_percent: 50,
        };
        let e = Endpoints::default();
        for _ in 0..2 {
            e.report(addr(1), Outcome::ServerError, &outlier, 4);
        }
        e.report(addr(1), Outcome::Success, &outlier, 4);
        e.report(addr(1), Outcome::ServerError, &outlier, 4);
        assert!(!e.is_ejected(addr(1)), "a success in between resets");
        for _ in 0..2 {
            e.report(addr(1), Outcome::GatewayError, &outlier, 4);
        }
        assert!(e.is_ejected(addr(1)));

        // 50% of 4: a second endpoint may go, a third may not.
        for n in [2, 3] {
            for _ in 0..3 {
                e.report(addr(n), Outcome::ServerError, &outlier, 4);
            }
        }
        assert!(e.is_ejected(addr(2)));
        assert!(!e.is_ejected(addr(3)));

        // Ejections end; the next one lasts twice as long.
        std::thread::sleep(Duration::from_millis(250));
        assert!(!e.is_ejected(addr(1)));
        for _ in 0..3 {
            e.report(addr(1), Outcome::ServerError, &outlier, 4);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert!(e.is_ejected(addr(1)), "the second ejection lasts 400 ms");
    }

    #[test]
    fn gateway_errors_alone_can_eject() {
        let outlier = Outlier {
            consecutive_5xx: 0,
            consecutive_gateway: 2,
            max_ejection_percent: 100,
            ..Outlier::default()
        };
        let e = Endpoints::default();
        e.report(addr(1), Outcome::ServerError, &outlier, 1);
        e.report(addr(1), Outcome::ServerError, &outlier, 1);
        assert!(!e.is_ejected(addr(1)), "500s are not gateway errors");
        e.report(addr(1), Outcome::GatewayError, &outlier, 1);
        e.report(addr(1), Outcome::GatewayError, &outlier, 1);
        assert!(e.is_ejected(addr(1)));
        assert_eq!(Outcome::of_status(503), Outcome::GatewayError);
        assert_eq!(Outcome::of_status(500), Outcome::ServerError);
        assert_eq!(Outcome::of_status(404), Outcome::Success);
    }
}
