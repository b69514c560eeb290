//! Config -> Snapshot: listeners and their route tables, clusters, JWT
//! providers. Everything a request would otherwise work out per request is
//! decided here: regexes compiled, claim paths split, hosts indexed,
//! destinations resolved to endpoints, key sets parsed.
//!
//! Like loading, compiling reports every error it finds, each located at the
//! document and field that caused it.

mod authn;
mod authz;
mod destination_rules;
mod headers;
mod health;
mod listeners;
mod matchers;
mod routes;
mod services;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::authz::Authorizer;
use crate::config::{parse_duration, Config, ConfigError, ConfigErrors, Source};
use crate::jwks::{JwksConfig, JwksRegistry};
use crate::jwt::TokenCache;
use crate::proxy::listener_port;
use crate::request::PathNormalization;
use crate::routing::HostTable;
use crate::snapshot::Snapshot;
use crate::upstream::{Cluster, HealthCheck, Policy};

use destination_rules::Rule;
use services::{cluster_key, Service};

pub use health::HealthCheckEntry;

#[cfg(test)]
pub(crate) use authz::compile as authorization_policy;
#[cfg(test)]
pub(crate) use matchers::string_matcher;

/// Process settings, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub admin: SocketAddr,
    pub threads: usize,
    pub clock_skew: u64,
    pub jwks: JwksConfig,
    pub upstream_connect_timeout: Duration,
    pub jwt_cache_size: usize,
    pub max_token_bytes: usize,
    /// Normalization, forwarding headers and request-head limits.
    pub edge: crate::request::Edge,
    /// Grace period for requests in flight at shutdown, whole seconds.
    pub drain_seconds: u64,
    pub upgrade_socket: PathBuf,
    pub access_log: crate::access_log::Target,
    pub dns_refresh: Duration,
    /// `credentialsDir`: where `tls.credentialName` folders are.
    pub credentials_dir: Option<PathBuf>,
    /// `healthChecks`, their hosts not looked up yet (that needs the
    /// ServiceEntries: `compile` does it).
    pub health_checks: Vec<HealthCheckEntry>,
}

/// What outlives one compiled snapshot: remote key sets (so a recompile
/// does not fetch again), the verified-token cache, and the clusters (so a
/// cluster whose endpoints did not change keeps its load balancer state).
#[derive(Debug, Default)]
pub struct Shared {
    pub jwks: Arc<JwksRegistry>,
    pub tokens: Arc<TokenCache>,
    clusters: std::sync::Mutex<HashMap<ClusterKey, Arc<Cluster>>>,
}

/// A cluster is the same cluster while its name, endpoints (addresses, or
/// names resolved by DNS), their weights, connect timeout and policy are.
type ClusterKey = (
    String,
    Vec<SocketAddr>,
    Vec<(String, u16)>,
    Vec<usize>,
    Duration,
    Policy,
);

impl Shared {
    pub fn new(settings: &Settings) -> Result<Shared, String> {
        Ok(Shared {
            jwks: Arc::new(JwksRegistry::new(settings.jwks.clone())?),
            tokens: Arc::new(TokenCache::new(settings.jwt_cache_size)),
            clusters: Default::default(),
        })
    }
}

pub fn settings(config: &Config) -> Result<Settings, ConfigErrors> {
    let spec = config.settings();
    let fallback = Source {
        file: "<defaults>".into(),
        document: 0,
    };
    let source = config.settings.as_ref().map_or(&fallback, |s| &s.source);
    let mut errors = Vec::new();
    let mut duration = |field: &str, text: &str| match parse_duration(text) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            errors.push(ConfigError::new(
                source,
                format!("spec.{field}"),
                "must be more than zero",
            ));
            Duration::from_secs(1)
        }
        Err(e) => {
            errors.push(ConfigError::new(source, format!("spec.{field}"), e));
            Duration::from_secs(1)
        }
    };
    let jwks_refresh = duration("jwksRefreshInterval", &spec.jwks_refresh_interval);
    let refetch_cooldown = duration("jwksRefetchCooldown", &spec.jwks_refetch_cooldown);
    let upstream_connect_timeout =
        duration("upstreamConnectTimeout", &spec.upstream_connect_timeout);
    let drain = duration("drainPeriod", &spec.drain_period);
    let dns_refresh = duration("dnsRefreshRate", &spec.dns_refresh_rate);
    let headers_timeout = duration("requestHeadersTimeout", &spec.request_headers_timeout);
    let stream_idle_timeout = duration("streamIdleTimeout", &spec.stream_idle_timeout);
    let path_normalization =
        PathNormalization::parse(&spec.path_normalization).unwrap_or_else(|| {
            errors.push(ConfigError::new(
                source,
                "spec.pathNormalization",
                format!(
                    "`{}` is not one of {}",
                    spec.path_normalization,
                    PathNormalization::NAMES.join(", ")
                ),
            ));
            PathNormalization::Base
        });
    for (field, value) in [
        ("maxRequestHeadersKb", spec.max_request_headers_kb),
        ("maxHeadersCount", spec.max_headers_count),
    ] {
        if value == 0 {
            errors.push(ConfigError::new(
                source,
                format!("spec.{field}"),
                "must be at least 1",
            ));
        }
    }
    // Pingora's parser reads at most 1 MiB of head and 256 headers.
    if spec.max_request_headers_kb > 1023 {
        errors.push(ConfigError::new(
            source,
            "spec.maxRequestHeadersKb",
            "must be at most 1023 (the HTTP/1 parser's own limit)",
        ));
    }
    if spec.max_headers_count > 256 {
        errors.push(ConfigError::new(
            source,
            "spec.maxHeadersCount",
            "must be at most 256 (the HTTP/1 parser's own limit)",
        ));
    }
    let admin = spec.admin.parse().unwrap_or_else(|_| {
        errors.push(ConfigError::new(
            source,
            "spec.admin",
            format!("`{}` is not an address such as 127.0.0.1:15000", spec.admin),
        ));
        SocketAddr::from(([127, 0, 0, 1], 15000))
    });
    if spec.max_token_bytes == 0 {
        errors.push(ConfigError::new(
            source,
            "spec.maxTokenBytes",
            "must be at least 1",
        ));
    }
    if spec.threads == 0 {
        errors.push(ConfigError::new(
            source,
            "spec.threads",
            "must be at least 1",
        ));
    }
    let health_checks = health::entries(&spec, source, &mut errors);
    if errors.is_empty() {
        Ok(Settings {
            admin,
            threads: spec.threads,
            clock_skew: spec.clock_skew_seconds,
            jwks: JwksConfig {
                refresh: jwks_refresh,
                refetch_cooldown,
                cache_dir: spec.jwks_cache_dir.as_ref().map(Into::into),
                ca_file: spec.jwks_ca_file.as_ref().map(Into::into),
            },
            upstream_connect_timeout,
            jwt_cache_size: spec.jwt_cache_size,
            max_token_bytes: spec.max_token_bytes,
            edge: crate::request::Edge {
                path_normalization,
                trusted_proxies: spec.trusted_proxies,
                preserve_request_id: spec.preserve_external_request_id,
                max_head_bytes: spec.max_request_headers_kb * 1024,
                max_headers: spec.max_headers_count,
                headers_timeout,
                stream_idle_timeout,
            },
            drain_seconds: drain.as_secs() + u64::from(drain.subsec_nanos() > 0),
            upgrade_socket: PathBuf::from(&spec.upgrade_socket),
            access_log: crate::access_log::Target::parse(&spec.access_log),
            dns_refresh,
            credentials_dir: spec.credentials_dir.as_ref().map(Into::into),
            health_checks,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Compiles `config`. Remote key sets are taken from (or added to)
/// `shared.jwks`; verified tokens are cached in `shared.tokens`.
pub fn compile(config: &Config, shared: &Shared) -> Result<Snapshot, ConfigErrors> {
    let settings = settings(config)?;
    let previous = shared
        .clusters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut c = Compiler {
        settings,
        errors: Vec::new(),
        listeners: HashMap::new(),
        clusters: Vec::new(),
        cluster_index: HashMap::new(),
        previous,
        jwks_uris: HashSet::new(),
        rules: HashMap::new(),
        tls: Default::default(),
        health: HashMap::new(),
    };
    let gateways = c.gateways(config);
    let services = c.service_entries(config);
    c.destination_rules(config);
    c.health_checks(config, &services);
    for vs in &config.virtual_services {
        c.virtual_service(vs, &gateways, &services);
    }
    // Several VirtualServices on one host: their routes were appended in
    // load order; catch-all routes now go last (Istio's merge).
    for (addr, table) in &mut c.listeners {
        table.sort_catch_alls(listener_port(addr));
    }
    let authn = c.authenticator(config, shared);
    let mut policies = Vec::new();
    for policy in &config.authorization_policies {
        match authz::compile(policy) {
            Ok(p) => policies.push(p),
            Err(e) => c.errors.extend(e),
        }
    }
    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    let in_use = c
        .clusters
        .iter()
        .map(|cl| (cluster_key(cl), cl.clone()))
        .collect();
    *shared.clusters.lock().unwrap_or_else(|e| e.into_inner()) = in_use;
    // A jwksUri no rule names any more stops being fetched.
    shared.jwks.retain(&c.jwks_uris);
    Ok(Snapshot {
        listeners: c.listeners,
        clusters: c.clusters,
        authn,
        authz: Authorizer::new(policies),
        edge: c.settings.edge.clone(),
        tls: c.tls.finish(),
        provenance: crate::snapshot::Provenance {
            generation: 0,
            loaded_at: crate::access_log::rfc3339(std::time::SystemTime::now()),
            files: config
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            sha256: config.sha256.clone(),
            pending_restart: Vec::new(),
            documents: config
                .documents
                .iter()
                .map(|(source, doc)| (source.to_string(), doc.clone()))
                .collect(),
        },
    })
}

struct Compiler {
    /// DestinationRules by host.
    rules: HashMap<String, Rule>,
    /// Every jwksUri the configuration names.
    jwks_uris: HashSet<String>,
    settings: Settings,
    errors: Vec<ConfigError>,
    listeners: HashMap<String, HostTable>,
    clusters: Vec<Arc<Cluster>>,
    /// Clusters of the previous compile, reused when unchanged.
    previous: HashMap<ClusterKey, Arc<Cluster>>,
    /// (service entry host, port) -> index in `clusters`.
    cluster_index: HashMap<(String, u16, Option<String>), usize>,
    /// TLS of the Gateway servers, by listening address.
    tls: crate::tls::Builder,
    /// `Settings.healthChecks`, by (service entry host, port).
    health: HashMap<(String, u16), HealthCheck>,
}

impl Compiler {
    pub(super) fn error(
        &mut self,
        source: &Source,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError::new(source, path, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(alpha: &str, beta: &str) -> Config {
        let entry = |name: &str, ip: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: ns}}\n\
                 spec: {{hosts: [{name}.ns.svc.cluster.local], ports: [{{number: 80, name: http}}], resolution: STATIC, endpoints: [{{address: {ip}}}]}}\n---\n"
            )
        };
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: ns}}\n\
             spec: {{servers: [{{port: {{number: 80}}, hosts: ['*']}}]}}\n---\n{}{}\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: ns}}\n\
             spec: {{hosts: ['*'], gateways: [gw], http: [{{match: [{{uri: {{prefix: /a}}}}], route: [{{destination: {{host: alpha}}}}]}}, \
             {{route: [{{destination: {{host: beta}}}}]}}]}}\n",
            entry("alpha", alpha),
            entry("beta", beta)
        );
        crate::config::parse_str(std::path::Path::new("t.yaml"), &text).unwrap()
    }

    #[test]
    fn a_recompile_keeps_unchanged_clusters_and_replaces_changed_ones() {
        let shared = Shared::default();
        let first = compile(&config("10.0.0.1", "10.0.0.2"), &shared).unwrap();
        let second = compile(&config("10.0.0.1", "10.0.0.3"), &shared).unwrap();
        let find = |s: &Snapshot, host: &str| {
            s.clusters
                .iter()
                .find(|c| c.host.starts_with(host))
                .unwrap()
                .clone()
        };
        assert!(Arc::ptr_eq(&find(&first, "alpha"), &find(&second, "alpha")));
        assert!(!Arc::ptr_eq(&find(&first, "beta"), &find(&second, "beta")));
        assert_eq!(
            find(&second, "beta").endpoints,
            vec!["10.0.0.3:80".parse().unwrap()]
        );
    }
}
