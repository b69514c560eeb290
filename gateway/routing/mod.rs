//! The route table one listener serves: virtual hosts by `Host`, and in each
//! the ordered HTTP routes whose first match wins.

mod cors;
mod headers;
mod local;
mod matchers;
mod retry;
mod rewrite;
mod weighted;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

pub use crate::jwt::claims::{ClaimPath, ClaimView, CLAIM_PREFIX};
pub use cors::{Cors, CorsVerdict};
pub use headers::{operation_name, operation_value, HeaderOp, HeaderOps};
pub use local::{DirectResponse, Redirect, RedirectPort};
pub use matchers::StringMatcher;
pub use retry::{Failure, RetryOn, RetryPolicy, MAX_RETRIES};
pub use rewrite::{PathRewrite, UriSpan};
pub use weighted::WeightedPicker;

use crate::metrics::RouteMetrics;

/// What a route looks at in a request.
pub struct RequestView<'r> {
    /// `http` (listeners serve plain HTTP).
    pub scheme: &'r str,
    /// The port of the listener the request arrived on.
    pub port: u16,
    pub method: &'r str,
    /// Path and query, as received.
    pub path: &'r str,
    /// `Host` without its port.
    pub authority: &'r str,
    pub headers: &'r HeaderMap,
    /// The validated token's claims; `None` without a valid token.
    pub claims: Option<ClaimView<'r>>,
}

/// One condition on a request, from a `match` entry.
#[derive(Debug, Clone)]
pub enum Condition {
    Uri {
        matcher: StringMatcher,
        ignore_case: bool,
    },
    Method(StringMatcher),
    Authority(StringMatcher),
    Scheme(StringMatcher),
    /// The listener port.
    Port(u16),
    /// The first value of a query parameter, as sent.
    QueryParam(String, StringMatcher),
    Header(HeaderName, StringMatcher),
    WithoutHeader(HeaderName, StringMatcher),
    Claim(ClaimPath, StringMatcher),
    WithoutClaim(ClaimPath, StringMatcher),
}

impl Condition {
    fn holds(&self, req: &RequestView<'_>) -> bool {
        match self {
            Condition::Uri {
                matcher,
                ignore_case,
            } => {
                // Istio's `uri` matches the path without the query string.
                let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
                if *ignore_case {
                    matcher.matches_ignore_case(path)
                } else {
                    matcher.matches(path)
                }
            }
            Condition::Method(m) => m.matches(req.method),
            Condition::Authority(m) => m.matches(req.authority),
            Condition::Scheme(m) => m.matches(req.scheme),
            Condition::Port(port) => req.port == *port,
            Condition::QueryParam(name, m) => {
                query_param(req.path, name).is_some_and(|v| m.matches(v))
            }
            Condition::Header(name, m) => header_matches(req.headers, name, m),
            Condition::WithoutHeader(name, m) => !header_matches(req.headers, name, m),
            Condition::Claim(path, m) => req
                .claims
                .is_some_and(|c| path.any_value(c, |v| m.matches(v))),
            Condition::WithoutClaim(path, m) => !req
                .claims
                .is_some_and(|c| path.any_value(c, |v| m.matches(v))),
        }
    }
}

/// As the configuration spells it: `uri: prefix "/headers"`,
/// `@request.auth.claims.groups: exact "group1"`.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Uri {
                matcher,
                ignore_case,
            } => {
                write!(f, "uri: {matcher}")?;
                if *ignore_case {
                    f.write_str(" (ignoreUriCase)")?;
                }
                Ok(())
            }
            Condition::Method(m) => write!(f, "method: {m}"),
            Condition::Authority(m) => write!(f, "authority: {m}"),
            Condition::Scheme(m) => write!(f, "scheme: {m}"),
            Condition::Port(port) => write!(f, "port: {port}"),
            Condition::QueryParam(name, m) => write!(f, "query parameter {name}: {m}"),
            Condition::Header(name, m) => write!(f, "header {name}: {m}"),
            Condition::WithoutHeader(name, m) => write!(f, "without header {name}: {m}"),
            Condition::Claim(path, m) => write!(f, "{path}: {m}"),
            Condition::WithoutClaim(path, m) => write!(f, "without {path}: {m}"),
        }
    }
}

/// The first value of query parameter `name` in `path` (`?a=1&b`: `a` is
/// `1`, `b` is empty), as sent: Envoy's route matching neither
/// percent-decodes nor reads `+` as a space.
pub fn query_param<'p>(path: &'p str, name: &str) -> Option<&'p str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            None if pair == name => Some(""),
            _ => None,
        })
}

/// Envoy sees a header sent several times as one value joined by `,`.
fn header_matches(headers: &HeaderMap, name: &HeaderName, m: &StringMatcher) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let Some(rest) = values.next() else {
        return first.to_str().is_ok_and(|v| m.matches(v));
    };
    let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for v in std::iter::once(rest).chain(values) {
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    m.matches(&joined)
}

/// One `match` entry: all of its conditions hold.
#[derive(Debug, Clone)]
pub struct MatchRule {
    pub name: Option<String>,
    pub conditions: Vec<Condition>,
    /// What a prefix rewrite replaces when this entry matched.
    pub span: UriSpan,
}

impl Default for MatchRule {
    fn default() -> Self {
        MatchRule {
            name: None,
            conditions: Vec::new(),
            span: UriSpan::Prefix(1),
        }
    }
}

impl MatchRule {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.first_failing(req).is_none()
    }

    /// The first condition that does not hold (`None`: the entry matches).
    /// `matches` is this, so `explain` reports exactly what routing decided.
    pub fn first_failing(&self, req: &RequestView<'_>) -> Option<&Condition> {
        self.conditions.iter().find(|c| !c.holds(req))
    }
}

/// An HTTP route: any of its `match` entries (none: every request), and
/// what the gateway does with a request it matches. Istio turns each
/// `match` entry of an `http[]` route into a route of its own, and so does
/// the compiler: a compiled route has at most one entry.
#[derive(Debug)]
pub struct Route {
    /// `<namespace>/<virtualservice>/<name>`, or `.../http[<index>]` for an
    /// unnamed route: bounded, from config.
    pub name: Arc<str>,
    /// Which `match` entry of its `http[]` route this is, of how many.
    pub entry: Option<(usize, usize)>,
    pub matches: Vec<MatchRule>,
    pub action: Action,
    /// The counters of requests the route answers itself (cluster `(none)`).
    pub metrics: Arc<RouteMetrics>,
    /// `headers.response` of the route, for the answers it gives itself.
    pub response_headers: HeaderOps,
    /// `corsPolicy`.
    pub cors: Option<Box<Cors>>,
}

impl Route {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.matching(req).is_some()
    }

    /// Whether the route is on listener `port`: Istio leaves a route whose
    /// `match.port` is another port out of that listener's routes.
    pub fn on_port(&self, port: u16) -> bool {
        self.matches.iter().all(|m| {
            m.conditions
                .iter()
                .all(|c| !matches!(c, Condition::Port(p) if *p != port))
        })
    }

    /// Istio's `IsCatchAllRoute`, on listener `port`: the path condition is
    /// the prefix `/` or the regex `.*` (or there is none), and nothing else
    /// is looked at (headers, method, authority, scheme, query, claims).
    pub fn catch_all(&self, port: u16) -> bool {
        self.matches.iter().all(|m| {
            m.conditions.iter().all(|c| match c {
                Condition::Port(p) => *p == port,
                Condition::Uri { matcher, .. } => match matcher {
                    StringMatcher::Prefix(p) => p == "/",
                    StringMatcher::Regex(r) => r.as_str() == "^(?:.*)$",
                    _ => false,
                },
                _ => false,
            })
        })
    }

    /// What the first matching entry matched of the path (Envoy's prefix
    /// `/` for a route without entries); `None` when no entry matches.
    pub fn matching(&self, req: &RequestView<'_>) -> Option<UriSpan> {
        if self.matches.is_empty() {
            return Some(UriSpan::Prefix(1));
        }
        self.matches.iter().find(|m| m.matches(req)).map(|m| m.span)
    }
}

/// What a route does with the requests it matches.
#[derive(Debug, Clone)]
pub enum Action {
    /// Proxy to one of the destinations.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed status and body.
    Direct(DirectResponse),
}

impl Action {
    /// Every request to one cluster, counted in `metrics`.
    pub fn to_cluster(cluster: usize, metrics: Arc<RouteMetrics>) -> Action {
        let destination = RouteDestination {
            cluster,
            weight: 100,
            metrics,
            authority: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        };
        let picker = WeightedPicker::new(&[100]).unwrap_or_else(|| unreachable!());
        Action::Forward(Forward::new(vec![destination], picker))
    }
}

/// `route[]`: the destinations and how requests are split across them,
/// and what is changed in the request on the way. A clone shares the
/// split's counter (the routes of one `http[]` route's entries share it).
#[derive(Debug, Clone)]
pub struct Forward {
    pub destinations: Vec<RouteDestination>,
    picker: Arc<WeightedPicker>,
    /// `rewrite.uri` or `rewrite.uriRegexRewrite`.
    pub rewrite: Option<PathRewrite>,
    /// `timeout`: from the first attempt to the end of the response.
    pub timeout: Option<std::time::Duration>,
    /// `retries`; `None`: `attempts: 0`.
    pub retry: Option<RetryPolicy>,
    /// `mirror`/`mirrors`: copies of requests sent elsewhere.
    pub mirrors: Vec<Mirror>,
}

/// A mirror: a share of requests copied to a cluster, its answers dropped.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Index into the snapshot's clusters.
    pub cluster: usize,
    /// Requests mirrored, per million (Envoy's fractional percent).
    pub per_million: u32,
}

impl Forward {
    /// `destinations` with a picker over their weights.
    pub fn new(destinations: Vec<RouteDestination>, picker: WeightedPicker) -> Forward {
        Forward {
            destinations,
            picker: Arc::new(picker),
            rewrite: None,
            timeout: None,
            retry: None,
            mirrors: Vec::new(),
        }
    }

    /// The index of the destination for the next request, by the weighted
    /// split (always in `destinations`).
    pub fn pick_index(&self) -> usize {
        self.picker.pick()
    }

    /// Requests per full turn of the split, by destination.
    pub fn shares(&self) -> Vec<usize> {
        self.picker.shares(self.destinations.len())
    }
}

/// One `route[]` entry.
#[derive(Debug, Clone)]
pub struct RouteDestination {
    /// Index into the snapshot's clusters.
    pub cluster: usize,
    /// As configured (0 for a weight left out).
    pub weight: u64,
    /// The requests counters and duration histogram of (route, this cluster).
    pub metrics: Arc<RouteMetrics>,
    /// The `Host` sent upstream instead of the client's (`rewrite.authority`,
    /// or a `host` in `headers.request`).
    pub authority: Option<http::HeaderValue>,
    /// `headers.request` of the route and this destination, in Envoy's order.
    pub request_headers: HeaderOps,
    /// `headers.response` of the route and this destination, in Envoy's order.
    pub response_headers: HeaderOps,
}

/// The host pattern of a virtual host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualHost<'t> {
    /// `api.example.com`
    Exact(&'t str),
    /// `*.example.com`, held as its suffix `.example.com`.
    Wildcard(&'t str),
    /// `*`
    Any,
}

impl fmt::Display for VirtualHost<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtualHost::Exact(host) => write!(f, "{host} (exact)"),
            VirtualHost::Wildcard(suffix) => write!(f, "*{suffix} (wildcard)"),
            VirtualHost::Any => f.write_str("* (any host)"),
        }
    }
}

/// The virtual hosts of one listener.
#[derive(Debug, Default, Clone)]
pub struct HostTable {
    exact: HashMap<String, Vec<Arc<Route>>>,
    /// `*.example.com` as (`.example.com`, routes), longest suffix first.
    suffixes: Vec<(String, Vec<Arc<Route>>)>,
    any: Option<Vec<Arc<Route>>>,
    /// Some route has a `corsPolicy`.
    cors: bool,
}

impl HostTable {
    /// Adds routes under a host pattern (`*`, `*.example.com` or exact), after
    /// any routes the pattern already has.
    pub fn add(&mut self, host: &str, routes: impl IntoIterator<Item = Arc<Route>>) {
        let routes: Vec<Arc<Route>> = routes.into_iter().collect();
        self.cors |= routes.iter().any(|r| r.cors.is_some());
        let host = host.to_ascii_lowercase();
        let list = if host == "*" {
            self.any.get_or_insert_with(Vec::new)
        } else if let Some(suffix) = host.strip_prefix('*') {
            let at = match self.suffixes.iter().position(|(s, _)| *s == suffix) {
                Some(at) => at,
                None => {
                    self.suffixes.push((suffix.to_string(), Vec::new()));
                    self.suffixes
                        .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
                    self.suffixes
                        .iter()
                        .position(|(s, _)| *s == suffix)
                        .unwrap_or(0)
                }
            };
            &mut self.suffixes[at].1
        } else {
            self.exact.entry(host).or_default()
        };
        list.extend(routes);
    }

    /// Moves the catch-all routes of every virtual host to its end, the
    /// others keeping their order (Istio's `SortVHostRoutes`, applied once
    /// every VirtualService of the listener on `port` is added).
    pub fn sort_catch_alls(&mut self, port: u16) {
        let lists = self
            .exact
            .values_mut()
            .chain(self.suffixes.iter_mut().map(|(_, r)| r))
            .chain(self.any.iter_mut());
        for routes in lists {
            let (catch_all, specific): (Vec<_>, Vec<_>) =
                routes.drain(..).partition(|r| r.catch_all(port));
            routes.extend(specific);
            routes.extend(catch_all);
        }
    }

    /// Whether any route has a `corsPolicy` (else Origin is not looked at).
    pub fn has_cors(&self) -> bool {
        self.cors
    }

    /// The routes of the most specific virtual host for `host` (lower case,
    /// without port): exact, then the longest wildcard suffix, then `*`.
    pub fn routes_for(&self, host: &str) -> &[Arc<Route>] {
        self.virtual_host(host).map_or(&[], |(_, routes)| routes)
    }

    /// `routes_for`, saying which host pattern was chosen; `None` when no
    /// virtual host serves `host`.
    pub fn virtual_host(&self, host: &str) -> Option<(VirtualHost<'_>, &[Arc<Route>])> {
        if let Some((exact, routes)) = self.exact.get_key_value(host) {
            return Some((VirtualHost::Exact(exact), routes));
        }
        if let Some((suffix, routes)) = self
            .suffixes
            .iter()
            .find(|(s, _)| host.ends_with(s.as_str()))
        {
            return Some((VirtualHost::Wildcard(suffix), routes));
        }
        self.any.as_deref().map(|routes| (VirtualHost::Any, routes))
    }

    /// The first route that matches, and what its matching entry matched
    /// of the path.
    pub fn select(&self, req: &RequestView<'_>) -> Option<(&Arc<Route>, UriSpan)> {
        self.routes_for(req.authority)
            .iter()
            .find_map(|r| r.matching(req).map(|span| (r, span)))
    }

    pub fn hosts(&self) -> impl Iterator<Item = (&str, &[Arc<Route>])> {
        self.exact
            .iter()
            .map(|(h, r)| (h.as_str(), r.as_slice()))
            .chain(
                self.suffixes
                    .iter()
                    .map(|(s, r)| (s.as_str(), r.as_slice())),
            )
            .chain(self.any.iter().map(|r| ("*", r.as_slice())))
    }
}

/// `Host` (or `:authority`) without the port, lower-cased only if needed.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &h[1..]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> Arc<Route> {
        Arc::new(Route {
            name: name.into(),
            entry: None,
            matches: Vec::new(),
            action: Action::to_cluster(0, RouteMetrics::new(name, "c")),
            metrics: RouteMetrics::new(name, crate::metrics::NONE),
            response_headers: HeaderOps::default(),
            cors: None,
        })
    }

    #[test]
    fn the_most_specific_virtual_host_wins() {
        let mut t = HostTable::default();
        t.add("*", [route("any")]);
        t.add("*.example.com", [route("wild")]);
        t.add("*.api.example.com", [route("deeper")]);
        t.add("api.example.com", [route("exact")]);
        let first = |h: &str| t.routes_for(h).first().map(|r| r.name.to_string());
        assert_eq!(first("api.example.com").as_deref(), Some("exact"));
        assert_eq!(first("v1.api.example.com").as_deref(), Some("deeper"));
        assert_eq!(first("www.example.com").as_deref(), Some("wild"));
        assert_eq!(first("example.org").as_deref(), Some("any"));
    }

    #[test]
    fn the_virtual_host_says_which_pattern_was_chosen() {
        let mut t = HostTable::default();
        t.add("api.example.com", [route("exact")]);
        t.add("*.example.com", [route("wild")]);
        assert_eq!(
            t.virtual_host("api.example.com").map(|(h, _)| h),
            Some(VirtualHost::Exact("api.example.com"))
        );
        let (host, routes) = t.virtual_host("www.example.com").unwrap();
        assert_eq!(host.to_string(), "*.example.com (wildcard)");
        assert_eq!(&*routes[0].name, "wild");
        assert!(t.virtual_host("example.org").is_none());
        t.add("*", [route("any")]);
        assert_eq!(
            t.virtual_host("example.org").map(|(h, _)| h),
            Some(VirtualHost::Any)
        );
    }

    #[test]
    fn the_first_failing_condition_is_the_one_that_decided() {
        let claim = |name: &str| ClaimPath::from_header_name(name).unwrap().unwrap();
        let rule = MatchRule {
            name: None,
            span: UriSpan::Prefix(8),
            conditions: vec![
                Condition::Uri {
                    matcher: StringMatcher::Prefix("/headers".into()),
                    ignore_case: false,
                },
                Condition::Claim(
                    claim("@request.auth.claims.groups"),
                    StringMatcher::Exact("group1".into()),
                ),
            ],
        };
        let headers = HeaderMap::new();
        let mut req = RequestView {
            scheme: "http",
            port: 80,
            method: "GET",
            path: "/headers",
            authority: "h",
            headers: &headers,
            claims: None,
        };
        let failing = rule.first_failing(&req).map(|c| c.to_string());
        assert_eq!(
            failing.as_deref(),
            Some(r#"@request.auth.claims.groups: exact "group1""#)
        );
        assert!(!rule.matches(&req));
        req.path = "/ip";
        let failing = rule.first_failing(&req).map(|c| c.to_string());
        assert_eq!(failing.as_deref(), Some(r#"uri: prefix "/headers""#));
        let claims = serde_json::json!({"groups": ["group2", "group1"]});
        let claims = crate::jwt::ClaimSet::from(claims.as_object().unwrap().clone());
        req.path = "/headers?x=1";
        req.claims = Some(ClaimView {
            claims: &claims,
            space_delimited: &[],
        });
        assert!(rule.first_failing(&req).is_none());
        assert!(rule.matches(&req));
    }

    #[test]
    fn conditions_display_as_the_configuration_spells_them() {
        let sm = |exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>| {
            let m = crate::config::StringMatch {
                exact: exact.map(Into::into),
                prefix: prefix.map(Into::into),
                regex: regex.map(Into::into),
            };
            crate::compile::string_matcher(&m, true, false).unwrap()
        };
        let name = HeaderName::from_static("x-env");
        let claim = |n: &str| ClaimPath::from_header_name(n).unwrap().unwrap();
        for (condition, text) in [
            (
                Condition::Uri {
                    matcher: sm(None, Some("/api"), None),
                    ignore_case: true,
                },
                r#"uri: prefix "/api" (ignoreUriCase)"#,
            ),
            (
                Condition::Method(sm(None, None, Some("GET|HEAD"))),
                r#"method: regex "GET|HEAD""#,
            ),
            (
                Condition::Header(name.clone(), sm(None, None, None)),
                "header x-env: present",
            ),
            (
                Condition::WithoutHeader(name, sm(Some("dev"), None, None)),
                r#"without header x-env: exact "dev""#,
            ),
            (
                Condition::WithoutClaim(
                    claim("@request.auth.claims[a.b][c]"),
                    sm(Some("x"), None, None),
                ),
                r#"without @request.auth.claims[a.b][c]: exact "x""#,
            ),
            (
                Condition::Claim(
                    claim("@request.auth.claims.team.name"),
                    sm(Some("edge"), None, None),
                ),
                r#"@request.auth.claims.team.name: exact "edge""#,
            ),
        ] {
            assert_eq!(condition.to_string(), text);
        }
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
    }

    #[test]
    fn uri_conditions_ignore_the_query_string() {
        let c = Condition::Uri {
            matcher: StringMatcher::Exact("/headers".into()),
            ignore_case: false,
        };
        let headers = HeaderMap::new();
        let req = RequestView {
            scheme: "http",
            port: 80,
            method: "GET",
            path: "/headers?access_token=x",
            authority: "h",
            headers: &headers,
            claims: None,
        };
        assert!(c.holds(&req));
    }

    #[test]
    fn query_parameters_are_read_as_sent_first_value_first() {
        assert_eq!(query_param("/a?x=1&v=2&v=3", "v"), Some("2"));
        assert_eq!(query_param("/a?flag&v=", "flag"), Some(""));
        assert_eq!(query_param("/a?flag&v=", "v"), Some(""));
        assert_eq!(query_param("/a?v=a%20b", "v"), Some("a%20b"));
        assert_eq!(query_param("/a?vv=1", "v"), None);
        assert_eq!(query_param("/a", "v"), None);
        assert_eq!(query_param("/a?=1", ""), Some("1"));
    }

    #[test]
    fn a_repeated_header_matches_as_one_joined_value() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        let name = HeaderName::from_static("x-a");
        assert!(header_matches(
            &headers,
            &name,
            &StringMatcher::Exact("1,2".into())
        ));
        assert!(!header_matches(
            &headers,
            &name,
            &StringMatcher::Exact("1".into())
        ));
    }
}
