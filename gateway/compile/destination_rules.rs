//! DestinationRules: traffic policies by host and subset.

use std::collections::HashMap;
use std::time::Duration;

use http::HeaderName;

use crate::config::{parse_duration, Config, Source};
use crate::upstream::{Balance, HashOn, Outlier, Policy, Pool};

use super::Compiler;

/// A DestinationRule, compiled: its traffic policy and its subsets.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub(super) policy: Policy,
    pub(super) subsets: HashMap<String, SubsetRule>,
}

/// A subset: the endpoint labels it selects (all must match) and its
/// policy (the rule's, with the fields the subset sets replaced).
#[derive(Debug, Clone)]
pub(super) struct SubsetRule {
    pub(super) labels: std::collections::BTreeMap<String, String>,
    pub(super) policy: Policy,
}

impl Compiler {
    /// Each DestinationRule's traffic policy, by the host it names (as
    /// given, and its fully qualified form for a short name).
    pub(super) fn destination_rules(&mut self, config: &Config) {
        for dr in &config.destination_rules {
            let before = self.errors.len();
            let host = dr.spec.host.to_ascii_lowercase();
            if dr.spec.workload_selector.is_some() {
                self.error(
                    &dr.source,
                    "spec.workloadSelector",
                    "applies to sidecars, not to this gateway",
                );
            }
            let top = dr.spec.traffic_policy.as_ref();
            let policy = self.traffic_policy(&dr.source, "spec.trafficPolicy", top);
            if self.errors.len() != before {
                continue;
            }
            let mut subsets = HashMap::new();
            for (i, subset) in dr.spec.subsets.iter().enumerate() {
                let at = format!("spec.subsets[{i}]");
                if subset.name.is_empty() || subset.name.contains('|') {
                    self.error(
                        &dr.source,
                        format!("{at}.name"),
                        "a subset needs a name, without `|`",
                    );
                    continue;
                }
                // The subset's own fields are checked where they are
                // written; the merge of two valid policies is valid.
                let own = subset.traffic_policy.as_ref();
                let checked = self.errors.len();
                self.traffic_policy(&dr.source, &format!("{at}.trafficPolicy"), own);
                if self.errors.len() != checked {
                    continue;
                }
                let merged = match (top, own) {
                    (Some(top), Some(own)) => Some(top.merged_with(own)),
                    (top, own) => own.or(top).cloned(),
                };
                let policy = self.traffic_policy(
                    &dr.source,
                    &format!("{at}.trafficPolicy"),
                    merged.as_ref(),
                );
                let rule = SubsetRule {
                    labels: subset.labels.clone(),
                    policy,
                };
                if subsets.insert(subset.name.clone(), rule).is_some() {
                    self.error(
                        &dr.source,
                        format!("{at}.name"),
                        format!("subset `{}` is defined twice", subset.name),
                    );
                }
            }
            if self.errors.len() != before {
                continue;
            }
            let rule = Rule { policy, subsets };
            let mut names = vec![host.clone()];
            if !host.contains('.') {
                names.push(format!(
                    "{host}.{}.svc.cluster.local",
                    dr.metadata.namespace
                ));
            }
            for name in names {
                if self.rules.insert(name.clone(), rule.clone()).is_some() {
                    self.error(
                        &dr.source,
                        "spec.host",
                        format!("another DestinationRule already applies to `{name}`"),
                    );
                }
            }
        }
    }

    /// A `trafficPolicy` written at `at`.
    pub(super) fn traffic_policy(
        &mut self,
        source: &Source,
        at: &str,
        tp: Option<&crate::config::TrafficPolicy>,
    ) -> Policy {
        let mut policy = Policy::default();
        let Some(tp) = tp else {
            return policy;
        };
        if let Some(pool) = &tp.connection_pool {
            policy.pool = self.connection_pool(source, &format!("{at}.connectionPool"), pool);
        }
        for (field, set) in [("portLevelSettings", tp.port_level_settings.is_some())] {
            if set {
                self.error(source, format!("{at}.{field}"), "not supported yet");
            }
        }
        if let Some(lb) = &tp.load_balancer {
            let at = format!("{at}.loadBalancer");
            if lb.locality_lb_setting.is_some() || lb.warmup_duration_secs.is_some() {
                self.error(
                    source,
                    &at,
                    "localityLbSetting and warmupDurationSecs are not supported",
                );
            }
            match (&lb.simple, &lb.consistent_hash) {
                (Some(_), Some(_)) => {
                    self.error(source, &at, "simple and consistentHash exclude each other")
                }
                (Some(simple), None) => match simple.as_str() {
                    "ROUND_ROBIN" | "UNSPECIFIED" => policy.balance = Balance::RoundRobin,
                    "RANDOM" => policy.balance = Balance::Random,
                    "LEAST_REQUEST" | "LEAST_CONN" => policy.balance = Balance::LeastRequest,
                    other => self.error(
                        source,
                        format!("{at}.simple"),
                        format!("`{other}` is not supported (ROUND_ROBIN, RANDOM, LEAST_REQUEST)"),
                    ),
                },
                (None, Some(hash)) => {
                    let at = format!("{at}.consistentHash");
                    let mut on = Vec::new();
                    if let Some(name) = &hash.http_header_name {
                        match HeaderName::from_bytes(name.as_bytes()) {
                            Ok(h) => on.push(HashOn::Header(h)),
                            Err(_) => self.error(
                                source,
                                format!("{at}.httpHeaderName"),
                                "not a header name",
                            ),
                        }
                    }
                    if let Some(cookie) = &hash.http_cookie {
                        if cookie.ttl.is_some() {
                            self.error(source, format!("{at}.httpCookie.ttl"), "the gateway does not set cookies: name an existing cookie without ttl");
                        }
                        on.push(HashOn::Cookie(cookie.name.clone()));
                    }
                    if hash.use_source_ip == Some(true) {
                        on.push(HashOn::SourceIp);
                    }
                    if let Some(param) = &hash.http_query_parameter_name {
                        on.push(HashOn::QueryParameter(param.clone()));
                    }
                    match on.len() {
                        1 => policy.balance = Balance::Hash(on.remove(0)),
                        0 => self.error(source, &at, "name what to hash: httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName"),
                        _ => self.error(source, &at, "name only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName"),
                    }
                }
                (None, None) => {}
            }
        }
        if let Some(od) = &tp.outlier_detection {
            let at = format!("{at}.outlierDetection");
            let mut outlier = Outlier::default();
            if let Some(n) = od.consecutive_5xx_errors {
                outlier.consecutive_5xx = n;
            }
            if let Some(n) = od.consecutive_gateway_errors {
                outlier.consecutive_gateway = n;
            }
            if let Some(text) = &od.base_ejection_time {
                match parse_duration(text) {
                    Ok(d) if !d.is_zero() => outlier.base_ejection = d,
                    Ok(_) => self.error(
                        source,
                        format!("{at}.baseEjectionTime"),
                        "must be more than zero",
                    ),
                    Err(e) => self.error(source, format!("{at}.baseEjectionTime"), e),
                }
            }
            if let Some(text) = &od.interval {
                // Ejections are checked on every pick, not swept: the
                // interval only needs to be valid.
                if let Err(e) = parse_duration(text) {
                    self.error(source, format!("{at}.interval"), e);
                }
            }
            if let Some(p) = od.max_ejection_percent {
                if p > 100 {
                    self.error(source, format!("{at}.maxEjectionPercent"), "at most 100");
                }
                outlier.max_ejection_percent = p.min(100);
            }
            if od.min_health_percent.is_some_and(|p| p > 0) {
                self.error(
                    source,
                    format!("{at}.minHealthPercent"),
                    "not supported (Envoy's panic mode): leave it 0",
                );
            }
            policy.outlier = Some(outlier);
        }
        if let Some(tls) = &tp.tls {
            match crate::upstream::tls::client_tls(tls, self.settings.credentials_dir.as_deref()) {
                Ok(tls) => {
                    // A CA or client certificate renewed in place reloads.
                    for file in tls.iter().flat_map(|t| t.files()) {
                        self.tls.watch(file);
                    }
                    policy.tls = tls;
                }
                Err(errors) => {
                    for (field, message) in errors {
                        self.error(source, format!("{at}.tls.{field}"), message);
                    }
                }
            }
        }
        policy
    }

    /// `connectionPool` at `at`: the circuit breakers and connection
    /// settings Pingora can honour; the rest is refused with the reason.
    pub(super) fn connection_pool(
        &mut self,
        source: &Source,
        at: &str,
        cp: &crate::config::ConnectionPoolSettings,
    ) -> Pool {
        let mut pool = Pool::default();
        // Istio's limits are int32, at least 1 when set; 0 means "the
        // default", which is no limit.
        let limit = |c: &mut Compiler, field: String, value: Option<i64>| -> Option<usize> {
            match value? {
                0 => None,
                n if (1..=i64::from(i32::MAX)).contains(&n) => usize::try_from(n).ok(),
                n => {
                    c.error(
                        source,
                        field,
                        format!("{n} is not a limit (1 to {})", i32::MAX),
                    );
                    None
                }
            }
        };
        let duration =
            |c: &mut Compiler, field: String, text: Option<&String>| match parse_duration(text?) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    c.error(source, field, "must be more than zero");
                    None
                }
                Err(e) => {
                    c.error(source, field, e);
                    None
                }
            };
        if let Some(tcp) = &cp.tcp {
            let at = format!("{at}.tcp");
            pool.max_connections = limit(self, format!("{at}.maxConnections"), tcp.max_connections);
            pool.connect_timeout = duration(
                self,
                format!("{at}.connectTimeout"),
                tcp.connect_timeout.as_ref(),
            );
            if let Some(ka) = &tcp.tcp_keepalive {
                let at = format!("{at}.tcpKeepalive");
                // Istio: unset fields take the system's defaults (Linux:
                // 7200 s, 75 s, 9 probes).
                let time = duration(self, format!("{at}.time"), ka.time.as_ref());
                let interval = duration(self, format!("{at}.interval"), ka.interval.as_ref());
                // What Linux's TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT take;
                // anything else would fail every connect.
                for (field, d) in [("time", time), ("interval", interval)] {
                    if d.is_some_and(|d| {
                        d.subsec_nanos() != 0 || !(1..=32767).contains(&d.as_secs())
                    }) {
                        self.error(
                            source,
                            format!("{at}.{field}"),
                            "whole seconds from 1s to 32767s",
                        );
                    }
                }
                if ka.probes.is_some_and(|p| !(1..=127).contains(&p)) {
                    self.error(source, format!("{at}.probes"), "from 1 to 127");
                }
                pool.keepalive = Some((
                    time.unwrap_or(Duration::from_secs(7200)),
                    interval.unwrap_or(Duration::from_secs(75)),
                    ka.probes.map_or(9, |p| p as usize),
                ));
            }
            if tcp.max_connection_duration.is_some() {
                self.error(
                    source,
                    format!("{at}.maxConnectionDuration"),
                    "not supported: Pingora's upstream pool has no maximum connection age",
                );
            }
            if tcp.idle_timeout.is_some() {
                self.error(
                    source,
                    format!("{at}.idleTimeout"),
                    "applies to TCP proxying: set http.idleTimeout for HTTP connections",
                );
            }
        }
        if let Some(http) = &cp.http {
            let at = format!("{at}.http");
            pool.max_pending = limit(
                self,
                format!("{at}.http1MaxPendingRequests"),
                http.http1_max_pending_requests,
            );
            pool.max_requests = limit(
                self,
                format!("{at}.http2MaxRequests"),
                http.http2_max_requests,
            );
            pool.max_retries = limit(self, format!("{at}.maxRetries"), http.max_retries);
            pool.idle_timeout = duration(
                self,
                format!("{at}.idleTimeout"),
                http.idle_timeout.as_ref(),
            );
            if http.max_requests_per_connection.is_some_and(|n| n != 0) {
                self.error(
                    source,
                    format!("{at}.maxRequestsPerConnection"),
                    "not supported: Pingora reuses an upstream connection while it stays open (0, unlimited, is accepted)",
                );
            }
            match http.h2_upgrade_policy.as_deref() {
                None | Some("DEFAULT") | Some("DO_NOT_UPGRADE") => {}
                Some(other) => self.error(
                    source,
                    format!("{at}.h2UpgradePolicy"),
                    format!("`{other}` is not supported: upstream requests are HTTP/1.1 (DEFAULT, DO_NOT_UPGRADE)"),
                ),
            }
            if http.use_client_protocol == Some(true) {
                self.error(
                    source,
                    format!("{at}.useClientProtocol"),
                    "not supported: upstream requests are HTTP/1.1",
                );
            }
            if http.max_concurrent_streams.is_some() {
                self.error(
                    source,
                    format!("{at}.maxConcurrentStreams"),
                    "not supported: upstream requests are HTTP/1.1",
                );
            }
        }
        pool
    }
}
