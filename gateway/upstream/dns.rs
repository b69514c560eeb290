//! ServiceEntry `resolution: DNS`: endpoints named by host name, resolved
//! in the background and never on a request's path. Each name keeps its
//! last good answer when a lookup fails, so a DNS outage changes nothing;
//! a name never resolved yet has no endpoint (the cluster answers 503
//! "no healthy upstream" until it resolves).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;

/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The names of one DNS cluster and what they resolved to.
#[derive(Debug)]
pub struct DnsTargets {
    /// `(host name, port)`, in config order.
    pub targets: Vec<(String, u16)>,
    /// Each target's load-balancing weight, given to every address it
    /// resolves to.
    pub weights: Vec<usize>,
    answers: Mutex<Answers>,
    /// The backends the balancer reads, rebuilt after each round.
    current: Arc<ArcSwap<BTreeSet<Backend>>>,
}

#[derive(Debug, Default)]
struct Answers {
    by_target: HashMap<(String, u16), Vec<SocketAddr>>,
    last_round: Option<Instant>,
}

impl DnsTargets {
    pub fn new(targets: Vec<(String, u16)>) -> Arc<DnsTargets> {
        let weights = vec![1; targets.len()];
        DnsTargets::weighted(targets, weights)
    }

    /// Targets with their weights (in the same order; missing ones are 1).
    pub fn weighted(targets: Vec<(String, u16)>, mut weights: Vec<usize>) -> Arc<DnsTargets> {
        weights.resize(targets.len(), 1);
        Arc::new(DnsTargets {
            targets,
            weights,
            answers: Mutex::default(),
            current: Arc::default(),
        })
    }

    /// The service discovery the cluster's load balancer is built on.
    pub fn discovery(&self) -> Box<dyn ServiceDiscovery + Send + Sync> {
        Box::new(Discovered(self.current.clone()))
    }

    /// Whether a round is due: never resolved, `every` has passed, or
    /// nothing is known yet and the last try was over two seconds ago.
    pub fn due(&self, every: Duration) -> bool {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let retry = if answers.by_target.is_empty() {
            every.min(Duration::from_secs(2))
        } else {
            every
        };
        answers.last_round.is_none_or(|t| t.elapsed() >= retry)
    }

    /// The addresses in force.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<SocketAddr> = answers.by_target.values().flatten().copied().collect();
        all.sort();
        all.dedup();
        all
    }

    /// Resolves every name once.
    pub async fn resolve(&self) {
        let mut results = Vec::with_capacity(self.targets.len());
        for (name, port) in &self.targets {
            let lookup = tokio::net::lookup_host((name.as_str(), *port));
            let result = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => Ok(addrs.collect::<Vec<_>>()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer in {LOOKUP_TIMEOUT:?}")),
            };
            results.push(result);
        }
        self.apply(results);
    }

    /// Takes one round of answers (one per target, in order): a good answer
    /// replaces that name's addresses, a failure or an empty answer keeps
    /// them.
    pub fn apply(&self, results: Vec<Result<Vec<SocketAddr>, String>>) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        for (target, result) in self.targets.iter().zip(results) {
            match result {
                Ok(addrs) if !addrs.is_empty() => {
                    answers.by_target.insert(target.clone(), addrs);
                }
                Ok(_) => {
                    tracing::warn!(name = %target.0, "DNS: no address; keeping the last answer")
                }
                Err(error) => {
                    tracing::warn!(name = %target.0, %error, "DNS lookup failed; keeping the last answer")
                }
            }
        }
        answers.last_round = Some(Instant::now());
        let weight_of: HashMap<&(String, u16), usize> = self
            .targets
            .iter()
            .zip(self.weights.iter().copied())
            .collect();
        let backends: BTreeSet<Backend> = answers
            .by_target
            .iter()
            .flat_map(|(target, addrs)| {
                let weight = weight_of.get(target).copied().unwrap_or(1);
                addrs.iter().map(move |a| Backend {
                    addr: pingora::protocols::l4::socket::SocketAddr::Inet(*a),
                    weight,
                    ext: Default::default(),
                })
            })
            .collect();
        self.current.store(Arc::new(backends));
    }
}

struct Discovered(Arc<ArcSwap<BTreeSet<Backend>>>);

#[async_trait]
impl ServiceDiscovery for Discovered {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok(((**self.0.load()).clone(), HashMap::new()))
    }
}

/// Keeps every DNS cluster of the configuration in force resolved: each
/// one when it is due (`Settings.dnsRefreshRate`), a new one (after a
/// reload) at once. Ready once the clusters of the first configuration
/// had their first round, so the listeners open with endpoints known.
pub struct DnsRefresher {
    pub state: Arc<ArcSwap<crate::snapshot::Snapshot>>,
    pub every: Duration,
}

impl DnsRefresher {
    async fn round(&self) {
        let snapshot = self.state.load_full();
        for cluster in &snapshot.clusters {
            if cluster.dns.as_ref().is_some_and(|d| d.due(self.every)) {
                cluster.refresh_dns().await;
            }
        }
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for DnsRefresher {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: pingora::server::ShutdownWatch,
        ready: pingora::services::ServiceReadyNotifier,
    ) {
        self.round().await;
        ready.notify_ready();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => self.round().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_failed_or_empty_lookup_keeps_that_names_last_answer() {
        let dns = DnsTargets::new(vec![("a".into(), 80), ("b".into(), 80)]);
        assert!(dns.due(Duration::from_secs(60)));
        dns.apply(vec![Ok(vec![addr("10.0.0.1:80")]), Err("timeout".into())]);
        assert_eq!(dns.addresses(), vec![addr("10.0.0.1:80")]);
        assert!(!dns.due(Duration::from_secs(60)));

        // b resolves; a fails and keeps its answer.
        dns.apply(vec![Err("SERVFAIL".into()), Ok(vec![addr("10.0.0.2:80")])]);
        assert_eq!(
            dns.addresses(),
            vec![addr("10.0.0.1:80"), addr("10.0.0.2:80")]
        );

        // a moves; b answers nothing and keeps its answer.
        dns.apply(vec![Ok(vec![addr("10.0.0.3:80")]), Ok(vec![])]);
        assert_eq!(
            dns.addresses(),
            vec![addr("10.0.0.2:80"), addr("10.0.0.3:80")]
        );
        assert_eq!(dns.current.load().len(), 2);
    }

    #[test]
    fn every_address_of_a_target_takes_the_targets_weight() {
        let dns = DnsTargets::weighted(vec![("a".into(), 80), ("b".into(), 80)], vec![3]);
        dns.apply(vec![
            Ok(vec![addr("10.0.0.1:80"), addr("10.0.0.2:80")]),
            Ok(vec![addr("10.0.0.3:80")]),
        ]);
        let weights: Vec<(String, usize)> = dns
            .current
            .load()
            .iter()
            .map(|b| (b.addr.to_string(), b.weight))
            .collect();
        assert_eq!(
            weights,
            [
                ("10.0.0.1:80".to_string(), 3),
                ("10.0.0.2:80".to_string(), 3),
                ("10.0.0.3:80".to_string(), 1),
            ]
        );
    }
}
