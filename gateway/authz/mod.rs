//! AuthorizationPolicy: compiled once (`compile/authz.rs`), evaluated as Istio evaluates it.
//! Any matching DENY denies; otherwise, when there are ALLOW policies, one
//! must match; with none, the request is allowed. AUDIT policies never
//! change the decision; they are only reported.

mod ip;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use prometheus::IntCounter;

pub use ip::Cidr;

use crate::jwt::claims::{ClaimPath, ClaimView};

/// What a policy looks at in a request.
pub struct AuthzRequest<'r> {
    pub method: &'r str,
    /// The path without the query string.
    pub path: &'r str,
    /// `Host` without its port, lower case.
    pub host: &'r str,
    /// The listener port the request arrived on.
    pub port: u16,
    pub headers: &'r HeaderMap,
    /// The TCP peer.
    pub source_ip: Option<IpAddr>,
    /// The client as trusted `X-Forwarded-For` entries tell it (else the peer).
    pub remote_ip: Option<IpAddr>,
    /// `iss/sub` of the verified token.
    pub principal: Option<&'r str>,
    pub audiences: &'r [String],
    pub claims: Option<ClaimView<'r>>,
}

/// Istio's value patterns: exact, `prefix*`, `*suffix`, and `*` (present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Any,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let pattern = if text == "*" {
            Pattern::Any
        } else if let Some(prefix) = text.strip_suffix('*') {
            Pattern::Prefix(prefix.to_string())
        } else if let Some(suffix) = text.strip_prefix('*') {
            Pattern::Suffix(suffix.to_string())
        } else {
            Pattern::Exact(text.to_string())
        };
        let inner = match &pattern {
            Pattern::Exact(s) | Pattern::Prefix(s) | Pattern::Suffix(s) => s.as_str(),
            Pattern::Any => "",
        };
        if inner.contains('*') {
            return Err(format!(
                "`{text}`: `*` is allowed only as a prefix or a suffix"
            ));
        }
        Ok(pattern)
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(e) => value == e,
            Pattern::Prefix(p) => value.starts_with(p.as_str()),
            Pattern::Suffix(s) => value.ends_with(s.as_str()),
            Pattern::Any => !value.is_empty(),
        }
    }

    fn matches_ignore_case(&self, value: &str) -> bool {
        let fold = |s: &str, v: &str| s.eq_ignore_ascii_case(v);
        match self {
            Pattern::Exact(e) => fold(e, value),
            Pattern::Prefix(p) => value.get(..p.len()).is_some_and(|h| fold(p, h)),
            Pattern::Suffix(s) => {
                value.len() >= s.len()
                    && value
                        .get(value.len() - s.len()..)
                        .is_some_and(|t| fold(s, t))
            }
            Pattern::Any => !value.is_empty(),
        }
    }
}

/// As written in the policy: `exact`, `prefix*`, `*suffix`, `*`.
impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(e) => f.write_str(e),
            Pattern::Prefix(p) => write!(f, "{p}*"),
            Pattern::Suffix(s) => write!(f, "*{s}"),
            Pattern::Any => f.write_str("*"),
        }
    }
}

/// The attribute a check reads.
#[derive(Debug, Clone)]
pub(crate) enum Attr {
    RequestPrincipal,
    SourceIp,
    RemoteIp,
    Host,
    Port,
    Method,
    Path,
    Audience,
    Presenter,
    Claim(ClaimPath),
    Header(HeaderName),
}

#[derive(Debug, Clone)]
pub(crate) enum Values {
    Patterns(Vec<Pattern>),
    Blocks(Vec<Cidr>),
    Ports(Vec<u16>),
}

impl fmt::Display for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
            f.write_str("[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "\"{item}\"")?;
            }
            f.write_str("]")
        }
        match self {
            Values::Patterns(p) => list(f, p),
            Values::Blocks(b) => list(f, b),
            Values::Ports(p) => list(f, p),
        }
    }
}

/// One field of a rule: does any of its values match the attribute?
/// `negate` for the `not*` forms and `notValues`.
#[derive(Debug, Clone)]
pub struct Check {
    pub(crate) attr: Attr,
    pub(crate) values: Values,
    pub(crate) negate: bool,
}

/// The field as the policy names it: `paths ["/admin*"]`,
/// `notRequestPrincipals ["*"]`, `request.auth.claims[groups] values ["admin"]`.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = |name: &str| -> String {
            if self.negate {
                let mut chars = name.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase());
                format!(
                    "not{}{}",
                    first.map(String::from).unwrap_or_default(),
                    chars.as_str()
                )
            } else {
                name.to_string()
            }
        };
        let key = |f: &mut fmt::Formatter<'_>, key: &dyn fmt::Display| {
            let values = if self.negate { "notValues" } else { "values" };
            write!(f, "{key} {values} {}", self.values)
        };
        match &self.attr {
            Attr::RequestPrincipal => write!(f, "{} {}", field("requestPrincipals"), self.values),
            Attr::SourceIp => write!(f, "{} {}", field("ipBlocks"), self.values),
            Attr::RemoteIp => write!(f, "{} {}", field("remoteIpBlocks"), self.values),
            Attr::Host => write!(f, "{} {}", field("hosts"), self.values),
            Attr::Port => write!(f, "{} {}", field("ports"), self.values),
            Attr::Method => write!(f, "{} {}", field("methods"), self.values),
            Attr::Path => write!(f, "{} {}", field("paths"), self.values),
            Attr::Audience => key(f, &"request.auth.audiences"),
            Attr::Presenter => key(f, &"request.auth.presenter"),
            Attr::Claim(path) => {
                let brackets: String = path.segments().iter().map(|s| format!("[{s}]")).collect();
                key(f, &format_args!("request.auth.claims{brackets}"))
            }
            Attr::Header(name) => key(f, &format_args!("request.headers[{name}]")),
        }
    }
}

impl Check {
    fn holds(&self, req: &AuthzRequest<'_>) -> bool {
        self.any_matches(req) != self.negate
    }

    fn any_matches(&self, req: &AuthzRequest<'_>) -> bool {
        match (&self.attr, &self.values) {
            (Attr::SourceIp, Values::Blocks(b)) => req
                .source_ip
                .is_some_and(|ip| b.iter().any(|c| c.contains(ip))),
            (Attr::RemoteIp, Values::Blocks(b)) => req
                .remote_ip
                .is_some_and(|ip| b.iter().any(|c| c.contains(ip))),
            (Attr::Port, Values::Ports(p)) => p.contains(&req.port),
            (Attr::Host, Values::Patterns(p)) => p.iter().any(|p| p.matches_ignore_case(req.host)),
            (Attr::Method, Values::Patterns(p)) => p.iter().any(|p| p.matches(req.method)),
            (Attr::Path, Values::Patterns(p)) => p.iter().any(|p| p.matches(req.path)),
            (Attr::RequestPrincipal, Values::Patterns(p)) => req
                .principal
                .is_some_and(|v| p.iter().any(|p| p.matches(v))),
            (Attr::Audience, Values::Patterns(p)) => {
                req.audiences.iter().any(|a| p.iter().any(|p| p.matches(a)))
            }
            (Attr::Presenter, Values::Patterns(p)) => req
                .claims
                .and_then(|c| c.claims.get("azp"))
                .and_then(|v| v.as_str())
                .is_some_and(|v| p.iter().any(|p| p.matches(v))),
            (Attr::Claim(path), Values::Patterns(p)) => req
                .claims
                .is_some_and(|c| path.any_value(c, |v| p.iter().any(|p| p.matches(v)))),
            (Attr::Header(name), Values::Patterns(p)) => req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| p.iter().any(|p| p.matches(v))),
            _ => false,
        }
    }
}

/// The first check of `checks` that does not hold (`None`: all hold).
fn first_failing<'c>(checks: &'c [Check], req: &AuthzRequest<'_>) -> Option<&'c Check> {
    checks.iter().find(|c| !c.holds(req))
}

/// When entries are given and none holds: the first failing check of each.
fn none_holds<'c>(
    entries: &'c [Vec<Check>],
    req: &AuthzRequest<'_>,
) -> Option<Vec<(usize, &'c Check)>> {
    let failing: Vec<(usize, &Check)> = entries
        .iter()
        .enumerate()
        .map(|(i, checks)| first_failing(checks, req).map(|c| (i, c)))
        .collect::<Option<_>>()?;
    (!failing.is_empty()).then_some(failing)
}

/// A rule: any of its sources, any of its operations, all of its conditions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rule {
    pub(crate) from: Vec<Vec<Check>>,
    pub(crate) to: Vec<Vec<Check>>,
    pub(crate) when: Vec<Check>,
}

impl Rule {
    fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        let all = |checks: &Vec<Check>| first_failing(checks, req).is_none();
        (self.from.is_empty() || self.from.iter().any(all))
            && (self.to.is_empty() || self.to.iter().any(all))
            && first_failing(&self.when, req).is_none()
    }

    /// Why the rule does not match, in the order `matches` reads it; `None`
    /// when it matches. For `explain`, never on the request path.
    fn miss(&self, req: &AuthzRequest<'_>) -> Option<RuleMiss<'_>> {
        if let Some(failing) = none_holds(&self.from, req) {
            return Some(RuleMiss::From(failing));
        }
        if let Some(failing) = none_holds(&self.to, req) {
            return Some(RuleMiss::To(failing));
        }
        first_failing(&self.when, req).map(RuleMiss::When)
    }
}

/// Why a rule did not match: the first part that failed, with the first
/// failing check of each of its entries.
#[derive(Debug)]
pub enum RuleMiss<'p> {
    /// No `from[]` source held: (index, its first failing check) for each.
    From(Vec<(usize, &'p Check)>),
    /// No `to[]` operation held.
    To(Vec<(usize, &'p Check)>),
    /// A `when` condition did not hold.
    When(&'p Check),
}

impl fmt::Display for RuleMiss<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = |f: &mut fmt::Formatter<'_>, part: &str, failing: &[(usize, &Check)]| {
            for (n, (i, check)) in failing.iter().enumerate() {
                if n > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "{part}[{i}] {check} does not hold")?;
            }
            Ok(())
        };
        match self {
            RuleMiss::From(failing) => entries(f, "from", failing),
            RuleMiss::To(failing) => entries(f, "to", failing),
            RuleMiss::When(check) => write!(f, "when {check} does not hold"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Audit,
}

/// A compiled AuthorizationPolicy, with its metric counter.
#[derive(Debug)]
pub struct Policy {
    /// `namespace/name`: bounded, from config.
    pub name: Arc<str>,
    pub action: Action,
    pub(crate) rules: Vec<Rule>,
    /// `claimgate_authz_decisions_total{policy, result}` for this policy's action.
    pub(crate) counter: IntCounter,
}

impl Policy {
    /// An empty rule list matches nothing; `rules: [{}]` matches everything.
    fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        self.first_matching_rule(req).is_some()
    }

    /// The index of the first rule that matches (`matches` is this).
    pub fn first_matching_rule(&self, req: &AuthzRequest<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(req))
    }

    /// For each rule, why it does not match (`None`: it matches).
    pub fn rule_misses(&self, req: &AuthzRequest<'_>) -> Vec<Option<RuleMiss<'_>>> {
        self.rules.iter().map(|r| r.miss(req)).collect()
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policy that decided, when one did (a DENY that matched, or the
    /// ALLOW that matched). A denial because no ALLOW matched has none.
    pub policy: Option<Arc<str>>,
    /// AUDIT policies that matched.
    pub audited: Vec<Arc<str>>,
}

/// Every policy that applies to the gateway.
#[derive(Debug, Default)]
pub struct Authorizer {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
    /// Denials because no ALLOW policy matched.
    no_allow_matched: Option<IntCounter>,
}

impl Authorizer {
    pub fn new(policies: Vec<Policy>) -> Authorizer {
        let mut a = Authorizer::default();
        for p in policies {
            match p.action {
                Action::Deny => a.deny.push(p),
                Action::Allow => a.allow.push(p),
                Action::Audit => a.audit.push(p),
            }
        }
        if !a.allow.is_empty() {
            a.no_allow_matched = Some(crate::metrics::get().authz_decision("", "deny"));
        }
        a
    }

    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty() && self.audit.is_empty()
    }

    /// Every policy, in the order `authorize` reads them: DENY, ALLOW, AUDIT.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.deny.iter().chain(&self.allow).chain(&self.audit)
    }

    pub fn authorize(&self, req: &AuthzRequest<'_>) -> Decision {
        let audited: Vec<Arc<str>> = self
            .audit
            .iter()
            .filter(|p| p.matches(req))
            .map(|p| p.name.clone())
            .collect();
        if let Some(deny) = self.deny.iter().find(|p| p.matches(req)) {
            return Decision {
                allowed: false,
                policy: Some(deny.name.clone()),
                audited,
            };
        }
        if self.allow.is_empty() {
            return Decision {
                allowed: true,
                policy: None,
                audited,
            };
        }
        match self.allow.iter().find(|p| p.matches(req)) {
            Some(allow) => Decision {
                allowed: true,
                policy: Some(allow.name.clone()),
                audited,
            },
            None => Decision {
                allowed: false,
                policy: None,
                audited,
            },
        }
    }

    /// Counts a decision (once per request, from the logging phase).
    pub fn record(&self, decision: &Decision) {
        for name in &decision.audited {
            if let Some(p) = self.audit.iter().find(|p| p.name == *name) {
                p.counter.inc();
            }
        }
        match &decision.policy {
            Some(name) => {
                let list = if decision.allowed {
                    &self.allow
                } else {
                    &self.deny
                };
                if let Some(p) = list.iter().find(|p| p.name == *name) {
                    p.counter.inc();
                }
            }
            None if !decision.allowed => {
                if let Some(c) = &self.no_allow_matched {
                    c.inc();
                }
            }
            None => {}
        }
    }
}

/// The client address for `remote.ip`: with `trusted` proxies in front,
/// the entry that many hops from the right of `X-Forwarded-For` (the peer
/// counting as the last hop); the peer itself when `trusted` is 0 or the
/// header is shorter than that.
pub fn remote_ip(headers: &HeaderMap, peer: Option<IpAddr>, trusted: usize) -> Option<IpAddr> {
    if trusted == 0 {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // hops ++ [peer]: the client is `trusted` entries left of the end.
    if trusted > hops.len() {
        return peer;
    }
    hops[hops.len() - trusted].parse().ok().or(peer)
}

#[cfg(test)]
mod tests;
