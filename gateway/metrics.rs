//! Metric families, in one registry served at the admin `/metrics`.
//! Label values come only from the configuration (policy names, …), never
//! from request data, so cardinality is bounded. Handles are resolved when
//! a config is compiled; requests only increment them.

use std::sync::OnceLock;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    authz_decisions: IntCounterVec,
    /// `claimgate_jwks_fetches_total{uri, result}`.
    pub jwks_fetches: IntCounterVec,
    /// `claimgate_jwks_keys{uri}`: usable keys in the set in force.
    pub jwks_keys: IntGaugeVec,
    /// `claimgate_jwks_last_success_timestamp_seconds{uri}`.
    pub jwks_last_success: GaugeVec,
    /// `claimgate_jwks_seconds_since_last_success{uri}`, set at scrape time.
    pub jwks_age: GaugeVec,
    /// `claimgate_jwks_unknown_kid_refetches_total{uri}`.
    pub jwks_refetches: IntCounterVec,
    /// `claimgate_jwt_cache_entries`, set at scrape time.
    pub jwt_cache_entries: IntGauge,
    /// `claimgate_rejections_total{reason}`: the gateway answered instead of an upstream.
    pub rejections: IntCounterVec,
    /// `claimgate_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `claimgate_config_generation`.
    pub config_generation: IntGauge,
    /// `claimgate_config_last_reload_success_timestamp_seconds`.
    pub config_last_success: prometheus::Gauge,
    /// `claimgate_config_pending_restart`.
    pub config_pending_restart: IntGauge,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
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
        let authz_decisions = register(&registry, authz_decisions);
        let uri = &["uri"];
        let jwks_fetches = register(
            &registry,
            IntCounterVec::new(
                Opts::new("claimgate_jwks_fetches_total", "Key set fetches by jwksUri and result (ok, http_status, invalid_json, no_keys, no_valid_keys, too_large, timeout, connect, error)."),
                &["uri", "result"],
            )
            .expect("a valid metric definition"),
        );
        let jwks_keys = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "claimgate_jwks_keys",
                    "Usable keys in the key set in force, by jwksUri.",
                ),
                uri,
            )
            .expect("a valid metric definition"),
        );
        let jwks_last_success = register(
            &registry,
            GaugeVec::new(
                Opts::new("claimgate_jwks_last_success_timestamp_seconds", "Unix time of the last successful fetch (or of the persisted set loaded at start), by jwksUri."),
                uri,
            )
            .expect("a valid metric definition"),
        );
        let jwks_age = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "claimgate_jwks_seconds_since_last_success",
                    "Seconds since the key set in force was fetched, by jwksUri.",
                ),
                uri,
            )
            .expect("a valid metric definition"),
        );
        let jwks_refetches = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "claimgate_jwks_unknown_kid_refetches_total",
                    "Fetches triggered by a token whose kid was not in the set, by jwksUri.",
                ),
                uri,
            )
            .expect("a valid metric definition"),
        );
        let jwt_cache_entries = register(
            &registry,
            IntGauge::new(
                "claimgate_jwt_cache_entries",
                "Verified tokens held in the token cache.",
            )
            .expect("a valid metric definition"),
        );
        let rejections = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "claimgate_rejections_total",
                    "Requests the gateway answered itself, by reason (a fixed set: malformed, expired, not_yet_valid, unknown_issuer, unknown_kid, bad_signature, audience, jwks_unavailable, multiple_tokens, authz_denied, no_route, no_healthy_upstream, upstream_connect_failure, upstream_reset, upstream_timeout, upstream_protocol_error).",
                ),
                &["reason"],
            )
            .expect("a valid metric definition"),
        );
        let config_reloads = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "claimgate_config_reloads_total",
                    "Configuration reloads by result (ok, error).",
                ),
                &["result"],
            )
            .expect("a valid metric definition"),
        );
        let config_generation = register(
            &registry,
            IntGauge::new(
                "claimgate_config_generation",
                "Generation of the configuration in force (1 at start, +1 per reload).",
            )
            .expect("a valid metric definition"),
        );
        let config_last_success = register(
            &registry,
            prometheus::Gauge::new(
                "claimgate_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful reload.",
            )
            .expect("a valid metric definition"),
        );
        let config_pending_restart = register(
            &registry,
            IntGauge::new(
                "claimgate_config_pending_restart",
                "1 when the configuration in force asks for a change that only a restart applies (listeners, process settings).",
            )
            .expect("a valid metric definition"),
        );
        Metrics {
            registry,
            jwt_cache_entries,
            rejections,
            config_reloads,
            config_generation,
            config_last_success,
            config_pending_restart,
            authz_decisions,
            jwks_fetches,
            jwks_keys,
            jwks_last_success,
            jwks_age,
            jwks_refetches,
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
