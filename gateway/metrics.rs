//! Metric families, in one registry served at the admin `/metrics`.
//! Label values come only from the configuration (policy names, …), never
//! from request data, so cardinality is bounded. Handles are resolved when
//! a config is compiled; requests only increment them.

use std::fmt::Display;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Label value for a request that matched no route (or no cluster).
pub const NONE: &str = "(none)";

/// Latency buckets, in seconds: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

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
    /// `claimgate_requests_total{route, cluster, code}`.
    pub requests: IntCounterVec,
    /// `claimgate_request_duration_seconds{route}`.
    pub request_duration: HistogramVec,
    /// `claimgate_upstream_response_seconds{cluster}`.
    pub upstream_response: HistogramVec,
    /// `claimgate_upstream_retries_total{cluster}`.
    pub upstream_retries: IntCounterVec,
    /// `claimgate_mirror_requests_total{cluster, result}`.
    pub mirror_requests: IntCounterVec,
    /// `claimgate_jwt_validations_total{issuer, result}`.
    pub jwt_validations: IntCounterVec,
    /// `claimgate_jwt_cache_{hits,misses,evictions}_total`.
    pub jwt_cache_hits: IntCounter,
    pub jwt_cache_misses: IntCounter,
    pub jwt_cache_evictions: IntCounter,
    /// `claimgate_upstream_endpoints{cluster}` and `…_healthy{cluster}`, set
    /// at scrape time.
    pub upstream_endpoints: IntGaugeVec,
    pub upstream_endpoints_healthy: IntGaugeVec,
    /// `claimgate_downstream_requests_active`.
    pub requests_active: IntGauge,
    /// `claimgate_downstream_connections` (open) and `…_total` (accepted).
    pub downstream_connections: IntGauge,
    pub downstream_connections_total: IntCounter,
    /// `claimgate_access_log_dropped_total`.
    pub access_log_dropped: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("a valid metric definition"),
    )
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition"),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric definition"),
    )
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
            labels,
        )
        .expect("a valid metric definition"),
    )
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
                "Unix time of the last successful load (start, then each reload).",
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
        let requests = counter_vec(
            &registry,
            "claimgate_requests_total",
            "Requests answered, by route (namespace/virtualservice/name; (none) when none matched), destination cluster ((none) when not routed) and response code.",
            &["route", "cluster", "code"],
        );
        let request_duration = histogram_vec(
            &registry,
            "claimgate_request_duration_seconds",
            "Time from the request header to the end of the answer, by route ((none) when none matched).",
            &["route"],
        );
        let upstream_response = histogram_vec(
            &registry,
            "claimgate_upstream_response_seconds",
            "Time from sending the request upstream to the upstream's response header, by cluster.",
            &["cluster"],
        );
        let upstream_retries = counter_vec(
            &registry,
            "claimgate_upstream_retries_total",
            "Attempts made again after a failed one (a retry policy), by cluster.",
            &["cluster"],
        );
        let mirror_requests = counter_vec(
            &registry,
            "claimgate_mirror_requests_total",
            "Request copies sent to a mirror, by cluster and result (ok: answered; error; timeout; dropped: too many in flight; too_large: a body over 64 KiB).",
            &["cluster", "result"],
        );
        let jwt_validations = counter_vec(
            &registry,
            "claimgate_jwt_validations_total",
            "Tokens validated, by issuer (as configured; unknown when the token names none of them) and result (valid: signature checked; cached: a cache hit; otherwise the rejection reason).",
            &["issuer", "result"],
        );
        let jwt_cache_hits = counter(
            &registry,
            "claimgate_jwt_cache_hits_total",
            "Token cache lookups that found the token (the entry's own checks may still send it to a full validation).",
        );
        let jwt_cache_misses = counter(
            &registry,
            "claimgate_jwt_cache_misses_total",
            "Token cache lookups that did not find the token (any token that is looked up: also invalid ones).",
        );
        let jwt_cache_evictions = counter(
            &registry,
            "claimgate_jwt_cache_evictions_total",
            "Tokens evicted from the token cache to make room.",
        );
        let upstream_endpoints = gauge_vec(
            &registry,
            "claimgate_upstream_endpoints",
            "Endpoints of each cluster in the configuration in force.",
            &["cluster"],
        );
        let upstream_endpoints_healthy = gauge_vec(
            &registry,
            "claimgate_upstream_endpoints_healthy",
            "Endpoints of each cluster that the load balancer may pick.",
            &["cluster"],
        );
        let requests_active = register(
            &registry,
            IntGauge::new(
                "claimgate_downstream_requests_active",
                "Requests being handled now.",
            )
            .expect("a valid metric definition"),
        );
        let downstream_connections = register(
            &registry,
            IntGauge::new(
                "claimgate_downstream_connections",
                "Client connections open now, on every listener.",
            )
            .expect("a valid metric definition"),
        );
        let downstream_connections_total = counter(
            &registry,
            "claimgate_downstream_connections_total",
            "Client connections accepted, on every listener.",
        );
        let access_log_dropped = counter(
            &registry,
            "claimgate_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        );
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_response,
            upstream_retries,
            mirror_requests,
            jwt_validations,
            jwt_cache_hits,
            jwt_cache_misses,
            jwt_cache_evictions,
            upstream_endpoints,
            upstream_endpoints_healthy,
            requests_active,
            downstream_connections,
            downstream_connections_total,
            access_log_dropped,
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

/// Counters of one family for a fixed set of leading label values, whose
/// last label takes a few values seen at run time (a status code, a
/// result): each counter is looked up in the family once, then found with a
/// read lock and a short scan.
pub struct CounterSet<K> {
    family: IntCounterVec,
    fixed: Vec<String>,
    seen: RwLock<Vec<(K, IntCounter)>>,
}

impl<K> std::fmt::Debug for CounterSet<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CounterSet({:?})", self.fixed)
    }
}

impl<K: Copy + Eq + Display> CounterSet<K> {
    pub fn new(family: &IntCounterVec, fixed: &[&str]) -> Arc<CounterSet<K>> {
        Arc::new(CounterSet {
            family: family.clone(),
            fixed: fixed.iter().map(|s| s.to_string()).collect(),
            seen: RwLock::default(),
        })
    }

    pub fn inc(&self, key: K) {
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, c)) = seen.iter().find(|(k, _)| *k == key) {
                c.inc();
                return;
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = seen.iter().find(|(k, _)| *k == key) {
            c.inc();
            return;
        }
        let last = key.to_string();
        let mut labels: Vec<&str> = self.fixed.iter().map(String::as_str).collect();
        labels.push(&last);
        let counter = self.family.with_label_values(&labels);
        counter.inc();
        seen.push((key, counter));
    }
}

/// What one route records per request, resolved when the route is compiled.
#[derive(Debug)]
pub struct RouteMetrics {
    pub codes: Arc<CounterSet<u16>>,
    pub duration: Histogram,
}

impl RouteMetrics {
    pub fn new(route: &str, cluster: &str) -> Arc<RouteMetrics> {
        let m = get();
        Arc::new(RouteMetrics {
            codes: CounterSet::new(&m.requests, &[route, cluster]),
            duration: m.request_duration.with_label_values(&[route]),
        })
    }

    /// For requests that matched no route.
    pub fn unrouted() -> &'static Arc<RouteMetrics> {
        static UNROUTED: OnceLock<Arc<RouteMetrics>> = OnceLock::new();
        UNROUTED.get_or_init(|| RouteMetrics::new(NONE, NONE))
    }

    pub fn record(&self, code: u16, seconds: f64) {
        self.codes.inc(code);
        self.duration.observe(seconds);
    }
}

/// Validation results of one issuer.
pub fn validations(issuer: &str) -> Arc<CounterSet<&'static str>> {
    CounterSet::new(&get().jwt_validations, &[issuer])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_set_counts_each_value_under_its_labels() {
        let family = IntCounterVec::new(Opts::new("t_total", "t"), &["a", "b"]).unwrap();
        let set = CounterSet::new(&family, &["x"]);
        set.inc(200u16);
        set.inc(200u16);
        set.inc(404u16);
        assert_eq!(family.with_label_values(&["x", "200"]).get(), 2);
        assert_eq!(family.with_label_values(&["x", "404"]).get(), 1);
        assert_eq!(family.with_label_values(&["x", "500"]).get(), 0);
    }
}
