//! `Settings.healthChecks`: each entry's fields are checked with the other
//! settings; its host is looked up among the ServiceEntries once they are
//! read, and the check lands in the `Policy` of the clusters of that host
//! (one per port, or the port named).

use std::collections::HashMap;

use http::uri::PathAndQuery;
use http::HeaderValue;

use super::{Compiler, Service};
use crate::config::{parse_duration, Config, ConfigError, SettingsSpec, Source};
use crate::upstream::{HealthCheck, Probe, DEFAULT_EXPECTED};

/// A `Settings.healthChecks[]` entry whose fields are valid.
#[derive(Debug, Clone)]
pub struct HealthCheckEntry {
    /// Its index in `spec.healthChecks`.
    pub index: usize,
    /// The host as written (lower case) and, for a short name, qualified
    /// with the entry's namespace: the names a DestinationRule would cover.
    pub names: Vec<String>,
    pub port: Option<u16>,
    pub check: HealthCheck,
}

/// Checks every entry's fields; errors go to `errors`, located at
/// `spec.healthChecks[i]…`.
pub(super) fn entries(
    spec: &SettingsSpec,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Vec<HealthCheckEntry> {
    let mut entries = Vec::new();
    for (index, hc) in spec.health_checks.iter().enumerate() {
        let before = errors.len();
        let at = format!("spec.healthChecks[{index}]");
        let mut error = |field: &str, message: String| {
            errors.push(ConfigError::new(source, format!("{at}{field}"), message))
        };
        let mut duration = |field: &str, text: &str| match parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                error(field, "must be more than zero".into());
                std::time::Duration::ZERO
            }
            Err(e) => {
                error(field, e);
                std::time::Duration::ZERO
            }
        };
        let interval = duration(".interval", &hc.interval);
        let timeout = duration(".timeout", &hc.timeout);
        let host = hc.host.to_ascii_lowercase();
        if host.is_empty() || host.contains('*') {
            error(".host", format!("`{}` is not a ServiceEntry host", hc.host));
        }
        if hc.port == Some(0) {
            error(".port", "0 is not a port".into());
        }
        for (field, value) in [
            (".unhealthyThreshold", hc.unhealthy_threshold),
            (".healthyThreshold", hc.healthy_threshold),
        ] {
            if value == 0 {
                error(field, "must be at least 1".into());
            }
        }
        if hc.http.is_some() && hc.tcp.is_some() {
            error("", "http and tcp exclude each other: name one".into());
        }
        let probe = match &hc.http {
            // Neither: a TCP connect, the check that assumes least.
            None => Probe::Tcp,
            Some(http) => {
                if !http.path.starts_with('/') || http.path.parse::<PathAndQuery>().is_err() {
                    error(
                        ".http.path",
                        format!("`{}` is not a path such as /healthz", http.path),
                    );
                }
                if let Some(h) = &http.host {
                    if h.is_empty() || HeaderValue::from_str(h).is_err() {
                        error(".http.host", format!("`{h}` is not a Host header value"));
                    }
                }
                let mut expected = Vec::new();
                for (i, range) in http.expected_statuses.iter().enumerate() {
                    // Envoy's bounds: statuses in [100, 600), start < end.
                    if range.start < 100 || range.end > 600 || range.start >= range.end {
                        error(
                            &format!(".http.expectedStatuses[{i}]"),
                            format!(
                                "[{}, {}) is not a range of statuses: start from 100, end by 600, start below end",
                                range.start, range.end
                            ),
                        );
                    } else {
                        // In range: both fit in u16.
                        expected.push((range.start as u16, range.end as u16));
                    }
                }
                if expected.is_empty() {
                    expected.push(DEFAULT_EXPECTED);
                }
                Probe::Http {
                    path: http.path.clone(),
                    host: http.host.clone(),
                    expected,
                }
            }
        };
        if errors.len() != before {
            continue;
        }
        let mut names = vec![host.clone()];
        if !host.contains('.') {
            names.push(format!("{host}.{}.svc.cluster.local", hc.namespace));
        }
        entries.push(HealthCheckEntry {
            index,
            names,
            port: hc.port,
            check: HealthCheck {
                interval,
                timeout,
                unhealthy_threshold: hc.unhealthy_threshold,
                healthy_threshold: hc.healthy_threshold,
                probe,
            },
        });
    }
    entries
}

impl Compiler {
    /// Finds the ServiceEntry host (and port) of each health check; one
    /// cluster is checked by one entry at most.
    pub(super) fn health_checks(
        &mut self,
        config: &Config,
        services: &HashMap<String, Service<'_>>,
    ) {
        let Some(source) = config.settings.as_ref().map(|s| s.source.clone()) else {
            return;
        };
        let mut checked: HashMap<(String, u16), usize> = HashMap::new();
        for entry in self.settings.health_checks.clone() {
            let at = format!("spec.healthChecks[{}]", entry.index);
            let hosts: Vec<&String> = entry
                .names
                .iter()
                .filter(|n| services.contains_key(*n))
                .collect();
            if hosts.is_empty() {
                let name = entry.names.last().map_or("", String::as_str);
                self.error(
                    &source,
                    format!("{at}.host"),
                    format!("no ServiceEntry defines host `{name}`"),
                );
            }
            for host in hosts {
                let Some(service) = services.get(host) else {
                    continue;
                };
                let numbers = service.entry.spec.ports.iter().map(|p| p.number);
                let ports: Vec<u16> = match entry.port {
                    None => numbers.collect(),
                    Some(port) if numbers.clone().any(|n| n == port) => vec![port],
                    Some(port) => {
                        self.error(
                            &source,
                            format!("{at}.port"),
                            format!("ServiceEntry {} has no port {port}", service.entry.key()),
                        );
                        continue;
                    }
                };
                for port in ports {
                    let key = (host.clone(), port);
                    if let Some(first) = checked.insert(key, entry.index) {
                        self.error(
                            &source,
                            at.clone(),
                            format!(
                                "port {port} of `{host}` is already checked by spec.healthChecks[{first}]"
                            ),
                        );
                        continue;
                    }
                    self.health
                        .insert((host.clone(), port), entry.check.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::compile::{compile, Shared};
    use crate::snapshot::Snapshot;

    /// A ServiceEntry `pool` with ports 80 and 81, both routed to, and
    /// `check` as the health check of `pool`.
    fn config(check: &str) -> crate::config::Config {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: ns}}\n\
             spec: {{servers: [{{port: {{number: 80}}, hosts: ['*']}}]}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: pool, namespace: ns}}\n\
             spec: {{hosts: [pool.ns.svc.cluster.local], ports: [{{number: 80, name: a}}, {{number: 81, name: b}}], resolution: STATIC, endpoints: [{{address: 10.0.0.1}}]}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: ns}}\n\
             spec: {{hosts: ['*'], gateways: [gw], http: [{{match: [{{uri: {{prefix: /a}}}}], route: [{{destination: {{host: pool, port: {{number: 80}}}}}}]}}, \
             {{route: [{{destination: {{host: pool, port: {{number: 81}}}}}}]}}]}}\n---\n\
             apiVersion: claimgate/v1\nkind: Settings\nmetadata: {{name: s}}\n\
             spec: {{healthChecks: [{{host: pool, namespace: ns, {check}}}]}}\n"
        );
        crate::config::parse_str(std::path::Path::new("t.yaml"), &text).unwrap()
    }

    fn port(s: &Snapshot, port: u16) -> Arc<crate::upstream::Cluster> {
        s.clusters
            .iter()
            .find(|c| c.name.starts_with(&format!("outbound|{port}|")))
            .unwrap()
            .clone()
    }

    #[test]
    fn a_check_names_one_port_or_every_port_and_a_recompile_keeps_an_unchanged_one() {
        let shared = Shared::default();
        let first = compile(&config("port: 81, interval: 2s"), &shared).unwrap();
        assert!(port(&first, 80).policy.health.is_none());
        let check = port(&first, 81).policy.health.clone().unwrap();
        assert_eq!(check.interval, std::time::Duration::from_secs(2));
        assert_eq!(check.unhealthy_threshold, 2, "the default");

        let same = compile(&config("port: 81, interval: 2s"), &shared).unwrap();
        assert!(Arc::ptr_eq(&port(&first, 81), &port(&same, 81)));

        let every = compile(&config("interval: 3s"), &shared).unwrap();
        assert!(!Arc::ptr_eq(&port(&first, 81), &port(&every, 81)));
        assert!(port(&every, 80).policy.health.is_some());
    }
}
