//! The route table one listener serves: virtual hosts by `Host`, and in each
//! the ordered HTTP routes whose first match wins.

mod matchers;

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

pub use crate::jwt::claims::{ClaimPath, ClaimView, CLAIM_PREFIX};
pub use matchers::StringMatcher;

/// What a route looks at in a request.
pub struct RequestView<'r> {
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
#[derive(Debug, Default, Clone)]
pub struct MatchRule {
    pub name: Option<String>,
    pub conditions: Vec<Condition>,
}

impl MatchRule {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.conditions.iter().all(|c| c.holds(req))
    }
}

/// An HTTP route: any of its `match` entries (none: every request), and
/// the cluster it sends to.
#[derive(Debug, Clone)]
pub struct Route {
    /// `route name` or `<namespace>/<virtualservice>#<index>`: bounded, from config.
    pub name: Arc<str>,
    pub matches: Vec<MatchRule>,
    /// Index into the snapshot's clusters.
    pub cluster: usize,
}

impl Route {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(req))
    }
}

/// The virtual hosts of one listener.
#[derive(Debug, Default, Clone)]
pub struct HostTable {
    exact: HashMap<String, Vec<Route>>,
    /// `*.example.com` as (`.example.com`, routes), longest suffix first.
    suffixes: Vec<(String, Vec<Route>)>,
    any: Option<Vec<Route>>,
}

impl HostTable {
    /// Adds routes under a host pattern (`*`, `*.example.com` or exact), after
    /// any routes the pattern already has.
    pub fn add(&mut self, host: &str, routes: impl IntoIterator<Item = Route>) {
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

    /// The routes of the most specific virtual host for `host` (lower case,
    /// without port): exact, then the longest wildcard suffix, then `*`.
    pub fn routes_for(&self, host: &str) -> &[Route] {
        if let Some(routes) = self.exact.get(host) {
            return routes;
        }
        if let Some((_, routes)) = self
            .suffixes
            .iter()
            .find(|(s, _)| host.ends_with(s.as_str()))
        {
            return routes;
        }
        self.any.as_deref().unwrap_or(&[])
    }

    /// The first route that matches.
    pub fn select(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.routes_for(req.authority)
            .iter()
            .find(|r| r.matches(req))
    }

    pub fn hosts(&self) -> impl Iterator<Item = (&str, &[Route])> {
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

    fn route(name: &str) -> Route {
        Route {
            name: name.into(),
            matches: Vec::new(),
            cluster: 0,
        }
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
            method: "GET",
            path: "/headers?access_token=x",
            authority: "h",
            headers: &headers,
            claims: None,
        };
        assert!(c.holds(&req));
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
