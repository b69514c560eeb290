//! Active health checks (`Settings.healthChecks`): pingora-load-balancing's
//! TCP and HTTP checks set on a cluster's `Backends`, run by a background
//! service, each cluster at its own interval and never on a request's
//! path. An endpoint that fails `unhealthy_threshold` checks in a row is not
//! picked until it passes `healthy_threshold` in a row; a cluster with no
//! healthy endpoint left answers 503 "no healthy upstream".
//!
//! Endpoints start healthy (pingora's `Health::default`): a new cluster, or
//! an endpoint a DNS lookup adds, takes traffic until its checks say
//! otherwise. `Backends::update` carries the health of the endpoints that
//! stay over to the new membership, and a cluster reused across a reload
//! keeps its `Backends`, so neither a DNS round nor a reload that leaves the
//! check alone forgets an endpoint's state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType};
use pingora_load_balancing::health_check::{HealthCheck as Check, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;

/// How often the runner looks for a cluster whose round is due: an
/// interval is kept to within this.
const TICK: Duration = Duration::from_millis(50);

/// A cluster's active health check, compiled from `Settings.healthChecks`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// From the start of one round of checks to the start of the next.
    pub interval: Duration,
    /// How long one check may take, connect to answer.
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub probe: Probe,
}

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// The endpoint accepts a TCP connection.
    Tcp,
    /// `GET path` on a new connection answers a status in `expected`.
    Http {
        path: String,
        /// The `Host` header; `None`: the cluster's host.
        host: Option<String>,
        /// Half-open ranges `[start, end)`, as Envoy's `expected_statuses`.
        expected: Vec<(u16, u16)>,
    },
}

/// Envoy's default for an HTTP check: 200 only.
pub const DEFAULT_EXPECTED: (u16, u16) = (200, 201);

impl HealthCheck {
    /// The pingora check for cluster `cluster` of `host`.
    pub(super) fn build(
        &self,
        cluster: &str,
        host: &str,
        tls: Option<&super::UpstreamTls>,
    ) -> std::io::Result<Box<dyn Check + Send + Sync>> {
        let failures = self.unhealthy_threshold.max(1) as usize;
        let successes = self.healthy_threshold.max(1) as usize;
        let inner: Box<dyn Check + Send + Sync> = match &self.probe {
            Probe::Tcp => {
                let mut check = TcpHealthCheck::new();
                check.consecutive_failure = failures;
                check.consecutive_success = successes;
                let options = &mut check.peer_template.options;
                options.connection_timeout = Some(self.timeout);
                options.total_connection_timeout = Some(self.timeout);
                check
            }
            Probe::Http {
                path,
                host: host_header,
                expected,
            } => {
                let invalid = |e: Box<Error>| std::io::Error::other(e.to_string());
                let mut req =
                    RequestHeader::build("GET", path.as_bytes(), None).map_err(invalid)?;
                req.insert_header("Host", host_header.as_deref().unwrap_or(host))
                    .map_err(invalid)?;
                req.insert_header("User-Agent", "claimgate-health-check")
                    .map_err(invalid)?;
                // The host given here only fills `req`, replaced below.
                let mut check = HttpHealthCheck::new("", false);
                check.consecutive_failure = failures;
                check.consecutive_success = successes;
                check.req = req;
                // A new connection per check: a kept-alive one would hide
                // an endpoint that stopped accepting connections.
                check.reuse_connection = false;
                let options = &mut check.peer_template.options;
                options.connection_timeout = Some(self.timeout);
                options.total_connection_timeout = Some(self.timeout);
                options.read_timeout = Some(self.timeout);
                options.write_timeout = Some(self.timeout);
                // A cluster over TLS is checked over TLS, with its CA,
                // client certificate and the name its requests use.
                if let Some(tls) = tls {
                    let name = host_header.as_deref().unwrap_or(host);
                    tls.secure(&mut check.peer_template, name).map_err(|_| {
                        std::io::Error::other(format!(
                            "the health check's host `{name}` is not a TLS server name"
                        ))
                    })?;
                }
                let expected = expected.clone();
                check.validator = Some(Box::new(move |answer: &ResponseHeader| {
                    let status = answer.status.as_u16();
                    if expected
                        .iter()
                        .any(|&(from, to)| (from..to).contains(&status))
                    {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::CustomCode("unexpected status", status),
                            format!("answered {status}"),
                        )
                    }
                }));
                Box::new(check)
            }
        };
        Ok(Box::new(Bounded {
            inner,
            timeout: self.timeout,
            cluster: cluster.to_string(),
        }))
    }
}

/// A check bounded by the timeout as a whole (pingora's own timeouts bound
/// each read, not a slowly dripping answer), whose log lines name the
/// cluster and the endpoint. Pingora logs each transition: `… becomes
/// unhealthy, <why>` (warn) and `… becomes healthy` (info).
struct Bounded {
    inner: Box<dyn Check + Send + Sync>,
    timeout: Duration,
    cluster: String,
}

#[async_trait]
impl Check for Bounded {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        match tokio::time::timeout(self.timeout, self.inner.check(target)).await {
            Ok(result) => result,
            Err(_) => Error::e_explain(
                ErrorType::ReadTimedout,
                format!("no answer within {:?}", self.timeout),
            ),
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("endpoint {} of cluster {}", target.addr, self.cluster)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// When a cluster's next round of checks is due; `None` while one runs.
#[derive(Debug)]
pub(super) struct Schedule(Mutex<Option<Instant>>);

impl Default for Schedule {
    /// The first round is due at once.
    fn default() -> Self {
        Schedule(Mutex::new(Some(Instant::now())))
    }
}

impl Schedule {
    /// Takes the next round if it is due and none is running.
    pub(super) fn claim(&self) -> bool {
        let mut next = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match *next {
            Some(at) if at <= Instant::now() => {
                *next = None;
                true
            }
            _ => false,
        }
    }

    /// A claimed round; the next one is due `interval` after this one
    /// started (at once if it took longer) when the returned guard drops,
    /// even if the round panicked.
    pub(super) fn round(&self, interval: Duration) -> Round<'_> {
        Round {
            schedule: self,
            started: Instant::now(),
            interval,
        }
    }
}

pub(super) struct Round<'a> {
    schedule: &'a Schedule,
    started: Instant,
    interval: Duration,
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        let next = (self.started + self.interval).max(Instant::now());
        *self.schedule.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(next);
    }
}

/// Runs the health checks of the clusters of the configuration in force:
/// each round in its own task, so a slow cluster (bounded by its timeout)
/// never delays another's.
pub struct HealthChecker {
    pub state: Arc<ArcSwap<crate::snapshot::Snapshot>>,
}

impl HealthChecker {
    fn round(&self) {
        let snapshot = self.state.load();
        for cluster in &snapshot.clusters {
            if cluster.claim_health_round() {
                let cluster = cluster.clone();
                tokio::spawn(async move { cluster.check_health().await });
            }
        }
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.round(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};

    use super::*;
    use crate::upstream::{Cluster, DnsTargets, Policy};

    fn tcp_check(unhealthy_threshold: u32) -> Policy {
        Policy {
            health: Some(HealthCheck {
                interval: Duration::from_secs(60),
                timeout: Duration::from_millis(500),
                unhealthy_threshold,
                healthy_threshold: 1,
                probe: Probe::Tcp,
            }),
            ..Policy::default()
        }
    }

    /// An address that refuses connections (bound a moment ago, closed).
    fn dead() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[tokio::test]
    async fn an_endpoint_is_out_after_the_threshold_of_failed_checks_in_a_row() {
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoints = vec![live.local_addr().unwrap(), dead()];
        let cluster = Cluster::build(
            "c".into(),
            "h".into(),
            (endpoints.clone(), Vec::new()),
            None,
            Duration::from_secs(1),
            tcp_check(2),
        )
        .unwrap();
        assert_eq!(cluster.health(), (2, 2), "endpoints start healthy");
        cluster.check_health().await;
        assert_eq!(cluster.health(), (2, 2), "one failure of two");
        cluster.check_health().await;
        assert_eq!(cluster.health(), (2, 1));
        for _ in 0..4 {
            assert_eq!(cluster.pick(b""), Some(endpoints[0]));
        }
    }

    #[tokio::test]
    async fn a_dns_update_keeps_the_health_of_endpoints_that_stay_and_a_new_one_starts_healthy() {
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let (up, down) = (live.local_addr().unwrap(), dead());
        let targets = DnsTargets::new(vec![("a".into(), 80), ("b".into(), 80)]);
        let cluster = Cluster::build(
            "c".into(),
            "h".into(),
            (Vec::new(), Vec::new()),
            Some(targets.clone()),
            Duration::from_secs(1),
            tcp_check(1),
        )
        .unwrap();
        targets.apply(vec![Ok(vec![up]), Ok(vec![down])]);
        cluster.lb.update().await.unwrap();
        cluster.check_health().await;
        assert_eq!(cluster.health(), (2, 1));

        // b answers one more address: `down` stays out, the new one is in
        // (it has not been checked yet).
        let new = SocketAddr::from(([127, 0, 0, 2], down.port()));
        targets.apply(vec![Ok(vec![up]), Ok(vec![down, new])]);
        cluster.lb.update().await.unwrap();
        assert_eq!(cluster.health(), (3, 2));
        let ready = |a: SocketAddr| {
            let backend = Backend::new(&a.to_string()).unwrap();
            cluster.lb.backends().ready(&backend)
        };
        assert!(ready(up) && ready(new) && !ready(down));
    }

    fn http_check(expected: Vec<(u16, u16)>, timeout: Duration) -> Policy {
        Policy {
            health: Some(HealthCheck {
                interval: Duration::from_secs(60),
                timeout,
                unhealthy_threshold: 1,
                healthy_threshold: 1,
                probe: Probe::Http {
                    path: "/healthz".into(),
                    host: None,
                    expected,
                },
            }),
            ..Policy::default()
        }
    }

    /// A server answering every connection `answer` (nothing: it accepts
    /// and never answers).
    fn server(answer: &'static str) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut open = Vec::new();
            for mut stream in listener.incoming().flatten() {
                let mut buf = [0; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(answer.as_bytes());
                open.push(stream);
            }
        });
        addr
    }

    async fn healthy_after_one_round(addr: SocketAddr, policy: Policy) -> bool {
        let cluster = Cluster::build(
            "c".into(),
            "h".into(),
            (vec![addr], Vec::new()),
            None,
            Duration::from_secs(1),
            policy,
        )
        .unwrap();
        // Bounded here too, so a check that hangs fails this test
        // instead of hanging it.
        tokio::time::timeout(Duration::from_secs(10), cluster.check_health())
            .await
            .expect("the check outlived its timeout");
        cluster.health().1 == 1
    }

    #[tokio::test]
    async fn an_http_check_passes_on_an_expected_status_only_and_fails_on_silence() {
        let no_content = server("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        let second = Duration::from_secs(1);
        assert!(
            !healthy_after_one_round(no_content, http_check(vec![DEFAULT_EXPECTED], second)).await,
            "200 only by default"
        );
        assert!(healthy_after_one_round(no_content, http_check(vec![(200, 300)], second)).await);
        let silent = server("");
        assert!(
            !healthy_after_one_round(
                silent,
                http_check(vec![(200, 300)], Duration::from_millis(200))
            )
            .await
        );
    }

    #[test]
    fn a_round_is_claimed_once_and_due_again_an_interval_after_it_started() {
        let schedule = Schedule::default();
        assert!(schedule.claim(), "the first round is due at once");
        assert!(!schedule.claim(), "one round at a time");
        drop(schedule.round(Duration::from_millis(100)));
        assert!(!schedule.claim());
        std::thread::sleep(Duration::from_millis(120));
        assert!(schedule.claim());
    }
}
