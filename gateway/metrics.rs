//! Metric families, in one registry served at the admin `/metrics`.
//! Label values come only from the configuration (policy names, …), never
//! from request data, so cardinality is bounded. Handles are resolved when
//! a config is compiled; requests only increment them.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    authz_decisions: IntCounterVec,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let authz_decisions = IntCounterVec::new(
            Opts::new(
                "claimgate_authz_decisions_total",
                "AuthorizationPolicy decisions, by deciding policy (namespace/name; empty: no ALLOW policy matched) and result (allow, deny, audit).",
            ),
            &["policy", "result"],
        )
        .expect("a valid metric definition");
        registry
            .register(Box::new(authz_decisions.clone()))
            .expect("registered once");
        Metrics {
            registry,
            authz_decisions,
        }
    }

    /// The counter for one policy's decisions of one kind.
    pub fn authz_decision(&self, policy: &str, result: &str) -> IntCounter {
        self.authz_decisions.with_label_values(&[policy, result])
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if encoder
            .encode_utf8(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
