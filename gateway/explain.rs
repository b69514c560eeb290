//! `claimgate explain`: the decision trace of one request, offline.
//!
//! The configuration is loaded and compiled as `run` compiles it, and the
//! request is decided by the function the proxy calls, `request::decide`:
//! every decision printed is the one the gateway makes. The trace around it
//! (which condition failed, which key was tried) is recorded through
//! `decide`'s `Trace` hooks with the small trace functions beside the
//! deciding code (`MatchRule::first_failing`, `Policy::rule_misses`,
//! `KeySet::candidates`).
//! Nothing is fetched and no socket is opened: a rule's `jwksUri` is served
//! by `--jwks FILE`, or has no keys, as at a gateway's start.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, HOST};
use pingora::http::RequestHeader;
use serde_json::Value;

use crate::authz::{AuthzRequest, Decision as PolicyDecision};
use crate::compile::{self, Shared};
use crate::config::{self, Config, ConfigError};
use crate::jwt::authn::AuthnError;
use crate::jwt::{parse, Authenticated, KeySet, UnverifiedToken};
use crate::proxy::{listener_port, Rejection};
use crate::request::{self, request_host, Connection, Keys, Verdict};
use crate::routing::{
    Action, Condition, CorsVerdict, Forward, HostTable, RequestView, Route, UriSpan,
};
use crate::snapshot::Snapshot;

/// What to explain.
#[derive(Debug, Clone)]
pub struct Options {
    /// A YAML file or a folder, as for `run`.
    pub config: PathBuf,
    pub method: String,
    /// `http://host[:port]/path?query`: the port picks the listener, the host
    /// is the `Host` header (unless a `-H Host:` says otherwise).
    pub url: String,
    /// `name: value` request headers.
    pub headers: Vec<String>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A key set standing in for every `jwksUri`.
    pub jwks: Option<PathBuf>,
    /// Unix time for `exp` and `nbf`.
    pub now: u64,
    /// The client address (`source.ip`, and `remote.ip` without trusted proxies).
    pub peer: Option<IpAddr>,
}

/// Why no trace could be printed.
#[derive(Debug)]
pub enum Error {
    /// The configuration does not load or compile: every error, located.
    Config(Vec<ConfigError>),
    /// A bad argument.
    Usage(String),
}

/// The trace, as text.
pub fn explain(options: &Options) -> Result<String, Error> {
    let request = build_request(options)?;
    let jwks = match &options.jwks {
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|e| Error::Usage(format!("--jwks {}: {e}", path.display())))?;
            let keys = KeySet::from_json(&text)
                .map_err(|e| Error::Usage(format!("--jwks {}: {e}", path.display())))?;
            Some((path.as_path(), Arc::new(keys)))
        }
        None => None,
    };
    let (config, mut errors) = config::read(&options.config);
    let shared = Shared::default();
    let mut snapshot = None;
    if let Some(config) = &config {
        match compile::compile(config, &shared) {
            Ok(s) => snapshot = Some(s),
            Err(e) => errors.extend(e.0),
        }
    }
    let (Some(config), Some(snapshot), true) = (config, snapshot, errors.is_empty()) else {
        return Err(Error::Config(errors));
    };
    // Offline, the file stands in for every remote key set.
    let remote = shared.jwks.sources();
    if let Some((_, keys)) = &jwks {
        for source in &remote {
            source.slot.store(Some(keys.clone()));
        }
    }
    let trace = Trace {
        config: &config,
        snap: &snapshot,
        remote: &remote,
        jwks: jwks.as_ref().map(|(path, keys)| (*path, keys.keys.len())),
        options,
        out: String::new(),
        listener: String::new(),
        reached: Stage::Start,
    };
    Ok(trace.run(request))
}

/// The request, and the port its URL names.
struct Request {
    header: RequestHeader,
    port: u16,
    /// The URL's host, for choosing among listeners bound to several addresses.
    url_host: String,
}

fn build_request(options: &Options) -> Result<Request, Error> {
    let usage = |m: String| Error::Usage(m);
    let uri: http::Uri = options
        .url
        .parse()
        .map_err(|e| usage(format!("`{}` is not a URL: {e}", options.url)))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(usage(format!(
            "`{}` is not an absolute URL such as http://example.com/path",
            options.url
        )));
    };
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        other => return Err(usage(format!("scheme `{other}` is not http or https"))),
    };
    let port = authority.port_u16().unwrap_or(default_port);
    let method = http::Method::from_bytes(options.method.as_bytes())
        .map_err(|_| usage(format!("`{}` is not an HTTP method", options.method)))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut header = RequestHeader::build(method, path.as_bytes(), None)
        .map_err(|e| usage(format!("cannot build the request: {e}")))?;
    for h in &options.headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(usage(format!("-H `{h}`: expected `name: value`")));
        };
        append(&mut header, name.trim(), value.trim())?;
    }
    if let Some(token) = &options.token {
        append(
            &mut header,
            "authorization",
            &format!("Bearer {}", token.trim()),
        )?;
    }
    // As a client sends it: the URL's host, and its port when one was written.
    let url_host = authority.host().to_string();
    if header.headers.get(HOST).is_none() {
        let host = match authority.port() {
            Some(p) => format!("{url_host}:{p}"),
            None => url_host.clone(),
        };
        append(&mut header, "host", &host)?;
    }
    Ok(Request {
        header,
        port,
        url_host,
    })
}

fn append(header: &mut RequestHeader, name: &str, value: &str) -> Result<(), Error> {
    let usage = |m: String| Error::Usage(m);
    let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| usage(format!("`{name}` is not a valid header name")))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| usage(format!("the value of `{name}` is not a valid header value")))?;
    header
        .append_header(name, value)
        .map_err(|e| usage(e.to_string()))?;
    Ok(())
}

struct Trace<'a> {
    config: &'a Config,
    snap: &'a Snapshot,
    /// Every `jwksUri` source the rules use.
    remote: &'a [Arc<crate::jwks::KeySource>],
    /// `--jwks`: its path and how many usable keys it has.
    jwks: Option<(&'a Path, usize)>,
    options: &'a Options,
    out: String,
    /// The listener the request arrived on.
    listener: String,
    /// How far `decide` went.
    reached: Stage,
}

/// The steps of `request::decide`, as far as the trace saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Start,
    Prepared,
    Authenticated,
    Authorized,
    Routed,
}

/// Appends one line to the trace.
macro_rules! line {
    ($t:expr, $($arg:tt)*) => {{
        let _ = writeln!($t.out, $($arg)*);
    }};
}

impl Trace<'_> {
    fn run(mut self, mut request: Request) -> String {
        let req = &request.header;
        line!(self, "request: {} {}", req.method, self.options.url);
        for (name, value) in &req.headers {
            line!(
                self,
                "  {name}: {}",
                shorten(&String::from_utf8_lossy(value.as_bytes()))
            );
        }
        line!(
            self,
            "  time: {} (exp/nbf checks; --now sets it)",
            self.options.now
        );

        // Listener: the Gateway server bound to the URL's port.
        let Some(listener) = self.listener(&request) else {
            line!(
                self,
                "answer: no listener on port {}: the connection is refused",
                request.port
            );
            return self.out;
        };
        // The listener decides the scheme, as in the gateway: TLS when it
        // has certificates.
        let scheme = if self.snap.tls.certs.contains_key(&listener) {
            "https"
        } else {
            "http"
        };
        self.listener = listener.clone();
        let conn = Connection {
            listener: &listener,
            port: listener_port(&listener),
            scheme,
            peer: self.options.peer,
        };
        let snap = self.snap;
        let now = self.options.now;
        // Nothing in `decide` waits with `Keys::AsLoaded`: one poll ends it.
        let runtime = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                line!(self, "answer: cannot run the decision: {e}");
                return self.out;
            }
        };
        let judged = runtime.block_on(request::decide(
            snap,
            &conn,
            &mut request.header,
            now,
            Keys::AsLoaded,
            &mut self,
        ));
        let req = &request.header;
        match judged.verdict {
            Verdict::Reject(rejection) => {
                match self.reached {
                    Stage::Start => line!(self, "request: refused before it is judged"),
                    Stage::Prepared => {
                        line!(
                            self,
                            "authorization: not evaluated (refused at authentication)"
                        );
                        line!(self, "routes: not evaluated (refused at authentication)");
                    }
                    Stage::Authenticated => {
                        line!(self, "routes: not evaluated (refused by authorization)")
                    }
                    Stage::Authorized | Stage::Routed => {}
                }
                if self.reached == Stage::Routed && rejection == Rejection::NoRoute {
                    line!(self, "route: none matched");
                }
                line!(self, "answer: {}", answer(rejection));
            }
            Verdict::HttpsRedirect(location) => {
                line!(
                    self,
                    "answer: 301 to {location} (httpsRedirect: nothing else is read on plain HTTP)"
                );
            }
            Verdict::CorsPreflight(_) => line!(self, "answer: 200 CORS preflight"),
            Verdict::Redirect { location, code } => {
                let route = judged.route.as_ref().map_or("", |(r, _)| &*r.name);
                line!(self, "route: {route}");
                line!(
                    self,
                    "answer: {code} redirect by route {route}, Location: {location}"
                );
            }
            Verdict::Direct => {
                if let Some((route, _)) = &judged.route {
                    line!(self, "route: {}", route.name);
                    if let Action::Direct(direct) = &route.action {
                        line!(
                            self,
                            "answer: {} direct response by route {} ({} byte body)",
                            direct.status,
                            route.name,
                            direct.body.len()
                        );
                    }
                }
            }
            Verdict::Forward { .. } => {
                if let Some((route, span)) = &judged.route {
                    line!(self, "route: {}", route.name);
                    if let Action::Forward(forward) = &route.action {
                        self.forward(req, judged.authn.as_ref(), route, forward, *span);
                    }
                }
            }
        }
        self.out
    }

    /// The virtual host of the request's host on the listener.
    fn virtual_host(&mut self, table: &HostTable, host: &str) {
        match table.virtual_host(host) {
            Some((pattern, routes)) => line!(
                self,
                "virtual host: {host:?} matched {pattern}: {} route(s)",
                routes.len()
            ),
            None => {
                let mut known: Vec<String> = table
                    .hosts()
                    .map(|(h, _)| {
                        if h.starts_with('.') {
                            format!("*{h}")
                        } else {
                            h.to_string()
                        }
                    })
                    .collect();
                known.sort();
                line!(
                    self,
                    "virtual host: none for {host:?} (this listener serves: {})",
                    if known.is_empty() {
                        "nothing".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            }
        }
    }

    /// The destination(s) of a forwarding route and the answer.
    fn forward(
        &mut self,
        req: &RequestHeader,
        authn: Option<&Authenticated>,
        route: &Route,
        forward: &Forward,
        span: UriSpan,
    ) {
        let destinations = &forward.destinations;
        if let Some(rewrite) = &forward.rewrite {
            let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
            line!(
                self,
                "upstream request: path rewritten to {:?}",
                shorten(&rewrite.apply(path, span))
            );
        }
        let mut limits = Vec::new();
        if let Some(timeout) = forward.timeout {
            limits.push(format!("timeout {timeout:?}"));
        }
        match &forward.retry {
            Some(r) => {
                let per_try = r
                    .per_try_timeout
                    .map_or(String::new(), |t| format!(", {t:?} per try"));
                limits.push(format!("up to {} retries{per_try}", r.retries));
            }
            None => limits.push("no retries".to_string()),
        }
        line!(self, "upstream: {}", limits.join(", "));
        if let Some(authority) = destinations.first().and_then(|d| d.authority.as_ref()) {
            line!(
                self,
                "upstream request: Host: {}",
                String::from_utf8_lossy(authority.as_bytes())
            );
        }
        let clusters: Vec<_> = destinations
            .iter()
            .filter_map(|d| self.snap.clusters.get(d.cluster))
            .collect();
        if clusters.len() != destinations.len() {
            line!(self, "answer: {}", answer(Rejection::NoHealthyUpstream));
            return;
        }
        if let [cluster] = clusters.as_slice() {
            let endpoints: Vec<String> = cluster.endpoints.iter().map(|e| e.to_string()).collect();
            line!(
                self,
                "destination: {} (endpoints, round robin: {})",
                cluster.name,
                if endpoints.is_empty() {
                    "none".to_string()
                } else {
                    endpoints.join(", ")
                }
            );
            if endpoints.is_empty() {
                line!(self, "answer: {}", answer(Rejection::NoHealthyUpstream));
                return;
            }
            self.upstream_request(req, authn);
            for (side, ops) in [
                ("upstream request", &destinations[0].request_headers),
                ("response", &destinations[0].response_headers),
            ] {
                if !ops.is_empty() {
                    let ops: Vec<String> = ops.0.iter().map(|op| op.to_string()).collect();
                    line!(self, "{side}: header operations: {}", ops.join(", "));
                }
            }
            line!(
                self,
                "answer: 200 routed to {} by route {} (the status is the upstream's own; 503 if no endpoint can be reached)",
                cluster.name,
                route.name
            );
            return;
        }
        let shares = forward.shares();
        let turn: usize = shares.iter().sum();
        line!(
            self,
            "destinations, split by weight (exactly, in every {turn} requests):"
        );
        for ((d, cluster), share) in destinations.iter().zip(&clusters).zip(&shares) {
            let endpoints: Vec<String> = cluster.endpoints.iter().map(|e| e.to_string()).collect();
            line!(
                self,
                "  {} weight {}: {share} of {turn} (endpoints, round robin: {})",
                cluster.name,
                d.weight,
                endpoints.join(", ")
            );
        }
        self.upstream_request(req, authn);
        line!(
            self,
            "answer: 200 routed to one of the {} destinations by route {} (the status is the upstream's own; 503 if no endpoint can be reached)",
            destinations.len(),
            route.name
        );
    }

    /// The listening address for the URL's port: the one bound to the URL's
    /// address when it is an IP, else the one bound to all addresses, else
    /// the first.
    fn listener(&mut self, request: &Request) -> Option<String> {
        let addrs = self.snap.listener_addrs();
        let on_port: Vec<&String> = addrs
            .iter()
            .filter(|a| listener_port(a) == request.port)
            .collect();
        let ip = |a: &str| a.parse::<SocketAddr>().ok().map(|s| s.ip());
        let url_ip = request
            .url_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let chosen = on_port
            .iter()
            .find(|a| url_ip.is_some() && ip(a) == url_ip)
            .or_else(|| {
                on_port
                    .iter()
                    .find(|a| ip(a).is_some_and(|i| i.is_unspecified()))
            })
            .or(on_port.first())
            .map(|a| a.to_string());
        let Some(chosen) = chosen else {
            line!(
                self,
                "listener: none on port {} (listeners: {})",
                request.port,
                if addrs.is_empty() {
                    "none".to_string()
                } else {
                    addrs.join(", ")
                }
            );
            return None;
        };
        let mut servers = Vec::new();
        for gw in &self.config.gateways {
            for (i, server) in gw.spec.servers.iter().enumerate() {
                let bind = server
                    .bind
                    .as_deref()
                    .unwrap_or("0.0.0.0")
                    .parse::<IpAddr>();
                if bind.is_ok_and(|b| SocketAddr::new(b, server.port.number).to_string() == chosen)
                {
                    servers.push(format!(
                        "Gateway {} servers[{i}] (hosts: {})",
                        gw.key(),
                        server.hosts.join(", ")
                    ));
                }
            }
        }
        line!(self, "listener: {chosen}: {}", servers.join("; "));
        let others: Vec<&str> = on_port
            .iter()
            .map(|a| a.as_str())
            .filter(|a| *a != chosen)
            .collect();
        if !others.is_empty() {
            line!(
                self,
                "  (also on port {}: {}; a request reaches the one bound to the address it was sent to)",
                request.port,
                others.join(", ")
            );
        }
        Some(chosen)
    }

    /// The token part of the trace.
    fn describe_authn(
        &mut self,
        req: &RequestHeader,
        result: &Result<Option<Authenticated>, AuthnError>,
    ) {
        let authn = &self.snap.authn;
        let query = req.uri.query();
        if authn.providers().is_empty() {
            line!(
                self,
                "token: not read (no RequestAuthentication rule applies: a token passes through unchecked)"
            );
            return;
        }
        match authn.find_token(&req.headers, query) {
            Err(_) => line!(
                self,
                "token: found at more than one location, with different values"
            ),
            Ok(None) => {
                let looked: Vec<String> = authn.locations().iter().map(|l| l.to_string()).collect();
                line!(self, "token: none (looked in: {})", looked.join(", "));
                line!(self, "  no identity: the request goes on without one");
            }
            Ok(Some((token, location))) => {
                let at = &authn.locations()[location];
                let readers: Vec<String> = (0..authn.providers().len())
                    .filter(|&p| authn.providers()[p].locations.contains(at))
                    .map(|p| self.rule_name(p))
                    .collect();
                line!(self, "token: {at}, read by {}", readers.join(", "));
                match parse(token) {
                    Ok(parsed) => self.describe_token(&parsed, location),
                    Err(e) => line!(self, "  does not parse: {e}"),
                }
            }
        }
        match result {
            Ok(Some(a)) => {
                line!(self, "  result: valid; principal {}", a.token.principal());
                let claims = serde_json::to_string(&a.token.claims).unwrap_or_default();
                line!(self, "  claims: {claims}");
            }
            Ok(None) => {}
            Err(e) => line!(self, "  result: {}", answer(Rejection::Jwt(e.error))),
        }
    }

    /// Issuer, rule, key set and candidate keys of a parsed token.
    fn describe_token(&mut self, token: &UnverifiedToken<'_>, location: usize) {
        let authn = &self.snap.authn;
        let kid = token.kid.as_deref();
        line!(
            self,
            "  header: alg {}, kid {}",
            token.alg.name(),
            kid.map_or("(none)".to_string(), |k| format!("{k:?}"))
        );
        let claims = &token.claims;
        let times: Vec<String> = [("exp", claims.exp), ("nbf", claims.nbf)]
            .into_iter()
            .filter_map(|(name, t)| t.map(|t| format!("{name} {t}")))
            .collect();
        if !times.is_empty() {
            line!(self, "  {} (now {})", times.join(", "), self.options.now);
        }
        let Some(issuer) = claims.iss.as_deref() else {
            line!(self, "  issuer: none (a token without iss matches no rule)");
            return;
        };
        let Some(p) = authn.provider_for(issuer, location) else {
            let same_issuer =
                (0..authn.providers().len()).find(|&p| authn.providers()[p].issuer == issuer);
            match same_issuer {
                Some(p) => {
                    let reads: Vec<String> = authn.providers()[p]
                        .locations
                        .iter()
                        .map(|l| l.to_string())
                        .collect();
                    line!(
                        self,
                        "  issuer: {issuer:?}: its rule {} does not read this location (it reads: {})",
                        self.rule_name(p),
                        reads.join(", ")
                    );
                }
                None => {
                    let known: Vec<String> = authn
                        .providers()
                        .iter()
                        .map(|p| format!("{:?}", p.issuer))
                        .collect();
                    line!(
                        self,
                        "  issuer: {issuer:?}: no rule has it (issuers: {})",
                        known.join(", ")
                    );
                }
            }
            return;
        };
        let provider = &authn.providers()[p];
        line!(self, "  issuer: {issuer:?}: rule {}", self.rule_name(p));
        if !provider.validation.audiences.is_empty() {
            line!(
                self,
                "  audiences: token {:?}, rule accepts {:?}",
                claims.aud,
                provider.validation.audiences
            );
        }
        let remote = self
            .remote
            .iter()
            .find(|s| Arc::ptr_eq(&s.slot, &provider.keys))
            .map(|s| s.uri.clone());
        let keys = provider.keys.load_full();
        match (&remote, self.jwks) {
            (Some(uri), Some((path, n))) => line!(
                self,
                "  keys: jwksUri {uri}, not fetched: --jwks {} stands in ({n} key(s))",
                path.display()
            ),
            (Some(uri), None) => line!(
                self,
                "  keys: jwksUri {uri}, not fetched and no --jwks FILE given: no keys, as at a gateway's start before the first fetch"
            ),
            (None, _) => line!(
                self,
                "  keys: inline jwks ({} key(s))",
                keys.as_ref().map_or(0, |k| k.keys.len())
            ),
        }
        let Some(keys) = keys else {
            return;
        };
        let candidates: Vec<String> = keys
            .candidates(token.alg, kid)
            .map(|k| {
                let own = k
                    .alg
                    .map_or(String::new(), |a| format!(", alg {}", a.name()));
                let kid = k
                    .kid
                    .as_deref()
                    .map_or("(none)".to_string(), |k| format!("{k:?}"));
                format!("kid {kid}{own}, {:?}", k.material)
            })
            .collect();
        if candidates.is_empty() {
            let kids: Vec<String> = keys
                .keys
                .iter()
                .map(|k| {
                    k.kid
                        .as_deref()
                        .map_or("(none)".to_string(), |k| format!("{k:?}"))
                })
                .collect();
            line!(
                self,
                "  key: none in the set fits kid {} and alg {} (kids in the set: {})",
                kid.map_or("(none)".to_string(), |k| format!("{k:?}")),
                token.alg.name(),
                kids.join(", ")
            );
            if remote.is_some() {
                line!(
                    self,
                    "  (the gateway refetches the jwksUri once, at most every jwksRefetchCooldown, and retries; with the same set the answer is the same)"
                );
            }
        } else {
            for c in candidates {
                line!(self, "  key: {c}");
            }
        }
    }

    /// `namespace/name jwtRules[k]` of the rule with this provider's issuer.
    fn rule_name(&self, provider: usize) -> String {
        let issuer = &self.snap.authn.providers()[provider].issuer;
        for ra in &self.config.request_authentications {
            if let Some(k) = ra.spec.jwt_rules.iter().position(|r| &r.issuer == issuer) {
                return format!("RequestAuthentication {} jwtRules[{k}]", ra.key());
            }
        }
        format!("the rule of issuer {issuer:?}")
    }

    /// The policies part of the trace.
    fn describe_authz(&mut self, areq: &AuthzRequest<'_>, decision: &PolicyDecision) {
        let authz = &self.snap.authz;
        let peer = self.options.peer;
        line!(
            self,
            "authorization: any matching DENY denies; then, if there are ALLOW policies, one must match; AUDIT only logs"
        );
        if peer.is_none() {
            line!(
                self,
                "  (client address unknown: --peer IP sets source.ip/remote.ip)"
            );
        }
        for policy in authz.policies() {
            let action = format!("{:?}", policy.action).to_uppercase();
            let misses = policy.rule_misses(areq);
            match policy.first_matching_rule(areq) {
                Some(i) => line!(self, "  {action} {}: rules[{i}] matched", policy.name),
                None if misses.is_empty() => {
                    line!(
                        self,
                        "  {action} {}: no rules: matches nothing",
                        policy.name
                    )
                }
                None => {
                    line!(self, "  {action} {}: no rule matched", policy.name);
                    for (i, miss) in misses.iter().enumerate() {
                        if let Some(miss) = miss {
                            line!(self, "    rules[{i}]: {miss}");
                        }
                    }
                }
            }
        }
        let rule = |name: &str| {
            authz
                .policies()
                .find(|p| &*p.name == name)
                .and_then(|p| p.first_matching_rule(areq))
                .map_or(String::new(), |i| format!(" rules[{i}]"))
        };
        match (&decision.policy, decision.allowed) {
            (Some(p), true) => line!(self, "  decision: allowed by ALLOW {p}{}", rule(p)),
            (None, true) => line!(
                self,
                "  decision: allowed (no DENY matched, and there is no ALLOW policy)"
            ),
            (Some(p), false) => line!(self, "  decision: denied by DENY {p}{}", rule(p)),
            (None, false) => line!(
                self,
                "  decision: denied (there are ALLOW policies and none matched)"
            ),
        }
        for p in &decision.audited {
            line!(self, "  AUDIT {p} matched: logged and counted, no effect");
        }
    }

    /// The routes of the virtual host, in order, and which matched.
    fn describe_routes(&mut self, table: Option<&HostTable>, view: &RequestView<'_>) {
        let routes = table.map_or(&[][..], |t| t.routes_for(view.authority));
        if !routes.is_empty() {
            line!(self, "routes, in order:");
        }
        for (i, route) in routes.iter().enumerate() {
            if route.matches(view) {
                line!(self, "  {}: matched", label(route));
                if i + 1 < routes.len() {
                    line!(
                        self,
                        "  ({} later route(s) not tried)",
                        routes.len() - i - 1
                    );
                }
                break;
            }
            self.route_miss(route, view);
        }
    }

    /// Why `route` did not match: the first failing condition of each match entry.
    fn route_miss(&mut self, route: &Route, view: &RequestView<'_>) {
        let failing: Vec<(usize, Option<&str>, String)> = route
            .matches
            .iter()
            .enumerate()
            .filter_map(|(j, m)| {
                m.first_failing(view)
                    .map(|c| (j, m.name.as_deref(), why(c, view)))
            })
            .collect();
        let name = label(route);
        match failing.as_slice() {
            [(_, _, why)] if route.matches.len() == 1 => {
                line!(self, "  {name}: no match: {why}")
            }
            _ => {
                line!(self, "  {name}: no match");
                for (j, name, why) in failing {
                    let name = name.map_or(String::new(), |n| format!(" ({n})"));
                    line!(self, "    match[{j}]{name}: {why}");
                }
            }
        }
    }

    /// What `upstream_request_filter` changes for a routed request.
    fn upstream_request(&mut self, req: &RequestHeader, authn: Option<&Authenticated>) {
        let rules = &self.snap.authn;
        let removed: Vec<&str> = rules.output_headers().iter().map(|h| h.as_str()).collect();
        if !removed.is_empty() {
            line!(
                self,
                "upstream request: client copies of {} removed",
                removed.join(", ")
            );
        }
        let Some(a) = authn else {
            return;
        };
        for (name, value) in rules.outputs(a, &req.headers, req.uri.query()) {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            line!(self, "upstream request: {name}: {}", shorten(&value));
        }
        let location = &rules.locations()[a.location];
        if rules.providers()[a.provider].forward_original_token {
            line!(
                self,
                "upstream request: the token is forwarded (forwardOriginalToken)"
            );
        } else {
            line!(
                self,
                "upstream request: the token is removed from {location}"
            );
        }
    }
}

impl request::Trace for Trace<'_> {
    fn prepared(&mut self, head: &RequestHeader, changed_from: Option<&[u8]>) {
        self.reached = Stage::Prepared;
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some(received) = changed_from {
            line!(
                self,
                "path: {} is judged and forwarded as {} (pathNormalization {}; origin-form)",
                shorten(&String::from_utf8_lossy(received)),
                shorten(target),
                self.snap.edge.path_normalization
            );
        }
        let snap = self.snap;
        if let Some(table) = snap.listeners.get(&self.listener) {
            self.virtual_host(table, &request_host(head));
        }
    }

    fn cors(&mut self, route: &Route, origin: &HeaderValue, verdict: &CorsVerdict) {
        let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        match verdict {
            CorsVerdict::Preflight(_) => line!(
                self,
                "cors: preflight from {shown:?} answered by the corsPolicy of {} (before authentication)",
                route.name
            ),
            CorsVerdict::Allowed => line!(
                self,
                "cors: origin {shown:?} allowed by the corsPolicy of {}: the answer carries Access-Control-Allow-Origin",
                route.name
            ),
            CorsVerdict::None => line!(
                self,
                "cors: origin {shown:?} not allowed by the corsPolicy of {}",
                route.name
            ),
        }
    }

    fn authn(&mut self, head: &RequestHeader, result: &Result<Option<Authenticated>, AuthnError>) {
        self.describe_authn(head, result);
        if result.is_ok() {
            self.reached = Stage::Authenticated;
        }
    }

    fn authz(&mut self, request: &AuthzRequest<'_>, decision: &PolicyDecision) {
        self.describe_authz(request, decision);
        if decision.allowed {
            self.reached = Stage::Authorized;
        }
    }

    fn routes(&mut self, table: Option<&HostTable>, view: &RequestView<'_>) {
        if self.reached == Stage::Authenticated {
            line!(
                self,
                "authorization: no AuthorizationPolicy applies: allowed"
            );
        }
        self.reached = Stage::Routed;
        self.describe_routes(table, view);
    }
}

/// A route's name, and which of its `http[]` route's match entries it is
/// when there are several (Istio makes a route of each).
fn label(route: &Route) -> String {
    match route.entry {
        Some((j, n)) if n > 1 => {
            let name = route.matches.first().and_then(|m| m.name.as_deref());
            let name = name.map_or(String::new(), |l| format!(" ({l})"));
            format!("{} match[{j}]{name}", route.name)
        }
        _ => route.name.to_string(),
    }
}

/// Why `condition` did not hold for `view`, with what the request had.
fn why(condition: &Condition, view: &RequestView<'_>) -> String {
    match condition {
        Condition::Claim(path, _) => match view.claims {
            None => format!("{condition}: no valid token, claim condition cannot hold"),
            Some(claims) => match path.lookup(claims.claims) {
                None => format!("{condition} did not match (the token has no such claim)"),
                Some(value) => format!("{condition} did not match (claim value {})", json(value)),
            },
        },
        Condition::WithoutClaim(path, _) => {
            let value = view
                .claims
                .and_then(|c| path.lookup(c.claims))
                .map_or("?".to_string(), json);
            format!("{condition} did not hold: the claim matches (claim value {value})")
        }
        Condition::Uri { .. } => {
            let path = view.path.split_once('?').map_or(view.path, |(p, _)| p);
            format!("{condition} did not match (path {path:?})")
        }
        Condition::Method(_) => format!("{condition} did not match (method {:?})", view.method),
        Condition::Scheme(_) => format!("{condition} did not match (scheme {:?})", view.scheme),
        Condition::Port(_) => format!("{condition} did not match (listener port {})", view.port),
        Condition::QueryParam(name, _) => match crate::routing::query_param(view.path, name) {
            None => format!("{condition} did not match (no {name} parameter)"),
            Some(v) => format!("{condition} did not match (value {:?})", shorten(v)),
        },
        Condition::Authority(_) => {
            format!("{condition} did not match (authority {:?})", view.authority)
        }
        Condition::Header(name, _) => {
            let values = header_values(view, name);
            if values.is_empty() {
                format!("{condition} did not match (no {name} header)")
            } else {
                format!("{condition} did not match (value {:?})", values.join(","))
            }
        }
        Condition::WithoutHeader(name, _) => format!(
            "{condition} did not hold: the header matches (value {:?})",
            header_values(view, name).join(",")
        ),
    }
}

fn header_values(view: &RequestView<'_>, name: &HeaderName) -> Vec<String> {
    view.headers
        .get_all(name)
        .iter()
        .map(|v| shorten(&String::from_utf8_lossy(v.as_bytes())))
        .collect()
}

fn json(value: &Value) -> String {
    shorten(&value.to_string())
}

/// At most 80 characters, so a token or a large claim does not flood the trace.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

/// `401 Jwt is expired`, `403 RBAC: access denied`, `404 no route`.
fn answer(rejection: Rejection) -> String {
    let body = rejection.body();
    if body.is_empty() {
        format!(
            "{} {}",
            rejection.status(),
            rejection.reason().replace('_', " ")
        )
    } else {
        format!("{} {body}", rejection.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::JwtError;

    fn options(method: &str, url: &str, headers: &[&str]) -> Options {
        Options {
            config: PathBuf::new(),
            method: method.into(),
            url: url.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            token: None,
            jwks: None,
            now: 0,
            peer: None,
        }
    }

    fn host_of(r: &Request) -> &str {
        r.header.headers.get(HOST).unwrap().to_str().unwrap()
    }

    #[test]
    fn the_url_gives_the_port_and_the_host_header_as_a_client_sends_them() {
        let r = build_request(&options("GET", "http://Example.com/a?b=1", &[])).unwrap();
        assert_eq!((r.port, host_of(&r)), (80, "Example.com"));
        assert_eq!(r.header.uri.path_and_query().unwrap().as_str(), "/a?b=1");
        assert_eq!(request_host(&r.header), "example.com");

        let r = build_request(&options("POST", "https://example.com", &[])).unwrap();
        assert_eq!((r.port, r.header.method.as_str()), (443, "POST"));
        assert_eq!(r.header.uri.path(), "/");

        let r = build_request(&options("GET", "http://[::1]:8080/", &[])).unwrap();
        assert_eq!(
            (r.port, host_of(&r), r.url_host.as_str()),
            (8080, "[::1]:8080", "[::1]")
        );

        let r = build_request(&options(
            "GET",
            "http://a:81/",
            &["Host: b", "X-A: 1", "x-a: 2"],
        ))
        .unwrap();
        assert_eq!((r.port, host_of(&r)), (81, "b"));
        assert_eq!(r.header.headers.get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn a_token_is_a_bearer_authorization_header() {
        let mut o = options("GET", "http://a/", &[]);
        o.token = Some(" a.b.c\n".into());
        let r = build_request(&o).unwrap();
        assert_eq!(
            r.header.headers.get("authorization").unwrap(),
            "Bearer a.b.c"
        );
    }

    #[test]
    fn bad_requests_are_usage_errors() {
        for (method, url, headers) in [
            ("GET", "/relative", &[][..]),
            ("GET", "ftp://a/", &[]),
            ("G ET", "http://a/", &[]),
            ("GET", "http://a/", &["nocolon"]),
            ("GET", "http://a/", &["bad name: v"]),
        ] {
            assert!(
                matches!(
                    build_request(&options(method, url, headers)),
                    Err(Error::Usage(_))
                ),
                "{method} {url} {headers:?}"
            );
        }
    }

    #[test]
    fn answers_use_the_rejection_table() {
        assert_eq!(answer(Rejection::NoRoute), "404 no route");
        assert_eq!(answer(Rejection::Denied), "403 RBAC: access denied");
        assert_eq!(
            answer(Rejection::Jwt(JwtError::VerificationFail)),
            "401 Jwt verification fails"
        );
        assert_eq!(
            answer(Rejection::Jwt(JwtError::AudienceNotAllowed)),
            "403 Audiences in Jwt are not allowed"
        );
    }

    #[test]
    fn long_values_are_shortened_on_a_char_boundary() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(100);
        let short = shorten(&long);
        assert!(short.starts_with(&"é".repeat(80)));
        assert!(short.ends_with("… (200 bytes)"));
    }
}
