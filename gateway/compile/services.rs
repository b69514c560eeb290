//! ServiceEntries and the clusters made of their endpoints.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::{Config, Resource, ServiceEntrySpec, VirtualServiceSpec};
use crate::upstream::{Cluster, DnsTargets, Policy};

use super::{ClusterKey, Compiler};

/// The largest sum of one cluster's endpoint weights (after dividing them
/// by their common divisor): the balancer's table holds one slot per unit.
pub(super) const MAX_WEIGHT_SUM: usize = 10_000;

/// A validated ServiceEntry: its resource and its endpoint addresses.
pub(super) struct Service<'c> {
    pub(super) entry: &'c Resource<ServiceEntrySpec>,
    /// One per endpoint; for `resolution: DNS` without endpoints, one per
    /// host of the entry.
    pub(super) addresses: Vec<Address>,
    /// `resolution: DNS`.
    pub(super) dns: bool,
}

/// An endpoint address: an IP, or a name resolved by DNS.
#[derive(Debug, Clone)]
pub(super) enum Address {
    Ip(IpAddr),
    Name(String),
}

/// Whether `name` can be a DNS host name (letters, digits, `-`, `.`).
pub(super) fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Compiler {
    pub(super) fn service_entries<'c>(
        &mut self,
        config: &'c Config,
    ) -> HashMap<String, Service<'c>> {
        let mut services: HashMap<String, Service<'c>> = HashMap::new();
        for se in &config.service_entries {
            let before = self.errors.len();
            let dns = match se.spec.resolution.as_deref() {
                Some("STATIC") => false,
                Some("DNS") => true,
                other => {
                    self.error(
                        &se.source,
                        "spec.resolution",
                        format!(
                            "{} is not supported: use STATIC with endpoint IP addresses, or DNS",
                            other.map_or("the default (NONE)".to_string(), |r| format!("`{r}`"))
                        ),
                    );
                    false
                }
            };
            if se.spec.endpoints.is_empty() && !dns {
                self.error(
                    &se.source,
                    "spec.endpoints",
                    "at least one endpoint is required (or resolution: DNS, to resolve the hosts)",
                );
            }
            if se.spec.ports.is_empty() {
                self.error(&se.source, "spec.ports", "at least one port is required");
            }
            let mut addresses = Vec::new();
            if dns && se.spec.endpoints.is_empty() {
                for (i, host) in se.spec.hosts.iter().enumerate() {
                    if is_host_name(host) {
                        addresses.push(Address::Name(host.to_ascii_lowercase()));
                    } else {
                        self.error(
                            &se.source,
                            format!("spec.hosts[{i}]"),
                            format!("`{host}` cannot be resolved by DNS: name the endpoints"),
                        );
                    }
                }
            }
            for (i, ep) in se.spec.endpoints.iter().enumerate() {
                match ep.address.parse::<IpAddr>() {
                    Ok(ip) => addresses.push(Address::Ip(ip)),
                    Err(_) if dns && is_host_name(&ep.address) => {
                        addresses.push(Address::Name(ep.address.to_ascii_lowercase()))
                    }
                    Err(_) => self.error(
                        &se.source,
                        format!("spec.endpoints[{i}].address"),
                        if dns {
                            format!("`{}` is neither an IP address nor a host name", ep.address)
                        } else {
                            format!("`{}` is not an IP address (STATIC resolution)", ep.address)
                        },
                    ),
                }
                for name in ep.ports.keys() {
                    if !se
                        .spec
                        .ports
                        .iter()
                        .any(|p| p.name.as_deref() == Some(name))
                    {
                        self.error(
                            &se.source,
                            format!("spec.endpoints[{i}].ports.{name}"),
                            "names no port of spec.ports",
                        );
                    }
                }
            }
            if self.errors.len() != before {
                continue;
            }
            for host in &se.spec.hosts {
                let host = host.to_ascii_lowercase();
                if let Some(other) = services.get(&host) {
                    let first = other.entry.source.to_string();
                    self.error(
                        &se.source,
                        "spec.hosts",
                        format!("host `{host}` is already defined at {first}"),
                    );
                    continue;
                }
                services.insert(
                    host,
                    Service {
                        entry: se,
                        addresses: addresses.clone(),
                        dns,
                    },
                );
            }
        }
        services
    }

    /// Resolves a destination to a cluster, creating it on first use.
    pub(super) fn cluster(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        dest: &crate::config::Destination,
        services: &HashMap<String, Service<'_>>,
    ) -> Option<usize> {
        let short = dest.host.to_ascii_lowercase();
        let fqdn = if short.contains('.') {
            short.clone()
        } else {
            format!("{short}.{}.svc.cluster.local", vs.metadata.namespace)
        };
        let Some((host, service)) = [&fqdn, &short]
            .into_iter()
            .find_map(|h| services.get(h).map(|s| (h, s)))
        else {
            self.error(
                &vs.source,
                format!("{path}.host"),
                format!("no ServiceEntry defines host `{fqdn}`"),
            );
            return None;
        };
        let ports = &service.entry.spec.ports;
        let port = match (&dest.port, ports.as_slice()) {
            (Some(p), _) => ports.iter().find(|sp| sp.number == p.number),
            (None, [only]) => Some(only),
            (None, _) => {
                self.error(
                    &vs.source,
                    format!("{path}.port"),
                    format!("`{host}` has several ports: name one"),
                );
                return None;
            }
        };
        let Some(port) = port else {
            let number = dest.port.as_ref().map_or(0, |p| p.number);
            self.error(
                &vs.source,
                format!("{path}.port.number"),
                format!("ServiceEntry {} has no port {number}", service.entry.key()),
            );
            return None;
        };
        let subset = match &dest.subset {
            None => None,
            Some(name) => match self.rules.get(host).and_then(|r| r.subsets.get(name)) {
                Some(subset) => Some((name.as_str(), subset.clone())),
                None => {
                    self.error(
                        &vs.source,
                        format!("{path}.subset"),
                        format!("no DestinationRule for `{host}` defines subset `{name}`"),
                    );
                    return None;
                }
            },
        };
        let key = (host.clone(), port.number, dest.subset.clone());
        if let Some(&index) = self.cluster_index.get(&key) {
            return Some(index);
        }
        // Each endpoint's port: its own for the port's name, else the
        // entry's targetPort, else the port number. Hosts resolved by DNS
        // (no endpoints) take the entry's.
        let endpoint_ports = service.entry.spec.endpoints.iter().map(|ep| {
            port.name
                .as_ref()
                .and_then(|n| ep.ports.get(n).copied())
                .or(port.target_port)
                .unwrap_or(port.number)
        });
        let default_port = port.target_port.unwrap_or(port.number);
        let ports = endpoint_ports.chain(std::iter::repeat(default_port));
        // Each address's entry (none for a host resolved by DNS): its
        // labels for the subset, its weight.
        let entries = service
            .entry
            .spec
            .endpoints
            .iter()
            .map(Some)
            .chain(std::iter::repeat(None));
        let mut endpoints: Vec<SocketAddr> = Vec::new();
        let mut names: Vec<(String, u16)> = Vec::new();
        let mut weights: Vec<usize> = Vec::new();
        for ((address, target), entry) in service.addresses.iter().zip(ports).zip(entries) {
            let labels = entry.map(|e| &e.labels);
            let selected = subset.as_ref().is_none_or(|(_, s)| {
                s.labels
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            });
            if !selected {
                continue;
            }
            match address {
                Address::Ip(ip) if !service.dns => endpoints.push(SocketAddr::new(*ip, target)),
                Address::Ip(ip) => names.push((ip.to_string(), target)),
                Address::Name(name) => names.push((name.clone(), target)),
            }
            // Istio: an omitted or 0 weight is 1.
            let weight = entry.and_then(|e| e.weight).filter(|w| *w > 0).unwrap_or(1);
            weights.push(weight as usize);
        }
        if let Some((name, s)) = &subset {
            if weights.is_empty() {
                self.error(
                    &vs.source,
                    format!("{path}.subset"),
                    format!(
                        "subset `{name}` selects no endpoint of ServiceEntry {}: none has the labels {:?}",
                        service.entry.key(),
                        s.labels
                    ),
                );
                return None;
            }
        }
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        for w in &mut weights {
            *w /= divisor;
        }
        let sum: usize = weights.iter().sum();
        if sum > MAX_WEIGHT_SUM {
            self.error(
                &service.entry.source,
                "spec.endpoints",
                format!("the endpoints' weights add up to {sum} (divided by their common divisor {divisor}); at most {MAX_WEIGHT_SUM}"),
            );
            return None;
        }
        let (name, policy) = match subset {
            Some((name, s)) => (format!("outbound|{}|{name}|{host}", port.number), s.policy),
            None => (
                format!("outbound|{}||{host}", port.number),
                self.rules
                    .get(host)
                    .map(|r| r.policy.clone())
                    .unwrap_or_default(),
            ),
        };
        let timeout = self.settings.upstream_connect_timeout;
        // A health check applies to the host's port, whatever the subset.
        let policy = Policy {
            health: self.health.get(&(host.clone(), port.number)).cloned(),
            ..policy
        };
        let reused = self
            .previous
            .get(&(
                name.clone(),
                endpoints.clone(),
                names.clone(),
                weights.clone(),
                policy.pool.connect_timeout.unwrap_or(timeout),
                policy.clone(),
            ))
            .cloned();
        let cluster = match reused {
            Some(cluster) => Ok(cluster),
            None if service.dns => {
                let dns = DnsTargets::weighted(names, weights.clone());
                let fixed = (Vec::new(), weights);
                Cluster::build(name, host.clone(), fixed, Some(dns), timeout, policy).map(Arc::new)
            }
            None => {
                let fixed = (endpoints, weights);
                Cluster::build(name, host.clone(), fixed, None, timeout, policy).map(Arc::new)
            }
        };
        match cluster {
            Ok(cluster) => {
                self.clusters.push(cluster);
                self.cluster_index.insert(key, self.clusters.len() - 1);
                Some(self.clusters.len() - 1)
            }
            Err(e) => {
                self.error(&service.entry.source, "spec.endpoints", e.to_string());
                None
            }
        }
    }
}

pub(super) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub(super) fn cluster_key(cluster: &Cluster) -> ClusterKey {
    (
        cluster.name.to_string(),
        cluster.endpoints.clone(),
        cluster
            .dns
            .as_ref()
            .map_or_else(Vec::new, |d| d.targets.clone()),
        cluster.weights.clone(),
        cluster.connect_timeout(),
        cluster.policy.clone(),
    )
}
