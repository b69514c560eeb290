//! The external schema: serde types for the Istio kinds (and our `Settings`)
//! exactly as users write them.
//!
//! Every struct denies unknown fields: a field we do not implement is a load
//! error with its path, never silently dropped (a dropped security field opens
//! a hole). Fields are added here only when the compiler implements them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `metadata` of any document.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// `selector` of a Gateway (a plain label map).
pub type Labels = BTreeMap<String, String>;

/// `selector` of a RequestAuthentication / AuthorizationPolicy.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

// ---------------------------------------------------------------- Gateway

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    #[serde(default)]
    pub selector: Labels,
    pub servers: Vec<GatewayServer>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayServer {
    pub port: Port,
    /// Address to bind; all interfaces when absent.
    #[serde(default)]
    pub bind: Option<String>,
    pub hosts: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
}

/// Istio's `ServerTLSSettings`. Every field of Istio's is accepted by the
/// parser so that one we do not implement is refused by name (in
/// `crate::tls`), not as an unknown field.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTlsSettings {
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub server_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    #[serde(default)]
    pub max_protocol_version: Option<String>,
    // Refused when present (client certificates, cipher lists, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_names: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificates: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_certificate_spki: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_certificate_hash: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suites: Option<serde_json::Value>,
}

/// Istio's `Port` (a Gateway server's) and `ServicePort` (a ServiceEntry's)
/// have the same fields.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    pub number: u16,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub target_port: Option<u16>,
}

// ---------------------------------------------------------- VirtualService

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServiceSpec {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default)]
    pub headers: Option<Headers>,
    /// Istio duration; `0s` or absent: none.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Absent: Istio's default policy.
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    #[serde(default)]
    pub redirect: Option<HttpRedirect>,
    #[serde(default)]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default)]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default)]
    pub mirror: Option<Destination>,
    #[serde(default)]
    pub mirror_percentage: Option<Percent>,
    /// Deprecated in Istio for `mirrorPercentage`.
    #[serde(default)]
    pub mirror_percent: Option<u32>,
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
}

/// Istio's `Percent`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    pub value: f64,
}

/// Istio's `HTTPMirrorPolicy`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    pub destination: Destination,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// Istio's `CorsPolicy`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CorsPolicy {
    #[serde(default)]
    pub allow_origins: Option<Vec<StringMatch>>,
    /// Deprecated in Istio: exact origins, read when `allowOrigins` is absent.
    #[serde(default)]
    pub allow_origin: Option<Vec<String>>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Istio duration, whole seconds.
    #[serde(default)]
    pub max_age: Option<String>,
    #[serde(default)]
    pub allow_credentials: Option<bool>,
    /// `FORWARD` (default) or `IGNORE`.
    #[serde(default)]
    pub unmatched_preflights: Option<String>,
}

/// Istio's `Headers`: operations on the request sent upstream and on the
/// response sent to the client.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

/// Istio's `Headers.HeaderOperations` (maps read in name order, as Istio
/// sorts them).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Istio's `HTTPRetry`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRetry {
    #[serde(default)]
    pub attempts: i64,
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    #[serde(default)]
    pub retry_on: Option<String>,
    /// Endpoints have no locality here: no other locality to retry in.
    #[serde(default)]
    pub retry_remote_localities: Option<bool>,
    #[serde(default)]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// The base interval between retries (Istio duration).
    #[serde(default)]
    pub backoff: Option<String>,
}

/// Istio's `HTTPRedirect`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRedirect {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    #[serde(default)]
    pub derive_port: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    /// Default 301.
    #[serde(default)]
    pub redirect_code: Option<u32>,
}

/// Istio's `HTTPDirectResponse`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDirectResponse {
    pub status: u32,
    #[serde(default)]
    pub body: Option<HttpBody>,
}

/// Istio's `HTTPBody`: one of `string` and `bytes` (base64).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBody {
    #[serde(default)]
    pub string: Option<String>,
    #[serde(default)]
    pub bytes: Option<String>,
}

/// Istio's `HTTPRewrite`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRewrite {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub uri_regex_rewrite: Option<RegexRewrite>,
    #[serde(default)]
    pub authority: Option<String>,
}

/// Istio's `RegexRewrite`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(default, rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub rewrite: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpMatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    #[serde(default)]
    pub authority: Option<StringMatch>,
    /// Header name -> match. Names starting with `@request.auth.claims` match
    /// validated JWT claims instead of headers.
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub ignore_uri_case: bool,
    /// Matched against the request's scheme (`http` on a plain listener).
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    /// Query parameter name -> match on its first value, as sent (not
    /// percent-decoded); `{}` or `regex: "*"`: present.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// The listener port the request arrived on.
    #[serde(default)]
    pub port: Option<u32>,
}

/// Istio's `StringMatch`: a oneof of `exact`, `prefix`, `regex`. The empty
/// match `{}` is allowed for headers, where it means "present".
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    /// Relative share of the route's requests (Istio: `int32`, at least 0).
    /// Omitted: 0, except for a route's only destination, which takes all.
    #[serde(default)]
    pub weight: Option<i64>,
    #[serde(default)]
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub host: String,
    /// A subset a DestinationRule for `host` defines.
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    pub number: u16,
}

// ------------------------------------------------------------ ServiceEntry

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEntry {
    pub address: String,
    /// Port name (from `ports[].name`) -> port on this endpoint.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// What DestinationRule subsets select endpoints by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Load-balancing weight relative to the entry's other endpoints
    /// (Istio: omitted or 0 is 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

// --------------------------------------------------------- DestinationRule

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Option<Vec<String>>,
    #[serde(default)]
    pub workload_selector: Option<serde_yaml::Value>,
}

/// A named group of the host's endpoints, chosen by their labels, with
/// its own traffic policy (fields set here replace the rule's).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    #[serde(default)]
    pub port_level_settings: Option<serde_yaml::Value>,
}

impl TrafficPolicy {
    /// A subset's policy over its rule's, as Istio merges them: each field
    /// the subset sets replaces the rule's whole field.
    pub fn merged_with(&self, subset: &TrafficPolicy) -> TrafficPolicy {
        TrafficPolicy {
            load_balancer: subset
                .load_balancer
                .clone()
                .or_else(|| self.load_balancer.clone()),
            outlier_detection: subset
                .outlier_detection
                .clone()
                .or_else(|| self.outlier_detection.clone()),
            connection_pool: subset
                .connection_pool
                .clone()
                .or_else(|| self.connection_pool.clone()),
            tls: subset.tls.clone().or_else(|| self.tls.clone()),
            port_level_settings: subset
                .port_level_settings
                .clone()
                .or_else(|| self.port_level_settings.clone()),
        }
    }
}

/// `trafficPolicy.connectionPool`: Envoy's circuit breakers and
/// connection settings for the cluster.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default)]
    pub tcp: Option<TcpPoolSettings>,
    #[serde(default)]
    pub http: Option<HttpPoolSettings>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpPoolSettings {
    #[serde(default)]
    pub max_connections: Option<i64>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub tcp_keepalive: Option<TcpKeepaliveSettings>,
    /// Refused: Pingora's pool has no maximum connection age.
    #[serde(default)]
    pub max_connection_duration: Option<String>,
    /// Refused: applies to TCP proxying; HTTP uses `http.idleTimeout`.
    #[serde(default)]
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepaliveSettings {
    #[serde(default)]
    pub probes: Option<u32>,
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub interval: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpPoolSettings {
    #[serde(default)]
    pub http1_max_pending_requests: Option<i64>,
    #[serde(default)]
    pub http2_max_requests: Option<i64>,
    #[serde(default)]
    pub max_requests_per_connection: Option<i64>,
    #[serde(default)]
    pub max_retries: Option<i64>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub h2_upgrade_policy: Option<String>,
    #[serde(default)]
    pub use_client_protocol: Option<bool>,
    #[serde(default)]
    pub max_concurrent_streams: Option<i64>,
}

/// Istio's `ClientTLSSettings`: TLS to the upstream. Every field of Istio's
/// is read so that one we do not implement is refused by name (in
/// `crate::upstream::tls`), not as an unknown field.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTlsSettings {
    /// `DISABLE` (Istio's default), `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub client_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    // Refused when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    #[serde(default)]
    pub simple: Option<String>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHash>,
    /// Not supported: refused with a located error.
    #[serde(default)]
    pub locality_lb_setting: Option<serde_yaml::Value>,
    #[serde(default)]
    pub warmup_duration_secs: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsistentHash {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub http_cookie: Option<HttpCookie>,
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
    /// Accepted for compatibility: the ring is Pingora's Ketama ring.
    #[serde(default)]
    pub ring_hash: Option<serde_yaml::Value>,
    #[serde(default)]
    pub maglev: Option<serde_yaml::Value>,
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCookie {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    /// Refused: the gateway does not mint cookies.
    #[serde(default)]
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(default)]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    #[serde(default)]
    pub min_health_percent: Option<u32>,
}

// --------------------------------------------------- RequestAuthentication

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRule {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// An inline JSON Web Key Set (a JSON string).
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    /// Header to receive the verified payload (base64url, as in the token).
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Claims read as space-delimited lists (`scope` and `permission` always are).
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
    /// Fetch timeout for `jwksUri` (Istio duration, e.g. `5s`).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: Option<String>,
}

// ----------------------------------------------------- AuthorizationPolicy

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// `ALLOW` (default), `DENY`, `AUDIT`; `CUSTOM` is refused.
    #[serde(default)]
    pub action: Option<String>,
    /// Absent or empty: the policy matches no request.
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    #[serde(default)]
    pub from: Vec<AuthzFrom>,
    #[serde(default)]
    pub to: Vec<AuthzTo>,
    #[serde(default)]
    pub when: Vec<AuthzCondition>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzFrom {
    pub source: AuthzSource,
}

/// `principals` and `namespaces` are read so that they can be refused with a
/// reason (they are mTLS peer identities, which an edge gateway's clients
/// do not have) rather than as unknown fields.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzSource {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzTo {
    pub operation: AuthzOperation,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzOperation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzCondition {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

// ---------------------------------------------------------------- Settings

/// `kind: Settings`, `apiVersion: claimgate/v1`: process settings. Every
/// field has a default (see `Default` below), so the kind is optional.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SettingsSpec {
    /// Admin listener (`/healthz`, `/ready`, `/metrics`). Default `127.0.0.1:15000`.
    pub admin: String,
    /// Worker threads per listener. Default 2.
    pub threads: usize,
    /// Allowed clock skew for `exp` and `nbf`, in seconds. Default 60.
    pub clock_skew_seconds: u64,
    /// How often every `jwksUri` is fetched again (Istio duration). Default `10m`.
    pub jwks_refresh_interval: String,
    /// Connect timeout to upstream endpoints (Istio duration). Default `5s`.
    pub upstream_connect_timeout: String,
    /// Verified tokens kept in the cache; 0 disables it. Default 10000.
    pub jwt_cache_size: usize,
    /// Largest token looked at, in bytes; a larger one is refused. Default 8192.
    pub max_token_bytes: usize,
    /// Proxies in front of the gateway whose `X-Forwarded-For` entries are
    /// trusted when finding the client address for `remoteIpBlocks` and
    /// `remote.ip` (Envoy's `xff_num_trusted_hops`). Default 0: the TCP peer.
    pub trusted_proxies: usize,
    /// A token with a `kid` not in its issuer's set triggers at most one
    /// refetch of that `jwksUri` per this interval (Istio duration). Default `10s`.
    pub jwks_refetch_cooldown: String,
    /// Where each last good remote key set is persisted and read back at
    /// start, so a restart during an identity-provider outage still
    /// validates tokens. Default: not persisted.
    pub jwks_cache_dir: Option<String>,
    /// A PEM file of CA certificates trusted for `https://` jwksUri, in
    /// addition to the system roots.
    pub jwks_ca_file: Option<String>,
    /// On SIGTERM (and after handing the sockets over in an upgrade), how
    /// long requests in flight get to finish before the process exits
    /// (Istio duration, whole seconds). Default `5s`.
    pub drain_period: String,
    /// The Unix socket a new process (`run --upgrade`) receives the
    /// listening sockets on from the old one. Default
    /// `/tmp/claimgate-upgrade.sock`.
    pub upgrade_socket: String,
    /// The access log: `off`, `stdout`, or a file path (reopened on
    /// SIGUSR1). Default `off`.
    pub access_log: String,
    /// How often each ServiceEntry `resolution: DNS` name is resolved again
    /// (Istio duration; Istio's `dnsRefreshRate`). Default `60s`.
    pub dns_refresh_rate: String,
    /// Where a Gateway server's `tls.credentialName` is found:
    /// `<credentialsDir>/<credentialName>/tls.crt` and `tls.key`, as
    /// Istio's secrets are laid out (and a DestinationRule's: `ca.crt`
    /// too). Default: `credentialName` is refused.
    pub credentials_dir: Option<String>,
    /// Active health checks of the endpoints of ServiceEntry hosts (Istio
    /// has none: its DestinationRule only ejects on failed requests).
    /// Default: none.
    pub health_checks: Vec<HealthCheckSpec>,
    /// How request paths are normalized before anything reads them and
    /// before they are forwarded (Istio's MeshConfig `pathNormalization`):
    /// `NONE`, `BASE`, `MERGE_SLASHES` or `DECODE_AND_MERGE_SLASHES`.
    /// Default `BASE`.
    pub path_normalization: String,
    /// The largest request head (target, header names and values), in KiB;
    /// a larger one is answered 431 (Envoy's `max_request_headers_kb`).
    /// Default 60.
    pub max_request_headers_kb: usize,
    /// The most request headers; more are answered 431 (Envoy's
    /// `max_headers_count`). Default 100.
    pub max_headers_count: usize,
    /// How long a client has from the first byte of a request head to its
    /// end (Envoy's `request_headers_timeout`; Istio duration). Default `10s`.
    pub request_headers_timeout: String,
    /// A request whose client neither sends nor reads for this long is
    /// ended, and its upstream connection freed (Envoy's
    /// `stream_idle_timeout`; Istio duration). Default `300s`.
    pub stream_idle_timeout: String,
    /// Keep a client's `x-request-id` instead of writing a new one (Envoy's
    /// `preserve_external_request_id`). Default false.
    pub preserve_external_request_id: bool,
}

impl Default for SettingsSpec {
    fn default() -> Self {
        SettingsSpec {
            admin: "127.0.0.1:15000".to_string(),
            threads: 2,
            clock_skew_seconds: 60,
            jwks_refresh_interval: "10m".to_string(),
            upstream_connect_timeout: "5s".to_string(),
            jwt_cache_size: 10_000,
            max_token_bytes: 8192,
            trusted_proxies: 0,
            jwks_refetch_cooldown: "10s".to_string(),
            jwks_cache_dir: None,
            jwks_ca_file: None,
            drain_period: "5s".to_string(),
            upgrade_socket: "/tmp/claimgate-upgrade.sock".to_string(),
            access_log: "off".to_string(),
            dns_refresh_rate: "60s".to_string(),
            credentials_dir: None,
            health_checks: Vec::new(),
            path_normalization: "BASE".to_string(),
            max_request_headers_kb: 60,
            max_headers_count: 100,
            request_headers_timeout: "10s".to_string(),
            stream_idle_timeout: "300s".to_string(),
            preserve_external_request_id: false,
        }
    }
}

/// One `Settings.healthChecks[]` entry: which endpoints are checked, how
/// often and how. Neither `http` nor `tcp`: a TCP connect.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// A ServiceEntry host, as a DestinationRule names it: a short name is
    /// qualified with `namespace` (`<host>.<namespace>.svc.cluster.local`).
    pub host: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// One of the ServiceEntry's `ports[].number`. Default: every port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Istio duration between two checks of an endpoint. Default `5s`.
    #[serde(default = "default_health_interval")]
    pub interval: String,
    /// Istio duration a check may take (connect, request and answer).
    /// Default `1s`.
    #[serde(default = "default_health_timeout")]
    pub timeout: String,
    /// Failed checks in a row that take an endpoint out. Default 2.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that bring it back. Default 1.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default)]
    pub http: Option<HttpHealthCheckSpec>,
    #[serde(default)]
    pub tcp: Option<TcpHealthCheckSpec>,
}

fn default_health_interval() -> String {
    "5s".to_string()
}

fn default_health_timeout() -> String {
    "1s".to_string()
}

fn default_unhealthy_threshold() -> u32 {
    2
}

fn default_healthy_threshold() -> u32 {
    1
}

/// An HTTP check: `GET path`, passed by an expected status (Envoy's
/// `HttpHealthCheck`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpHealthCheckSpec {
    pub path: String,
    /// The `Host` header. Default: the ServiceEntry host.
    #[serde(default)]
    pub host: Option<String>,
    /// Envoy's `expected_statuses`: half-open ranges `[start, end)`.
    /// Default: 200 only.
    #[serde(default)]
    pub expected_statuses: Vec<StatusRange>,
}

/// Envoy's `Int64Range` of statuses: `start` included, `end` excluded.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRange {
    pub start: u32,
    pub end: u32,
}

/// A TCP check: the endpoint accepts a connection (`tcp: {}`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheckSpec {}
