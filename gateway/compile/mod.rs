//! Config -> Snapshot: listeners and their route tables, clusters, JWT
//! providers. Everything a request would otherwise work out per request is
//! decided here: regexes compiled, claim paths split, hosts indexed,
//! destinations resolved to endpoints, key sets parsed.
//!
//! Like loading, compiling reports every error it finds, each located at the
//! document and field that caused it.

mod health;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::authz::Authorizer;
use crate::config::{
    parse_duration, Config, ConfigError, ConfigErrors, CorsPolicy, GatewaySpec, Headers, HttpBody,
    HttpDirectResponse, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, JwtRule, Resource,
    ServiceEntrySpec, Source, StringMatch, VirtualServiceSpec,
};
use crate::jwks::{JwksConfig, JwksRegistry};
use crate::jwt::authn::{KeyRefetch, Outputs};
use crate::jwt::{Authenticator, KeySet, Provider, TokenCache, TokenLocation, Validation};
use crate::metrics::RouteMetrics;
use crate::proxy::listener_port;
use crate::request::PathNormalization;
use crate::routing::{
    operation_name, operation_value, Action, ClaimPath, Condition, Cors, DirectResponse, Forward,
    HeaderOp, HeaderOps, HostTable, MatchRule, Mirror, PathRewrite, Redirect, RedirectPort,
    RetryPolicy, Route, RouteDestination, StringMatcher, UriSpan, WeightedPicker, MAX_RETRIES,
};
use crate::snapshot::Snapshot;
use crate::upstream::{Balance, Cluster, DnsTargets, HashOn, HealthCheck, Outlier, Policy, Pool};

pub use health::HealthCheckEntry;

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

/// Istio refuses a `directResponse` body over 1 MiB.
const MAX_DIRECT_RESPONSE_BODY: usize = 1 << 20;

/// The default `timeout` of a `jwksUri` fetch.
const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

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
        match crate::authz::compile(policy) {
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

/// A DestinationRule, compiled: its traffic policy and its subsets.
#[derive(Debug, Clone)]
struct Rule {
    policy: Policy,
    subsets: HashMap<String, SubsetRule>,
}

/// A subset: the endpoint labels it selects (all must match) and its
/// policy (the rule's, with the fields the subset sets replaced).
#[derive(Debug, Clone)]
struct SubsetRule {
    labels: std::collections::BTreeMap<String, String>,
    policy: Policy,
}

/// The largest sum of one cluster's endpoint weights (after dividing them
/// by their common divisor): the balancer's table holds one slot per unit.
const MAX_WEIGHT_SUM: usize = 10_000;

/// A Gateway server's host: `[namespace/]host`.
struct ServerHost {
    /// `None`: virtual services of any namespace may bind.
    namespace: Option<String>,
    host: String,
}

/// The listeners of one Gateway: (listening address, hosts) per server.
type GatewayServers = Vec<(String, Vec<ServerHost>)>;

/// A validated ServiceEntry: its resource and its endpoint addresses.
struct Service<'c> {
    entry: &'c Resource<ServiceEntrySpec>,
    /// One per endpoint; for `resolution: DNS` without endpoints, one per
    /// host of the entry.
    addresses: Vec<Address>,
    /// `resolution: DNS`.
    dns: bool,
}

/// An endpoint address: an IP, or a name resolved by DNS.
#[derive(Debug, Clone)]
enum Address {
    Ip(IpAddr),
    Name(String),
}

/// Whether `name` can be a DNS host name (letters, digits, `-`, `.`).
fn is_host_name(name: &str) -> bool {
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
    fn error(&mut self, source: &Source, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(source, path, message));
    }

    fn gateways(&mut self, config: &Config) -> HashMap<String, GatewayServers> {
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

    fn gateway(&mut self, gw: &Resource<GatewaySpec>) -> Option<GatewayServers> {
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

    fn service_entries<'c>(&mut self, config: &'c Config) -> HashMap<String, Service<'c>> {
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

    /// Each DestinationRule's traffic policy, by the host it names (as
    /// given, and its fully qualified form for a short name).
    fn destination_rules(&mut self, config: &Config) {
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
    fn traffic_policy(
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
    fn connection_pool(
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

    fn virtual_service(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        gateways: &HashMap<String, GatewayServers>,
        services: &HashMap<String, Service<'_>>,
    ) {
        let namespace = &vs.metadata.namespace;
        let before = self.errors.len();
        if vs.spec.hosts.is_empty() {
            self.error(&vs.source, "spec.hosts", "at least one host is required");
        }
        let mut bound = Vec::new();
        for (i, name) in vs.spec.gateways.iter().enumerate() {
            if name == "mesh" {
                continue; // sidecars: not this gateway
            }
            let key = if name.contains('/') {
                name.clone()
            } else {
                format!("{namespace}/{name}")
            };
            match gateways.get(&key) {
                Some(servers) => bound.push((key, servers)),
                None => self.error(
                    &vs.source,
                    format!("spec.gateways[{i}]"),
                    format!("Gateway `{key}` is not defined"),
                ),
            }
        }
        if vs.spec.gateways.iter().all(|g| g == "mesh") {
            self.error(
                &vs.source,
                "spec.gateways",
                "names no Gateway: a VirtualService without gateways applies to sidecars, not to this gateway",
            );
        }
        let routes: Vec<Arc<Route>> = vs
            .spec
            .http
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(vs, i, r, services))
            .flatten()
            .collect();
        if self.errors.len() != before {
            return;
        }

        let mut attached = HashSet::new();
        for (gateway, servers) in bound {
            let mut any = false;
            for (addr, server_hosts) in servers {
                for host in &vs.spec.hosts {
                    let host = host.to_ascii_lowercase();
                    for sh in server_hosts {
                        if sh.namespace.as_ref().is_some_and(|ns| ns != namespace) {
                            continue;
                        }
                        let Some(effective) = intersect(&sh.host, &host) else {
                            continue;
                        };
                        any = true;
                        if attached.insert((addr.clone(), effective.clone())) {
                            if let Some(table) = self.listeners.get_mut(addr) {
                                table.add(&effective, on_listener(&routes, listener_port(addr)));
                            }
                        }
                    }
                }
            }
            if !any {
                self.error(
                    &vs.source,
                    "spec.hosts",
                    format!("no host of this VirtualService is served by Gateway `{gateway}`"),
                );
            }
        }
    }

    fn route(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        index: usize,
        route: &HttpRoute,
        services: &HashMap<String, Service<'_>>,
    ) -> Option<Vec<Arc<Route>>> {
        let path = format!("spec.http[{index}]");
        let before = self.errors.len();
        let mut matches = Vec::new();
        for (j, m) in route.matches.iter().enumerate() {
            let at = format!("{path}.match[{j}]");
            let mut conditions = Vec::new();
            let string =
                |c: &mut Self, field: &str, sm: &StringMatch, present: bool, fold: bool| {
                    StringMatcher::compile(sm, present, fold)
                        .map_err(|e| c.error(&vs.source, format!("{at}.{field}"), e))
                        .ok()
                };
            if let Some(uri) = &m.uri {
                if let Some(matcher) = string(self, "uri", uri, false, m.ignore_uri_case) {
                    conditions.push(Condition::Uri {
                        matcher,
                        ignore_case: m.ignore_uri_case,
                    });
                }
            }
            if let Some(method) = &m.method {
                if let Some(matcher) = string(self, "method", method, false, false) {
                    conditions.push(Condition::Method(matcher));
                }
            }
            if let Some(authority) = &m.authority {
                if let Some(matcher) = string(self, "authority", authority, false, false) {
                    conditions.push(Condition::Authority(matcher));
                }
            }
            if let Some(scheme) = &m.scheme {
                if let Some(matcher) = string(self, "scheme", scheme, false, false) {
                    conditions.push(Condition::Scheme(matcher));
                }
            }
            for (name, sm) in &m.query_params {
                if name.is_empty() {
                    self.error(
                        &vs.source,
                        format!("{at}.queryParams"),
                        "a parameter name must not be empty",
                    );
                    continue;
                }
                if let Some(matcher) = string(self, &format!("queryParams.{name}"), sm, true, false)
                {
                    conditions.push(Condition::QueryParam(name.clone(), matcher));
                }
            }
            if let Some(port) = m.port {
                match u16::try_from(port) {
                    Ok(port) if port > 0 => conditions.push(Condition::Port(port)),
                    _ => self.error(
                        &vs.source,
                        format!("{at}.port"),
                        format!("{port} is not a port (1 to 65535)"),
                    ),
                }
            }
            for (without, headers) in [(false, &m.headers), (true, &m.without_headers)] {
                let field = if without { "withoutHeaders" } else { "headers" };
                for (name, sm) in headers {
                    let Some(matcher) = string(self, &format!("{field}.{name}"), sm, true, false)
                    else {
                        continue;
                    };
                    match ClaimPath::from_header_name(name) {
                        Some(Ok(claim)) if without => {
                            conditions.push(Condition::WithoutClaim(claim, matcher))
                        }
                        Some(Ok(claim)) => conditions.push(Condition::Claim(claim, matcher)),
                        Some(Err(e)) => self.error(&vs.source, format!("{at}.{field}.{name}"), e),
                        None => {
                            match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                                Ok(h) if without => {
                                    conditions.push(Condition::WithoutHeader(h, matcher))
                                }
                                Ok(h) => conditions.push(Condition::Header(h, matcher)),
                                Err(_) => self.error(
                                    &vs.source,
                                    format!("{at}.{field}.{name}"),
                                    "not a valid header name",
                                ),
                            }
                        }
                    }
                }
            }
            // Istio's translation: a `prefix` uri is Envoy's prefix, `exact`
            // its path, `regex` its safe_regex; no uri is the prefix `/`.
            let span = match &m.uri {
                Some(StringMatch {
                    prefix: Some(p), ..
                }) => UriSpan::Prefix(p.len()),
                Some(StringMatch { exact: Some(_), .. } | StringMatch { regex: Some(_), .. }) => {
                    UriSpan::Path
                }
                _ => UriSpan::Prefix(1),
            };
            matches.push(MatchRule {
                name: m.name.clone(),
                conditions,
                span,
            });
        }

        let name = match &route.name {
            Some(n) => format!("{}/{}/{n}", vs.metadata.namespace, vs.metadata.name),
            None => format!(
                "{}/{}/http[{index}]",
                vs.metadata.namespace, vs.metadata.name
            ),
        };
        let headers = self.header_ops(vs, &format!("{path}.headers"), route.headers.as_ref());
        let headers = headers.unwrap_or_default();
        let cors = route
            .cors_policy
            .as_ref()
            .and_then(|c| self.cors(vs, &format!("{path}.corsPolicy"), c));
        let action = match (&route.redirect, &route.direct_response) {
            (Some(_), Some(_)) => {
                self.error(
                    &vs.source,
                    &path,
                    "set one of redirect and directResponse, not both",
                );
                None
            }
            (Some(redirect), None) => self.redirect(vs, &path, route, redirect),
            (None, Some(direct)) => self.direct_response(vs, &path, route, direct),
            (None, None) => self.forward(vs, &path, &name, route, &headers, services),
        };
        if self.errors.len() != before {
            return None;
        }
        // Istio makes a route of each match entry (none: one catch-all).
        let action = action?;
        let name: Arc<str> = name.into();
        let metrics = RouteMetrics::new(&name, crate::metrics::NONE);
        let response_headers = headers.response();
        let cors = cors.map(Box::new);
        let count = matches.len();
        type Entry = (Option<(usize, usize)>, Vec<MatchRule>);
        let entries: Vec<Entry> = if count == 0 {
            vec![(None, Vec::new())]
        } else {
            matches
                .into_iter()
                .enumerate()
                .map(|(j, m)| (Some((j, count)), vec![m]))
                .collect()
        };
        Some(
            entries
                .into_iter()
                .map(|(entry, matches)| {
                    Arc::new(Route {
                        name: name.clone(),
                        entry,
                        matches,
                        action: action.clone(),
                        metrics: metrics.clone(),
                        response_headers: response_headers.clone(),
                        cors: cors.clone(),
                    })
                })
                .collect(),
        )
    }

    /// `corsPolicy`, checked as Istio validates it.
    fn cors(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        at: &str,
        c: &CorsPolicy,
    ) -> Option<Cors> {
        const METHODS: &[&str] = &[
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
        ];
        let before = self.errors.len();
        let mut origins = Vec::new();
        match (&c.allow_origins, &c.allow_origin) {
            (Some(matches), _) => {
                for (i, m) in matches.iter().enumerate() {
                    let field = format!("{at}.allowOrigins[{i}]");
                    let empty = [&m.exact, &m.prefix, &m.regex]
                        .iter()
                        .all(|v| v.as_deref().is_none_or(str::is_empty));
                    if empty {
                        self.error(&vs.source, field, "an origin match must not be empty");
                        continue;
                    }
                    match StringMatcher::compile(m, false, false) {
                        Ok(matcher) => origins.push(matcher),
                        Err(e) => self.error(&vs.source, field, e),
                    }
                }
            }
            (None, Some(exact)) => {
                origins.extend(exact.iter().map(|o| StringMatcher::Exact(o.clone())));
            }
            (None, None) => {}
        }
        for (i, method) in c.allow_methods.iter().enumerate() {
            if !METHODS.contains(&method.as_str()) {
                self.error(
                    &vs.source,
                    format!("{at}.allowMethods[{i}]"),
                    format!("`{method}` is not a supported HTTP method"),
                );
            }
        }
        let joined = |c: &mut Self, field: &str, names: &[String]| -> Option<HeaderValue> {
            for (i, name) in names.iter().enumerate() {
                let ok = name == "*"
                    || (!name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                if !ok {
                    c.error(
                        &vs.source,
                        format!("{at}.{field}[{i}]"),
                        format!("`{name}` is not a valid header name"),
                    );
                }
            }
            if names.is_empty() {
                return None;
            }
            HeaderValue::from_str(&names.join(",")).ok()
        };
        let allow_headers = joined(self, "allowHeaders", &c.allow_headers);
        let expose_headers = joined(self, "exposeHeaders", &c.expose_headers);
        let allow_methods = if c.allow_methods.is_empty() {
            None
        } else {
            HeaderValue::from_str(&c.allow_methods.join(",")).ok()
        };
        let max_age = match c.max_age.as_deref().map(parse_duration) {
            None => None,
            Some(Ok(d)) if d.subsec_nanos() == 0 => Some(HeaderValue::from(d.as_secs())),
            Some(Ok(_)) => {
                self.error(
                    &vs.source,
                    format!("{at}.maxAge"),
                    "max_age duration is accurate only to seconds precision",
                );
                None
            }
            Some(Err(e)) => {
                self.error(&vs.source, format!("{at}.maxAge"), e);
                None
            }
        };
        let forward_unmatched_preflights = match c.unmatched_preflights.as_deref() {
            None | Some("FORWARD") | Some("UNSPECIFIED") => true,
            Some("IGNORE") => false,
            Some(other) => {
                self.error(
                    &vs.source,
                    format!("{at}.unmatchedPreflights"),
                    format!("`{other}` is not FORWARD or IGNORE"),
                );
                true
            }
        };
        (self.errors.len() == before).then_some(Cors {
            origins,
            allow_methods,
            allow_headers,
            expose_headers,
            max_age,
            allow_credentials: c.allow_credentials.unwrap_or(false),
            forward_unmatched_preflights,
        })
    }

    /// A `headers` block: its operations, checked as Istio validates them
    /// (a `host` or `:authority` in `request.set`/`add` is the authority
    /// sent upstream, `set` winning over `add`).
    fn header_ops(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        at: &str,
        headers: Option<&Headers>,
    ) -> Option<LevelOps> {
        let headers = headers?;
        let mut level = LevelOps::default();
        for (side, ops) in [
            ("request", &headers.request),
            ("response", &headers.response),
        ] {
            let Some(ops) = ops else { continue };
            let request = side == "request";
            let mut remove = Vec::new();
            for (i, name) in ops.remove.iter().enumerate() {
                match operation_name(name) {
                    Ok(h) => remove.push(h),
                    Err(e) => self.error(&vs.source, format!("{at}.{side}.remove[{i}]"), e),
                }
            }
            let mut set_add = Vec::new();
            for (verb, map) in [("set", &ops.set), ("add", &ops.add)] {
                for (name, value) in map {
                    let field = format!("{at}.{side}.{verb}.{name}");
                    let authority = name.eq_ignore_ascii_case("host")
                        || name.eq_ignore_ascii_case(":authority");
                    if authority && request {
                        match authority_value(value) {
                            // `set` is read before `add` and wins.
                            Ok(v) => {
                                level.authority.get_or_insert(v);
                            }
                            Err(e) => self.error(&vs.source, field, e),
                        }
                        continue;
                    }
                    match (operation_name(name), operation_value(value)) {
                        (Ok(h), Ok(v)) if verb == "set" => set_add.push(HeaderOp::Set(h, v)),
                        (Ok(h), Ok(v)) => set_add.push(HeaderOp::Add(h, v)),
                        (Err(e), _) | (_, Err(e)) => self.error(&vs.source, field, e),
                    }
                }
            }
            if request {
                level.request = (remove, set_add);
            } else {
                level.response = (remove, set_add);
            }
        }
        Some(level)
    }

    /// Fields that only make sense for a route that forwards are refused
    /// on one the gateway answers itself (`what`).
    fn forward_only(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        route: &HttpRoute,
        what: &str,
    ) {
        if !route.route.is_empty() {
            self.error(
                &vs.source,
                format!("{path}.route"),
                format!("a route with {what} has no destinations"),
            );
        }
        if route.rewrite.is_some() {
            self.error(
                &vs.source,
                format!("{path}.rewrite"),
                format!("a route with {what} is not forwarded: nothing to rewrite"),
            );
        }
        if route.mirror.is_some() || !route.mirrors.is_empty() {
            self.error(
                &vs.source,
                format!("{path}.mirror"),
                format!("a route with {what} sends no request upstream to mirror"),
            );
        }
        if route.timeout.is_some() || route.retries.is_some() {
            let field = if route.timeout.is_some() {
                "timeout"
            } else {
                "retries"
            };
            self.error(
                &vs.source,
                format!("{path}.{field}"),
                format!("a route with {what} sends no request upstream"),
            );
        }
        if route.headers.as_ref().is_some_and(|h| h.request.is_some()) {
            self.error(
                &vs.source,
                format!("{path}.headers.request"),
                format!("a route with {what} sends no request upstream"),
            );
        }
    }

    /// `redirect`, checked as Istio validates it.
    fn redirect(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        route: &HttpRoute,
        r: &HttpRedirect,
    ) -> Option<Action> {
        self.forward_only(vs, path, route, "redirect");
        let at = format!("{path}.redirect");
        let before = self.errors.len();
        let scheme = match r.scheme.as_deref() {
            None | Some("") => None,
            Some("http") => Some("http"),
            Some("https") => Some("https"),
            Some(other) => {
                self.error(
                    &vs.source,
                    format!("{at}.scheme"),
                    format!("`{other}` is not a redirect scheme: http or https"),
                );
                None
            }
        };
        let authority = match r.authority.as_deref().filter(|a| !a.is_empty()) {
            Some(a) => match authority_value(a) {
                Ok(_) => Some(a.to_string()),
                Err(e) => {
                    self.error(&vs.source, format!("{at}.authority"), e);
                    None
                }
            },
            None => None,
        };
        let port = match (r.port, r.derive_port.as_deref()) {
            (Some(_), Some(_)) => {
                self.error(&vs.source, &at, "set one of port and derivePort, not both");
                None
            }
            (Some(p), None) => match u16::try_from(p) {
                Ok(p) if p > 0 => Some(RedirectPort::Fixed(p)),
                _ => {
                    self.error(
                        &vs.source,
                        format!("{at}.port"),
                        format!("{p} is not a port (1 to 65535)"),
                    );
                    None
                }
            },
            (None, Some("FROM_REQUEST_PORT")) => Some(RedirectPort::FromRequest),
            // Envoy's own behaviour: no port unless the host has one.
            (None, Some("FROM_PROTOCOL_DEFAULT")) | (None, None) => None,
            (None, Some(other)) => {
                self.error(
                    &vs.source,
                    format!("{at}.derivePort"),
                    format!("`{other}` is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
                );
                None
            }
        };
        let uri = r.uri.as_deref().filter(|u| !u.is_empty());
        if let Some(uri) = uri {
            let with_slash = if uri.starts_with('/') {
                uri.to_string()
            } else {
                format!("/{uri}")
            };
            if uri.contains('#') || with_slash.parse::<http::uri::PathAndQuery>().is_err() {
                self.error(
                    &vs.source,
                    format!("{at}.uri"),
                    format!("`{uri}` is not a path (and query)"),
                );
            }
        }
        let code = match r.redirect_code.unwrap_or(301) {
            code @ (301 | 302 | 303 | 307 | 308) => code as u16,
            0 => 301,
            other => {
                self.error(
                    &vs.source,
                    format!("{at}.redirectCode"),
                    format!("{other} is not supported: 301, 302, 303, 307 or 308"),
                );
                301
            }
        };
        if uri.is_none()
            && authority.is_none()
            && scheme.is_none()
            && r.port.is_none()
            && r.derive_port.is_none()
            && self.errors.len() == before
        {
            self.error(
                &vs.source,
                &at,
                "set at least one of uri, authority, scheme, port and derivePort",
            );
        }
        (self.errors.len() == before).then(|| {
            Action::Redirect(Redirect {
                scheme,
                authority,
                port,
                path: uri.map(str::to_string),
                code,
            })
        })
    }

    /// `directResponse`: a status from 200 to 599 and a body of at most 1 MiB.
    fn direct_response(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        route: &HttpRoute,
        d: &HttpDirectResponse,
    ) -> Option<Action> {
        self.forward_only(vs, path, route, "directResponse");
        let at = format!("{path}.directResponse");
        let before = self.errors.len();
        let status = match u16::try_from(d.status) {
            Ok(status) if (200..=599).contains(&status) => status,
            _ => {
                self.error(
                    &vs.source,
                    format!("{at}.status"),
                    format!("{} is not in range 200-599", d.status),
                );
                200
            }
        };
        let body = match &d.body {
            None => Bytes::new(),
            Some(HttpBody {
                string: Some(_),
                bytes: Some(_),
            }) => {
                self.error(
                    &vs.source,
                    format!("{at}.body"),
                    "set one of string and bytes, not both",
                );
                Bytes::new()
            }
            Some(HttpBody {
                string: Some(text), ..
            }) => Bytes::from(text.clone()),
            Some(HttpBody {
                bytes: Some(b64), ..
            }) => {
                use base64::Engine;
                match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                    Ok(bytes) => Bytes::from(bytes),
                    Err(_) => {
                        self.error(&vs.source, format!("{at}.body.bytes"), "not base64");
                        Bytes::new()
                    }
                }
            }
            Some(_) => Bytes::new(),
        };
        if body.len() > MAX_DIRECT_RESPONSE_BODY {
            self.error(
                &vs.source,
                format!("{at}.body"),
                format!(
                    "{} bytes: at most {MAX_DIRECT_RESPONSE_BODY} (1 MiB), as Istio allows",
                    body.len()
                ),
            );
        }
        (self.errors.len() == before).then_some(Action::Direct(DirectResponse { status, body }))
    }

    /// `route[]`: each destination resolved to its cluster, with the
    /// counters of (route, cluster), and the weighted split.
    fn forward(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        name: &str,
        route: &HttpRoute,
        headers: &LevelOps,
        services: &HashMap<String, Service<'_>>,
    ) -> Option<Action> {
        if route.route.is_empty() {
            self.error(
                &vs.source,
                format!("{path}.route"),
                "at least one destination is required",
            );
            return None;
        }
        let before = self.errors.len();
        let only = route.route.len() == 1;
        let mut destinations = Vec::new();
        let mut weights = Vec::new();
        for (k, d) in route.route.iter().enumerate() {
            let at = format!("{path}.route[{k}]");
            let weight = match d.weight {
                None if only => 100,
                None => 0,
                Some(w) => match u32::try_from(w) {
                    Ok(w) => u64::from(w),
                    Err(_) => {
                        self.error(
                            &vs.source,
                            format!("{at}.weight"),
                            format!("{w} is not a weight (0 to {})", u32::MAX),
                        );
                        continue;
                    }
                },
            };
            let Some(cluster) =
                self.cluster(vs, &format!("{at}.destination"), &d.destination, services)
            else {
                continue;
            };
            let own = self.header_ops(vs, &format!("{at}.headers"), d.headers.as_ref());
            let own = own.unwrap_or_default();
            // Istio drops a zero-weight destination when there are others.
            if weight == 0 && !only {
                continue;
            }
            // A single destination's operations join the route's (after
            // them); a weighted destination's are applied before the
            // route's (Envoy's weighted cluster). A route-level authority
            // wins over a destination's.
            let (request_headers, response_headers) = if only {
                (
                    HeaderOps::level(
                        [headers.request.0.clone(), own.request.0.clone()].concat(),
                        [headers.request.1.clone(), own.request.1.clone()].concat(),
                    ),
                    HeaderOps::level(
                        [headers.response.0.clone(), own.response.0.clone()].concat(),
                        [headers.response.1.clone(), own.response.1.clone()].concat(),
                    ),
                )
            } else {
                (
                    own.request().then(&headers.request()),
                    own.response().then(&headers.response()),
                )
            };
            destinations.push(RouteDestination {
                cluster,
                weight,
                metrics: RouteMetrics::new(name, &self.clusters[cluster].name),
                authority: headers.authority.clone().or(own.authority),
                request_headers,
                response_headers,
            });
            weights.push(weight);
        }
        if self.errors.len() != before {
            return None;
        }
        let Some(picker) = WeightedPicker::new(&weights) else {
            self.error(
                &vs.source,
                format!("{path}.route"),
                "the destinations' weights add up to 0: give at least one a positive weight",
            );
            return None;
        };
        let (rewrite, authority) = self.rewrite(vs, path, route.rewrite.as_ref())?;
        if let Some(authority) = authority {
            if headers.authority.is_some() {
                self.error(
                    &vs.source,
                    format!("{path}.rewrite.authority"),
                    "the authority is also set in headers.request: set it in one place",
                );
                return None;
            }
            for d in &mut destinations {
                d.authority = Some(authority.clone());
            }
        }
        let mut forward = Forward::new(destinations, picker);
        forward.rewrite = rewrite;
        forward.timeout = self.timeout(vs, path, route.timeout.as_deref());
        forward.retry = self.retry(vs, path, route.retries.as_ref())?;
        forward.mirrors = self.mirrors(vs, path, route, services)?;
        Some(Action::Forward(forward))
    }

    /// `mirror` with `mirrorPercentage` (or the deprecated `mirrorPercent`;
    /// neither: 100%), or `mirrors[]`, as Istio translates them: a share of
    /// 0 mirrors nothing.
    fn mirrors(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        route: &HttpRoute,
        services: &HashMap<String, Service<'_>>,
    ) -> Option<Vec<Mirror>> {
        let before = self.errors.len();
        // (destination path, percentage path, destination, percentage)
        type Wanted<'r> = (String, String, &'r crate::config::Destination, Option<f64>);
        let mut wanted: Vec<Wanted> = Vec::new();
        if let Some(mirror) = &route.mirror {
            if !route.mirrors.is_empty() {
                self.error(&vs.source, path, "set one of mirror and mirrors, not both");
            }
            let (field, percent) = match (&route.mirror_percentage, route.mirror_percent) {
                (Some(p), _) => ("mirrorPercentage.value", Some(p.value)),
                (None, Some(p)) => ("mirrorPercent", Some(f64::from(p))),
                (None, None) => ("mirrorPercentage", None),
            };
            wanted.push((
                format!("{path}.mirror"),
                format!("{path}.{field}"),
                mirror,
                percent,
            ));
        } else if route.mirror_percentage.is_some() || route.mirror_percent.is_some() {
            self.error(
                &vs.source,
                format!("{path}.mirrorPercentage"),
                "there is no mirror to apply it to",
            );
        }
        for (i, m) in route.mirrors.iter().enumerate() {
            wanted.push((
                format!("{path}.mirrors[{i}].destination"),
                format!("{path}.mirrors[{i}].percentage.value"),
                &m.destination,
                m.percentage.as_ref().map(|p| p.value),
            ));
        }
        let mut mirrors = Vec::new();
        for (at, percent_at, destination, percent) in wanted {
            let percent = percent.unwrap_or(100.0);
            if !(0.0..=100.0).contains(&percent) {
                self.error(
                    &vs.source,
                    percent_at,
                    format!("{percent} is not in range 0-100"),
                );
                continue;
            }
            let Some(cluster) = self.cluster(vs, &at, destination, services) else {
                continue;
            };
            // Istio: the percentage as a fraction per million.
            let per_million = (percent * 10_000.0) as u32;
            if per_million > 0 {
                mirrors.push(Mirror {
                    cluster,
                    per_million,
                });
            }
        }
        (self.errors.len() == before).then_some(mirrors)
    }

    /// `timeout`: `0s` is none, as in Envoy.
    fn timeout(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        timeout: Option<&str>,
    ) -> Option<Duration> {
        match parse_duration(timeout?) {
            Ok(d) if d.is_zero() => None,
            Ok(d) if d < Duration::from_millis(1) => {
                self.error(
                    &vs.source,
                    format!("{path}.timeout"),
                    "must be at least 1ms",
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(&vs.source, format!("{path}.timeout"), e);
                None
            }
        }
    }

    /// `retries` as Istio converts it: absent is Istio's default policy,
    /// `attempts: 0` none, otherwise the default with the fields given.
    fn retry(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        retries: Option<&HttpRetry>,
    ) -> Option<Option<RetryPolicy>> {
        let Some(r) = retries else {
            return Some(Some(RetryPolicy::istio_default()));
        };
        let at = format!("{path}.retries");
        let before = self.errors.len();
        if r.attempts == 0 {
            if r.per_try_timeout.is_some()
                || r.retry_on.is_some()
                || r.retry_remote_localities.is_some()
                || r.retry_ignore_previous_hosts.is_some()
                || r.backoff.is_some()
            {
                self.error(
                    &vs.source,
                    &at,
                    "a retry policy is configured while attempts is 0 (retries disabled)",
                );
                return None;
            }
            return Some(None);
        }
        let mut policy = RetryPolicy::istio_default();
        match u32::try_from(r.attempts) {
            Ok(n) if n <= MAX_RETRIES => policy.retries = n,
            _ => self.error(
                &vs.source,
                format!("{at}.attempts"),
                format!("{} retries: from 0 to {MAX_RETRIES}", r.attempts),
            ),
        }
        let duration = |c: &mut Self, field: &str, text: &Option<String>| -> Option<Duration> {
            match parse_duration(text.as_deref()?) {
                Ok(d) if d >= Duration::from_millis(1) => Some(d),
                Ok(_) => {
                    c.error(&vs.source, format!("{at}.{field}"), "must be at least 1ms");
                    None
                }
                Err(e) => {
                    c.error(&vs.source, format!("{at}.{field}"), e);
                    None
                }
            }
        };
        policy.per_try_timeout = duration(self, "perTryTimeout", &r.per_try_timeout);
        if let Some(backoff) = duration(self, "backoff", &r.backoff) {
            policy.backoff = backoff;
        }
        if let Some(retry_on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
            if let Err(e) = policy.set_retry_on(retry_on) {
                self.error(&vs.source, format!("{at}.retryOn"), e);
            }
        }
        if let Some(ignore) = r.retry_ignore_previous_hosts {
            policy.other_hosts = ignore;
        }
        (self.errors.len() == before).then_some(Some(policy))
    }

    /// `rewrite`: the path rewrite and the authority, checked.
    fn rewrite(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        rewrite: Option<&HttpRewrite>,
    ) -> Option<(Option<PathRewrite>, Option<HeaderValue>)> {
        let Some(rewrite) = rewrite else {
            return Some((None, None));
        };
        let at = format!("{path}.rewrite");
        let before = self.errors.len();
        let uri = rewrite.uri.as_deref().filter(|u| !u.is_empty());
        let path_rewrite = match (uri, &rewrite.uri_regex_rewrite) {
            (Some(_), Some(_)) => {
                self.error(
                    &vs.source,
                    &at,
                    "set one of uri and uriRegexRewrite, not both",
                );
                None
            }
            (Some(uri), None) => PathRewrite::prefix(uri)
                .map_err(|e| self.error(&vs.source, format!("{at}.uri"), e))
                .ok(),
            (None, Some(r)) => {
                if r.pattern.is_empty() || r.rewrite.is_empty() {
                    self.error(
                        &vs.source,
                        format!("{at}.uriRegexRewrite"),
                        "both match and rewrite are required",
                    );
                    None
                } else {
                    PathRewrite::regex(&r.pattern, &r.rewrite)
                        .map_err(|e| self.error(&vs.source, format!("{at}.uriRegexRewrite"), e))
                        .ok()
                }
            }
            (None, None) => None,
        };
        let authority = match rewrite.authority.as_deref().filter(|a| !a.is_empty()) {
            Some(a) => match authority_value(a) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(&vs.source, format!("{at}.authority"), e);
                    None
                }
            },
            None => None,
        };
        if path_rewrite.is_none() && authority.is_none() && self.errors.len() == before {
            self.error(
                &vs.source,
                &at,
                "set at least one of uri, uriRegexRewrite and authority",
            );
        }
        (self.errors.len() == before).then_some((path_rewrite, authority))
    }

    /// Resolves a destination to a cluster, creating it on first use.
    fn cluster(
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

    fn authenticator(&mut self, config: &Config, shared: &Shared) -> Authenticator {
        let mut providers: Vec<Provider> = Vec::new();
        let mut issuers: HashMap<String, String> = HashMap::new();
        for ra in &config.request_authentications {
            for (k, rule) in ra.spec.jwt_rules.iter().enumerate() {
                let path = format!("spec.jwtRules[{k}]");
                if let Some(first) = issuers.get(&rule.issuer) {
                    let message =
                        format!("issuer `{}` is already configured at {first}", rule.issuer);
                    self.error(&ra.source, format!("{path}.issuer"), message);
                    continue;
                }
                if let Some(provider) = self.provider(&ra.source, &path, rule, &shared.jwks) {
                    issuers.insert(rule.issuer.clone(), format!("{} {path}", ra.source));
                    providers.push(provider);
                }
            }
        }
        Authenticator::new(
            providers,
            shared.tokens.clone(),
            self.settings.max_token_bytes,
        )
    }

    fn provider(
        &mut self,
        source: &Source,
        path: &str,
        rule: &JwtRule,
        jwks: &JwksRegistry,
    ) -> Option<Provider> {
        let before = self.errors.len();
        if rule.issuer.is_empty() {
            self.error(source, format!("{path}.issuer"), "must not be empty");
        }
        let timeout = match rule.timeout.as_deref().map(parse_duration) {
            None => DEFAULT_JWKS_TIMEOUT,
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                self.error(source, format!("{path}.timeout"), "must be more than zero");
                DEFAULT_JWKS_TIMEOUT
            }
            Some(Err(e)) => {
                self.error(source, format!("{path}.timeout"), e);
                DEFAULT_JWKS_TIMEOUT
            }
        };
        let mut refetch = None;
        let keys = match (&rule.jwks, &rule.jwks_uri) {
            (Some(_), Some(_)) => {
                self.error(source, path, "set one of jwks and jwksUri, not both");
                None
            }
            (None, None) => {
                self.error(source, path, "one of jwks and jwksUri is required");
                None
            }
            (Some(inline), None) => match KeySet::from_json(inline.as_bytes()) {
                Ok(keys) => Some(Arc::new(ArcSwapOption::from_pointee(keys))),
                Err(e) => {
                    self.error(source, format!("{path}.jwks"), e.to_string());
                    None
                }
            },
            (None, Some(uri)) => {
                if uri.starts_with("http://") || uri.starts_with("https://") {
                    let source = jwks.source(uri, timeout);
                    self.jwks_uris.insert(uri.clone());
                    refetch = Some(source.clone() as Arc<dyn KeyRefetch>);
                    Some(source.slot.clone())
                } else {
                    self.error(
                        source,
                        format!("{path}.jwksUri"),
                        "must be an http:// or https:// URL",
                    );
                    None
                }
            }
        };
        let mut locations = Vec::new();
        for (i, h) in rule.from_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => locations.push(TokenLocation::Header {
                    name,
                    prefix: h.prefix.clone().unwrap_or_default(),
                }),
                Err(_) => self.error(
                    source,
                    format!("{path}.fromHeaders[{i}].name"),
                    "not a valid header name",
                ),
            }
        }
        for (i, p) in rule.from_params.iter().enumerate() {
            if p.is_empty() {
                self.error(
                    source,
                    format!("{path}.fromParams[{i}]"),
                    "must not be empty",
                );
            }
            locations.push(TokenLocation::Param(p.clone()));
        }
        for (i, c) in rule.from_cookies.iter().enumerate() {
            if c.is_empty() {
                self.error(
                    source,
                    format!("{path}.fromCookies[{i}]"),
                    "must not be empty",
                );
            }
            locations.push(TokenLocation::Cookie(c.clone()));
        }
        let mut outputs = Outputs::default();
        if let Some(name) = &rule.output_payload_to_header {
            match output_header(name) {
                Ok(h) => outputs.payload = Some(h),
                Err(e) => self.error(source, format!("{path}.outputPayloadToHeader"), e),
            }
        }
        for (i, o) in rule.output_claim_to_headers.iter().enumerate() {
            let at = format!("{path}.outputClaimToHeaders[{i}]");
            match (output_header(&o.header), ClaimPath::dotted(&o.claim)) {
                (Ok(h), Ok(claim)) => outputs.claims.push((h, claim)),
                (Err(e), _) => self.error(source, format!("{at}.header"), e),
                (_, Err(e)) => self.error(source, format!("{at}.claim"), e),
            }
        }
        if locations.is_empty() {
            locations = TokenLocation::defaults();
        }
        if self.errors.len() != before {
            return None;
        }
        Some(Provider {
            issuer: rule.issuer.clone(),
            validation: Validation {
                audiences: rule.audiences.clone(),
                clock_skew: self.settings.clock_skew,
            },
            keys: keys?,
            locations,
            forward_original_token: rule.forward_original_token,
            outputs,
            space_delimited: rule.space_delimited_claims.clone(),
            refetch,
        })
    }
}

/// A header a rule writes: a valid name, and not one that would let a token
/// rewrite how the request is routed or framed.
fn output_header(name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    const RESERVED: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "authorization",
        "cookie",
    ];
    if RESERVED.contains(&header.as_str()) {
        return Err(format!("`{name}` cannot be written from a token"));
    }
    Ok(header)
}

/// A VirtualService's routes as a listener on `port` has them (Istio's
/// `BuildHTTPRoutesForVirtualService`): without those whose `match.port`
/// is another port, and without any after the first catch-all route,
/// which nothing could reach.
fn on_listener(routes: &[Arc<Route>], port: u16) -> Vec<Arc<Route>> {
    let mut out = Vec::with_capacity(routes.len());
    for route in routes.iter().filter(|r| r.on_port(port)) {
        out.push(route.clone());
        if route.catch_all(port) {
            break;
        }
    }
    out
}

/// The header operations of one level (a route or a destination):
/// (removals, sets then adds) for the request and for the response, and
/// the authority a request `set`/`add` of `host` gives.
#[derive(Debug, Clone, Default)]
struct LevelOps {
    request: (Vec<HeaderName>, Vec<HeaderOp>),
    response: (Vec<HeaderName>, Vec<HeaderOp>),
    authority: Option<HeaderValue>,
}

impl LevelOps {
    fn request(&self) -> HeaderOps {
        HeaderOps::level(self.request.0.clone(), self.request.1.clone())
    }

    fn response(&self) -> HeaderOps {
        HeaderOps::level(self.response.0.clone(), self.response.1.clone())
    }
}

/// An authority sent as `Host`: `host` or `host:port`, nothing else.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn authority_value(authority: &str) -> Result<HeaderValue, String> {
    authority
        .parse::<http::uri::Authority>()
        .ok()
        .filter(|a| !a.as_str().contains('@'))
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .ok_or_else(|| format!("`{authority}` is not an authority (host or host:port)"))
}

fn cluster_key(cluster: &Cluster) -> ClusterKey {
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

/// The hosts both a Gateway server host and a VirtualService host admit,
/// as one pattern (the narrower of the two), or `None`.
fn intersect(server: &str, vs: &str) -> Option<String> {
    if covers(server, vs) {
        Some(vs.to_string())
    } else if covers(vs, server) {
        Some(server.to_string())
    } else {
        None
    }
}

/// Whether pattern `outer` admits every host `inner` admits.
fn covers(outer: &str, inner: &str) -> bool {
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
