//! Clusters: the endpoints of one destination (`host` + port) and the
//! pingora-load-balancing selector that picks one per request.

mod dns;
mod health;
pub mod limits;
pub mod policy;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

pub use dns::{DnsRefresher, DnsTargets};
pub use health::{HealthCheck, HealthChecker, Probe, DEFAULT_EXPECTED};
pub use limits::{Admission, Limits, Refused};
pub use policy::{Balance, Endpoint, HashOn, Outcome, Outlier, Policy, Pool};
pub use tls::{NoServerName, UpstreamTls};

/// The pingora-load-balancing selector a policy asks for.
enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Hash(LoadBalancer<Consistent>),
}

/// A balancer over fixed, weighted endpoints, or over what a DNS discovery
/// finds.
fn balancer<S>(
    endpoints: &[SocketAddr],
    weights: &[usize],
    dns: Option<&DnsTargets>,
) -> std::io::Result<LoadBalancer<S>>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    if let Some(dns) = dns {
        return Ok(LoadBalancer::from_backends(Backends::new(dns.discovery())));
    }
    let backends = endpoints
        .iter()
        .zip(weights.iter().copied().chain(std::iter::repeat(1)))
        .map(|(addr, weight)| Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(*addr),
            weight,
            ext: Default::default(),
        })
        .collect();
    let lb = LoadBalancer::from_backends(Backends::new(Static::new(backends)));
    // A static discovery answers at once: one poll builds the selector.
    let polled = {
        let update = std::pin::pin!(lb.update());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::future::Future::poll(update, &mut cx)
    };
    match polled {
        std::task::Poll::Ready(Ok(())) => Ok(lb),
        std::task::Poll::Ready(Err(e)) => Err(std::io::Error::other(e.to_string())),
        std::task::Poll::Pending => Err(std::io::Error::other(
            "the static endpoint list did not build at once",
        )),
    }
}

impl Balancer {
    fn new(
        policy: &Policy,
        endpoints: &[SocketAddr],
        weights: &[usize],
        dns: Option<&DnsTargets>,
    ) -> std::io::Result<Balancer> {
        Ok(match policy.balance {
            Balance::RoundRobin | Balance::LeastRequest => {
                Balancer::RoundRobin(balancer(endpoints, weights, dns)?)
            }
            Balance::Random => Balancer::Random(balancer(endpoints, weights, dns)?),
            Balance::Hash(_) => Balancer::Hash(balancer(endpoints, weights, dns)?),
        })
    }

    fn backends(&self) -> &Backends {
        match self {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Random(lb) => lb.backends(),
            Balancer::Hash(lb) => lb.backends(),
        }
    }

    fn select(
        &self,
        key: &[u8],
        tries: usize,
        accept: impl Fn(&Backend) -> bool,
    ) -> Option<Backend> {
        let accept = |b: &Backend, healthy: bool| healthy && accept(b);
        match self {
            Balancer::RoundRobin(lb) => lb.select_with(key, tries, accept),
            Balancer::Random(lb) => lb.select_with(key, tries, accept),
            Balancer::Hash(lb) => lb.select_with(key, tries, accept),
        }
    }

    /// Set once, on a balancer just built (pingora panics on a second one).
    fn set_health_check(
        &mut self,
        check: Box<dyn pingora_load_balancing::health_check::HealthCheck + Send + Sync>,
    ) {
        match self {
            Balancer::RoundRobin(lb) => lb.set_health_check(check),
            Balancer::Random(lb) => lb.set_health_check(check),
            Balancer::Hash(lb) => lb.set_health_check(check),
        }
    }

    async fn update(&self) -> pingora::Result<()> {
        match self {
            Balancer::RoundRobin(lb) => lb.update().await,
            Balancer::Random(lb) => lb.update().await,
            Balancer::Hash(lb) => lb.update().await,
        }
    }
}

/// A hasher with fixed keys: the fallback pick of a key must be the same
/// in every process and after every reload.
#[derive(Default)]
struct FixedState;

impl std::hash::BuildHasher for FixedState {
    type Hasher = std::collections::hash_map::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::collections::hash_map::DefaultHasher::new()
    }
}

/// The candidate a random `r` (below 2^32) lands on, each taking a share
/// of the draw proportional to its weight.
fn weighted_draw(candidates: &[(SocketAddr, usize)], r: u64) -> (SocketAddr, usize) {
    let total: u64 = candidates.iter().map(|c| c.1 as u64).sum();
    let mut point = (r * total) >> 32;
    for &candidate in candidates {
        match point.checked_sub(candidate.1 as u64) {
            Some(rest) => point = rest,
            None => return candidate,
        }
    }
    candidates[candidates.len() - 1]
}

fn inet(backend: &Backend) -> Option<SocketAddr> {
    backend.addr.as_inet().copied()
}
use prometheus::{Histogram, IntCounter};

/// One upstream cluster, named as Istio names it:
/// `outbound|<port>||<host>`.
pub struct Cluster {
    pub name: Arc<str>,
    /// The destination host, sent as `Host` unchanged (Envoy keeps the
    /// client's authority by default; this is kept for logs and dumps).
    pub host: String,
    /// The endpoints of a STATIC cluster (empty for a DNS one).
    pub endpoints: Vec<SocketAddr>,
    /// Their load-balancing weights, in the same order (a DNS cluster's
    /// are its targets'), reduced by their common divisor.
    pub weights: Vec<usize>,
    /// The names of a DNS cluster, resolved in the background.
    pub dns: Option<Arc<DnsTargets>>,
    /// The DestinationRule's traffic policy (the default: round robin).
    pub policy: Policy,
    /// Per-endpoint requests in flight and outlier state.
    pub state: policy::Endpoints,
    /// The `connectionPool` limits; `None` when the policy sets none.
    pub limits: Option<Arc<Limits>>,
    /// For LEAST_REQUEST's random picks.
    seed: AtomicU64,
    lb: Balancer,
    connect_timeout: Duration,
    /// When the next round of `policy.health` checks is due.
    health_schedule: health::Schedule,
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
        Cluster::build(
            name,
            host,
            (endpoints, Vec::new()),
            None,
            connect_timeout,
            Policy::default(),
        )
    }

    /// A cluster of `(host name, port)` targets, empty until the first
    /// lookup (`refresh_dns`).
    pub fn dns(
        name: String,
        host: String,
        targets: Vec<(String, u16)>,
        connect_timeout: Duration,
    ) -> std::io::Result<Cluster> {
        let dns = Some(DnsTargets::new(targets));
        Cluster::build(
            name,
            host,
            (Vec::new(), Vec::new()),
            dns,
            connect_timeout,
            Policy::default(),
        )
    }

    /// Fixed `endpoints` with their weights (missing ones are 1), or the
    /// names of `dns`, balanced by `policy`. The policy's
    /// `connectionPool.tcp.connectTimeout` wins over `connect_timeout`.
    pub fn build(
        name: String,
        host: String,
        (endpoints, weights): (Vec<SocketAddr>, Vec<usize>),
        dns: Option<Arc<DnsTargets>>,
        connect_timeout: Duration,
        policy: Policy,
    ) -> std::io::Result<Cluster> {
        let mut lb = Balancer::new(&policy, &endpoints, &weights, dns.as_deref())?;
        if let Some(check) = &policy.health {
            lb.set_health_check(check.build(&name, &host, policy.tls.as_ref())?);
        }
        let connect_timeout = policy.pool.connect_timeout.unwrap_or(connect_timeout);
        let response_seconds = crate::metrics::get()
            .upstream_response
            .with_label_values(&[&name]);
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            &name,
        );
        let retries = crate::metrics::get()
            .upstream_retries
            .with_label_values(&[&name]);
        Ok(Cluster {
            response_seconds,
            retries,
            name: name.into(),
            host,
            endpoints,
            weights,
            dns,
            limits: Limits::of(&policy.pool),
            policy,
            state: policy::Endpoints::default(),
            seed: AtomicU64::new(seed | 1),
            lb,
            connect_timeout,
            health_schedule: health::Schedule::default(),
        })
    }

    /// Picks an endpoint for a request whose hash key (for a consistent
    /// hash policy) is `key`: never an ejected one. `None` when none is left.
    pub fn pick(&self, key: &[u8]) -> Option<SocketAddr> {
        self.pick_avoiding(key, &[])
    }

    /// `pick`, avoiding the endpoints in `tried` while another is left
    /// (Envoy's `previous_hosts` retry predicate).
    pub fn pick_avoiding(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        if !tried.is_empty() {
            let untried = self.pick_where(key, |a| !tried.contains(&a));
            if untried.is_some() {
                return untried;
            }
        }
        self.pick_where(key, |_| true)
    }

    fn pick_where(&self, key: &[u8], allowed: impl Fn(SocketAddr) -> bool) -> Option<SocketAddr> {
        let backends = self.lb.backends().get_backend();
        let usable = |b: &Backend| inet(b).is_some_and(|a| allowed(a) && !self.state.is_ejected(a));
        if self.policy.balance == Balance::LeastRequest {
            let candidates: Vec<(SocketAddr, usize)> = backends
                .iter()
                .filter(|b| usable(b) && self.lb.backends().ready(b))
                .filter_map(|b| Some((inet(b)?, b.weight.max(1))))
                .collect();
            return match candidates.len() {
                0 => None,
                1 => Some(candidates[0].0),
                _ => {
                    // Two candidates drawn by weight (uniformly when the
                    // weights are equal, the common case).
                    let r = self.next_random();
                    let a = weighted_draw(&candidates, r & 0xFFFF_FFFF);
                    let b = weighted_draw(&candidates, r >> 32);
                    // Fewer requests in flight wins; on a tie the first
                    // draw, so an idle cluster is shared by weight.
                    let load = |x| self.state.get(x).in_flight.load(Ordering::Relaxed);
                    Some(if load(b.0) < load(a.0) { b.0 } else { a.0 })
                }
            };
        }
        let ready = |b: &Backend| usable(b) && self.lb.backends().ready(b);
        if let Some(picked) = self.lb.select(key, backends.len().max(1), usable) {
            return inet(&picked);
        }
        // Pingora's search is bounded: after its first pick it falls back
        // to picks that may repeat, and with few endpoints left (weights,
        // ejections, failed health checks) it can give up while one is
        // still usable. Then: the first usable endpoint from a place the
        // key decides, so a hashed request still goes to the same one.
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = std::hash::BuildHasher::hash_one(&FixedState, key) as usize % n;
        backends
            .iter()
            .cycle()
            .skip(start)
            .take(n)
            .find(|b| ready(b))
            .and_then(inet)
    }

    /// xorshift64*: cheap, and good enough to pick two endpoints.
    fn next_random(&self) -> u64 {
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A plain-HTTP peer for `addr`.
    pub fn peer_to(&self, addr: SocketAddr) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        let pool = &self.policy.pool;
        if let Some(idle) = pool.idle_timeout {
            peer.options.idle_timeout = Some(idle);
        }
        if let Some((idle, interval, count)) = pool.keepalive {
            peer.options.tcp_keepalive = Some(pingora::protocols::TcpKeepalive {
                idle,
                interval,
                count,
                #[cfg(target_os = "linux")]
                user_timeout: Duration::ZERO,
            });
        }
        Box::new(peer)
    }

    /// The peer for a request to `host` (its host without port, after
    /// `rewrite.authority`) sent to `addr`: `peer_to`, over TLS when the
    /// DestinationRule says so. `host` names the TLS server when `sni` is
    /// not set; a request whose host cannot be a name is refused then.
    pub fn peer_for(&self, addr: SocketAddr, host: &str) -> Result<Box<HttpPeer>, NoServerName> {
        let mut peer = self.peer_to(addr);
        if let Some(tls) = &self.policy.tls {
            tls.secure(&mut peer, host)?;
        }
        Ok(peer)
    }

    /// Counts how a request to `addr` ended, for outlier detection.
    pub fn report(&self, addr: SocketAddr, outcome: Outcome) {
        if let Some(outlier) = &self.policy.outlier {
            let total = self.lb.backends().get_backend().len();
            self.state.report(addr, outcome, outlier, total);
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

    /// Takes the next round of the cluster's health checks if it has any
    /// and one is due; the caller then runs `check_health`.
    pub fn claim_health_round(&self) -> bool {
        self.policy.health.is_some() && self.health_schedule.claim()
    }

    /// One round of health checks, claimed with `claim_health_round`:
    /// every endpoint at once, each bounded by the check's timeout.
    pub async fn check_health(&self) {
        if let Some(check) = &self.policy.health {
            let _round = self.health_schedule.round(check.interval);
            self.lb.backends().run_health_check(true).await;
        }
    }

    /// (endpoints, endpoints the balancer may pick: healthy and not
    /// ejected).
    pub fn health(&self) -> (usize, usize) {
        let backends = self.lb.backends().get_backend();
        let healthy = backends
            .iter()
            .filter(|b| self.lb.backends().ready(b))
            .filter(|b| inet(b).is_some_and(|a| !self.state.is_ejected(a)))
            .count();
        (backends.len(), healthy)
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The next endpoint (round robin, or as the policy says with an
    /// empty hash key), as a peer for a request to `host` (see
    /// `peer_for`); `None` when none is left.
    pub fn peer(&self, host: &str) -> Option<Box<HttpPeer>> {
        self.pick_avoiding(b"", &[])
            .and_then(|addr| self.peer_for(addr, host).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round-robin cluster of three endpoints.
    fn three_endpoints() -> (Vec<SocketAddr>, Cluster) {
        let endpoints: Vec<SocketAddr> = (1..=3)
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        let c = Cluster::new(
            "c".into(),
            "h".into(),
            endpoints.clone(),
            Duration::from_secs(1),
        )
        .unwrap();
        (endpoints, c)
    }

    #[test]
    fn round_robin_visits_every_endpoint() {
        let (_, c) = three_endpoints();
        let mut seen: Vec<String> = (0..6)
            .map(|_| c.peer("h").unwrap()._address.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3);
    }

    fn weighted(balance: Balance, weights: &[usize]) -> (Vec<SocketAddr>, Cluster) {
        let endpoints: Vec<SocketAddr> = (1..=weights.len() as u16)
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        let policy = Policy {
            balance,
            ..Policy::default()
        };
        let c = Cluster::build(
            "c".into(),
            "h".into(),
            (endpoints.clone(), weights.to_vec()),
            None,
            Duration::from_secs(1),
            policy,
        )
        .unwrap();
        (endpoints, c)
    }

    #[test]
    fn the_one_endpoint_left_is_found_whatever_the_weights_and_policy() {
        // Pingora's bounded search alone gives up on some of these picks
        // (a heavy endpoint drawn again and again).
        let header = Balance::Hash(HashOn::Header(http::HeaderName::from_static("x")));
        for balance in [
            Balance::RoundRobin,
            Balance::Random,
            header,
            Balance::LeastRequest,
        ] {
            let (e, c) = weighted(balance.clone(), &[8, 1, 1]);
            for i in 0..200u32 {
                let key = i.to_string();
                assert_eq!(
                    c.pick_avoiding(key.as_bytes(), &[e[0], e[2]]),
                    Some(e[1]),
                    "{balance:?}"
                );
            }
        }
    }

    #[test]
    fn least_request_shares_an_idle_cluster_by_weight() {
        let (e, c) = weighted(Balance::LeastRequest, &[9, 1]);
        let light = (0..10_000).filter(|_| c.pick(b"") == Some(e[1])).count();
        assert!(
            (700..=1300).contains(&light),
            "light picked {light} times in 10,000"
        );
    }

    #[test]
    fn a_retry_avoids_endpoints_already_tried_while_others_remain() {
        let (endpoints, c) = three_endpoints();
        for _ in 0..6 {
            assert_eq!(c.pick_avoiding(b"", &endpoints[..2]), Some(endpoints[2]));
        }
        // Every endpoint tried: any will do.
        assert!(c.pick_avoiding(b"", &endpoints).is_some());
    }
}
