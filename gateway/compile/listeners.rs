//! Gateways: their servers become listeners, their hosts bound to
//! VirtualService hosts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::{Config, GatewaySpec, Resource};
use crate::routing::Route;

use super::Compiler;

/// A Gateway server's host: `[namespace/]host`.
pub(super) struct ServerHost {
    /// `None`: virtual services of any namespace may bind.
    pub(super) namespace: Option<String>,
    pub(super) host: String,
}

/// The listeners of one Gateway: (listening address, hosts) per server.
pub(super) type GatewayServers = Vec<(String, Vec<ServerHost>)>;

impl Compiler {
    pub(super) fn gateways(&mut self, config: &Config) -> HashMap<String, GatewayServers> {
        let mut gateways = HashMap::new();
        for gw in &config.gateways {
            if let Some(servers) = self.gateway(gw) {
                if gateways.insert(gw.key(), servers).is_some() {
                    self.error(
                        &gw.source,
                        "metadata.name",
                        format!("Gateway {} is defined twice", gw.key()),
                    );
                }
            }
        }
        gateways
    }

    pub(super) fn gateway(&mut self, gw: &Resource<GatewaySpec>) -> Option<GatewayServers> {
        let mut servers = Vec::new();
        let before = self.errors.len();
        if gw.spec.servers.is_empty() {
            self.error(
                &gw.source,
                "spec.servers",
                "at least one server is required",
            );
        }
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let path = format!("spec.servers[{i}]");
            let at = format!("{}: {path}", gw.source);
            let tls = crate::tls::server_tls(server, self.settings.credentials_dir.as_deref(), &at)
                .map_err(|errors| {
                    for (field, message) in errors {
                        self.error(&gw.source, format!("{path}.{field}"), message);
                    }
                })
                .ok();
            let ip: IpAddr = match server.bind.as_deref().unwrap_or("0.0.0.0").parse() {
                Ok(ip) => ip,
                Err(_) => {
                    self.error(&gw.source, format!("{path}.bind"), "not an IP address");
                    continue;
                }
            };
            if server.hosts.is_empty() {
                self.error(
                    &gw.source,
                    format!("{path}.hosts"),
                    "at least one host is required",
                );
            }
            let hosts: Vec<ServerHost> = server
                .hosts
                .iter()
                .map(|h| match h.split_once('/') {
                    Some(("*", host)) => ServerHost {
                        namespace: None,
                        host: host.to_ascii_lowercase(),
                    },
                    Some((".", host)) => ServerHost {
                        namespace: Some(gw.metadata.namespace.clone()),
                        host: host.to_ascii_lowercase(),
                    },
                    Some((ns, host)) => ServerHost {
                        namespace: Some(ns.to_string()),
                        host: host.to_ascii_lowercase(),
                    },
                    None => ServerHost {
                        namespace: None,
                        host: h.to_ascii_lowercase(),
                    },
                })
                .collect();
            let addr = SocketAddr::new(ip, server.port.number).to_string();
            self.listeners.entry(addr.clone()).or_default();
            if let Some(tls) = tls {
                let names: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
                let errors = self.tls.add(&addr, &names, tls, &gw.source, &path);
                self.errors.extend(errors);
            }
            servers.push((addr, hosts));
        }
        (self.errors.len() == before).then_some(servers)
    }
}

/// A VirtualService's routes as a listener on `port` has them (Istio's
/// `BuildHTTPRoutesForVirtualService`): without those whose `match.port`
/// is another port, and without any after the first catch-all route,
/// which nothing could reach.
pub(super) fn on_listener(routes: &[Arc<Route>], port: u16) -> Vec<Arc<Route>> {
    let mut out = Vec::with_capacity(routes.len());
    for route in routes.iter().filter(|r| r.on_port(port)) {
        out.push(route.clone());
        if route.catch_all(port) {
            break;
        }
    }
    out
}

/// The hosts both a Gateway server host and a VirtualService host admit,
/// as one pattern (the narrower of the two), or `None`.
pub(super) fn intersect(server: &str, vs: &str) -> Option<String> {
    if covers(server, vs) {
        Some(vs.to_string())
    } else if covers(vs, server) {
        Some(server.to_string())
    } else {
        None
    }
}

/// Whether pattern `outer` admits every host `inner` admits.
pub(super) fn covers(outer: &str, inner: &str) -> bool {
    if outer == "*" || outer == inner {
        return true;
    }
    match outer.strip_prefix('*') {
        Some(suffix) => inner.ends_with(suffix) && inner.len() > suffix.len(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_intersection_keeps_the_narrower_pattern() {
        assert_eq!(
            intersect("*", "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("a.example.com", "*").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "*.b.example.com").as_deref(),
            Some("*.b.example.com")
        );
        assert_eq!(intersect("a.example.com", "b.example.com"), None);
        assert_eq!(intersect("*.example.com", "example.com"), None);
    }
}
