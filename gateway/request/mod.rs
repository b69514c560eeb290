//! The decision for one request, with no `Session` in it: `decide` takes
//! the request head as received, turns it into the request that will be
//! forwarded (target checked, path normalized, the gateway's own headers
//! removed from the client's and written by the gateway), and judges that
//! same request: HTTPS redirect, CORS preflight, authentication,
//! authorization, route. The proxy applies the verdict; `claimgate
//! explain` calls the same function with a recording `Trace`.

mod normalize;
mod target;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

pub use normalize::{normalize, BadPath, PathNormalization};
pub use target::{authority, classify, request_host, BadTarget, Target};

use crate::authz::{AuthzRequest, Decision as PolicyDecision};
use crate::jwt::authn::{strip_cookie, strip_query_param, AuthnError, Outcome};
use crate::jwt::{Authenticated, TokenLocation};
use crate::proxy::Rejection;
use crate::routing::{Action, CorsVerdict, HostTable, RequestView, Route, UriSpan};
use crate::snapshot::Snapshot;

/// What `Settings` says about the edge: how requests are normalized, which
/// forwarding headers are trusted, and the limits of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub path_normalization: PathNormalization,
    /// `trustedProxies`: `X-Forwarded-For` hops trusted for the client
    /// address (Envoy's `xff_num_trusted_hops`).
    pub trusted_proxies: usize,
    /// `preserveExternalRequestId`: keep a client's `x-request-id`.
    pub preserve_request_id: bool,
    /// `maxRequestHeadersKb`, in bytes.
    pub max_head_bytes: usize,
    /// `maxHeadersCount`.
    pub max_headers: usize,
    /// `requestHeadersTimeout`: from a head's first byte to its end.
    pub headers_timeout: Duration,
    /// `streamIdleTimeout`: a request whose client neither sends nor reads
    /// for this long is ended (and its upstream connection freed).
    pub stream_idle_timeout: Duration,
}

impl Default for Edge {
    fn default() -> Edge {
        Edge {
            path_normalization: PathNormalization::Base,
            trusted_proxies: 0,
            preserve_request_id: false,
            max_head_bytes: 60 * 1024,
            max_headers: 100,
            headers_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The listening address, as in the snapshot (`0.0.0.0:80`).
    pub listener: &'a str,
    pub port: u16,
    /// `https` when the connection is TLS.
    pub scheme: &'static str,
    /// The TCP peer.
    pub peer: Option<IpAddr>,
}

/// What was decided, and what was learnt on the way (for metrics, the
/// access log and the upstream request).
#[derive(Debug)]
pub struct Judged {
    pub verdict: Verdict,
    /// The client as the trusted `X-Forwarded-For` entries tell it.
    pub remote_ip: Option<IpAddr>,
    /// What the token came to, when one was looked at.
    pub jwt: Option<Outcome>,
    pub authn: Option<Authenticated>,
    /// The AuthorizationPolicy decision, when there are policies.
    pub policy: Option<PolicyDecision>,
    /// A CORS request from an allowed origin: the route whose policy
    /// allowed it (matched before authentication), and the origin.
    pub cors: Option<(Arc<Route>, HeaderValue)>,
    /// The route that matched and what its match entry matched of the path.
    pub route: Option<(Arc<Route>, UriSpan)>,
}

/// What the gateway does with the request.
#[derive(Debug)]
pub enum Verdict {
    /// Refuse it.
    Reject(Rejection),
    /// A plain listener's `httpsRedirect`: 301 to this location.
    HttpsRedirect(String),
    /// Answer a CORS preflight with these headers.
    CorsPreflight(Vec<(HeaderName, HeaderValue)>),
    /// The route's `redirect`.
    Redirect { location: String, code: u16 },
    /// The route's `directResponse`.
    Direct,
    /// Send it to the route's destination (by index) and its cluster.
    Forward { destination: usize, cluster: usize },
}

/// What `explain` records of a decision as it is made; the gateway's
/// trace records nothing and costs nothing.
pub trait Trace {
    /// The request as it will be judged and forwarded, with the target it
    /// was received with when that was changed.
    fn prepared(&mut self, _head: &RequestHeader, _changed_from: Option<&[u8]>) {}
    fn cors(&mut self, _route: &Route, _origin: &HeaderValue, _verdict: &CorsVerdict) {}
    fn authn(
        &mut self,
        _head: &RequestHeader,
        _result: &Result<Option<Authenticated>, AuthnError>,
    ) {
    }
    fn authz(&mut self, _request: &AuthzRequest<'_>, _decision: &PolicyDecision) {}
    fn routes(&mut self, _table: Option<&HostTable>, _view: &RequestView<'_>) {}
}

/// The trace of the running gateway.
pub struct NoTrace;

impl Trace for NoTrace {}

/// How tokens are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// A token whose `kid` is not in its remote key set triggers one
    /// refetch of that set (the running gateway).
    Refetch,
    /// The key sets as they are (`explain`, offline).
    AsLoaded,
}

/// Prepares `head` as the request to forward and judges it.
pub async fn decide(
    snap: &Snapshot,
    conn: &Connection<'_>,
    head: &mut RequestHeader,
    now: u64,
    keys: Keys,
    trace: &mut impl Trace,
) -> Judged {
    let mut judged = Judged {
        verdict: Verdict::Direct,
        remote_ip: conn.peer,
        jwt: None,
        authn: None,
        policy: None,
        cors: None,
        route: None,
    };
    judged.verdict = match judge(snap, conn, head, now, keys, trace, &mut judged).await {
        Ok(verdict) | Err(verdict) => verdict,
    };
    judged
}

/// `decide`'s steps; `Err` ends them early with that verdict.
async fn judge(
    snap: &Snapshot,
    conn: &Connection<'_>,
    head: &mut RequestHeader,
    now: u64,
    keys: Keys,
    trace: &mut impl Trace,
    judged: &mut Judged,
) -> Result<Verdict, Verdict> {
    let reject = |r: Rejection| Verdict::Reject(r);
    let received = prepare(head, &snap.edge).map_err(reject)?;
    judged.remote_ip = forwarding_headers(head, conn, snap)?;
    trace.prepared(head, received.as_deref());

    if let Some(location) = https_redirect(snap, conn.listener, head) {
        return Err(Verdict::HttpsRedirect(location));
    }
    let table = snap.listeners.get(conn.listener);
    // CORS comes first, as Envoy's CORS filter runs before jwt_authn.
    if let Some(preflight) = cors(table, conn, head, trace, judged) {
        return Err(Verdict::CorsPreflight(preflight));
    }

    let authn = &snap.authn;
    let result = match keys {
        Keys::Refetch => {
            authn
                .authenticate_or_refetch(&head.headers, head.uri.query(), now)
                .await
        }
        Keys::AsLoaded => authn
            .authenticate(&head.headers, head.uri.query(), now)
            .map_err(|error| AuthnError {
                error,
                provider: None,
            }),
    };
    trace.authn(head, &result);
    judged.jwt = Outcome::of(&result);
    judged.authn = result.map_err(|e| reject(Rejection::Jwt(e.error)))?;
    // As Envoy's jwt_authn, before policies and routes read the request:
    // the headers the token writes are in place, and (unless the rule
    // forwards it) every copy of the token is gone.
    if let Some(verified) = &judged.authn {
        for (name, value) in authn.outputs(verified, &head.headers, head.uri.query()) {
            head.insert_header(name, value)
                .map_err(|_| reject(Rejection::BadRequest))?;
        }
        if !authn.providers()[verified.provider].forward_original_token {
            for (i, location) in authn.locations().iter().enumerate() {
                if authn.holds_token(i, &head.headers, head.uri.query()) {
                    strip_token(head, location).map_err(reject)?;
                }
            }
        }
    }

    let head = &*head;
    let host = request_host(head);
    let claims = judged.authn.as_ref().map(|a| authn.claims(a));
    if !snap.authz.is_empty() {
        let request = AuthzRequest {
            method: head.method.as_str(),
            path: head.uri.path(),
            host: &host,
            port: conn.port,
            headers: &head.headers,
            source_ip: conn.peer,
            remote_ip: judged.remote_ip,
            principal: judged.authn.as_ref().map(|a| a.token.principal()),
            audiences: judged
                .authn
                .as_ref()
                .map_or(&[], |a| a.token.aud.as_slice()),
            claims,
        };
        let decision = snap.authz.authorize(&request);
        trace.authz(&request, &decision);
        let allowed = decision.allowed;
        judged.policy = Some(decision);
        if !allowed {
            return Err(reject(Rejection::Denied));
        }
    }

    let view = route_view(head, conn, &host, claims);
    trace.routes(table, &view);
    let (route, span) = table
        .and_then(|t| t.select(&view))
        .ok_or(reject(Rejection::NoRoute))?;
    let route = route.clone();
    let verdict = match &route.action {
        Action::Forward(forward) => {
            let destination = forward.pick_index();
            let cluster = forward
                .destinations
                .get(destination)
                .map(|d| d.cluster)
                .ok_or(reject(Rejection::NoRoute))?;
            Verdict::Forward {
                destination,
                cluster,
            }
        }
        Action::Redirect(redirect) => Verdict::Redirect {
            location: redirect.location(
                conn.scheme,
                authority(head),
                conn.port,
                path_and_query(head),
            ),
            code: redirect.code,
        },
        Action::Direct(_) => Verdict::Direct,
    };
    judged.route = Some((route, span));
    Ok(verdict)
}

/// Checks the head and turns its target into the origin-form, normalized
/// target that is judged and forwarded; returns the target as received
/// when it was changed.
fn prepare(head: &mut RequestHeader, edge: &Edge) -> Result<Option<Box<[u8]>>, Rejection> {
    // Istio refuses a method that is not upper case (its normalization
    // reference); tokens are otherwise checked by the parser.
    if head.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Rejection::BadRequest);
    }
    if head.headers.len() > edge.max_headers || head_bytes(head) > edge.max_head_bytes {
        return Err(Rejection::HeadersTooLarge);
    }
    // HTTP/2's `:authority` lives in the URI, which is rewritten below:
    // it is kept as `Host`.
    if head.headers.get(http::header::HOST).is_none() {
        if let Some(value) = head
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            head.insert_header(http::header::HOST, value)
                .map_err(|_| Rejection::BadRequest)?;
        }
    }
    // What changes is worked out on the target as received (borrowed:
    // the common request, already in normal form, copies nothing).
    let raw = head.raw_path();
    let (path, query, authority) = match classify(raw).map_err(|_| Rejection::BadRequest)? {
        Target::Path {
            path,
            query,
            authority,
        } => (path, query, authority),
        Target::Asterisk if head.method == http::Method::OPTIONS => {
            // No route serves `*`: Envoy answers 404.
            return Err(Rejection::NoRoute);
        }
        Target::Asterisk => return Err(Rejection::BadRequest),
    };
    let normalized = normalize(path, edge.path_normalization).map_err(|_| Rejection::BadRequest)?;
    let unchanged = authority.is_none()
        && normalized.as_bytes() == path
        && head.uri.path_and_query().map(|p| p.as_str().as_bytes()) == Some(raw);
    if unchanged {
        return require_host(head).map(|()| None);
    }
    let received: Box<[u8]> = raw.into();
    let mut target = normalized.into_owned();
    if let Some(query) = query {
        target.push('?');
        target.push_str(std::str::from_utf8(query).map_err(|_| Rejection::BadRequest)?);
    }
    // Absolute-form: the target's authority is the host (the parser
    // refused a `Host` that differs from it).
    let host = match authority {
        Some(a) => Some(HeaderValue::from_bytes(a).map_err(|_| Rejection::BadRequest)?),
        None => None,
    };
    let uri = http::Uri::try_from(target).map_err(|_| Rejection::BadRequest)?;
    head.set_uri(uri);
    if let Some(host) = host.filter(|_| head.headers.get(http::header::HOST).is_none()) {
        head.insert_header(http::header::HOST, host)
            .map_err(|_| Rejection::BadRequest)?;
    }
    require_host(head).map(|()| Some(received))
}

/// Envoy requires a host (`Host`, or HTTP/2's `:authority`).
fn require_host(head: &RequestHeader) -> Result<(), Rejection> {
    if target::authority(head).is_empty() {
        return Err(Rejection::BadRequest);
    }
    Ok(())
}

/// The size of the head as Envoy counts it: the target, and every header
/// name and value.
fn head_bytes(head: &RequestHeader) -> usize {
    let headers: usize = head
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    headers + head.raw_path().len() + head.method.as_str().len()
}

/// Removes the token from `location`, leaving the rest of the request
/// intact: the whole header, the one query parameter, the one cookie.
fn strip_token(head: &mut RequestHeader, location: &TokenLocation) -> Result<(), Rejection> {
    match location {
        TokenLocation::Header { name, .. } => {
            head.remove_header(name);
        }
        TokenLocation::Param(param) => {
            if let Some(query) = head.uri.query() {
                let path = head.uri.path();
                let target = match strip_query_param(query, param) {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_string(),
                };
                let uri = http::Uri::try_from(target).map_err(|_| Rejection::BadRequest)?;
                head.set_uri(uri);
            }
        }
        TokenLocation::Cookie(cookie) => {
            let values: Vec<String> = head
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| strip_cookie(v, cookie))
                .collect();
            head.remove_header(&http::header::COOKIE);
            for value in values {
                head.append_header(http::header::COOKIE, value)
                    .map_err(|_| Rejection::BadRequest)?;
            }
        }
    }
    Ok(())
}

/// Headers only the gateway writes: a client's copies never reach a
/// policy, a route or the upstream. (`x-envoy-*` as Envoy strips them from
/// external requests; the claim headers are the RequestAuthentication
/// outputs of every rule.)
fn is_gateways(name: &HeaderName, snap: &Snapshot) -> bool {
    name.as_str().starts_with("x-envoy-")
        || name == "x-forwarded-client-cert"
        || snap.authn.output_headers().contains(name)
}

/// The forwarding headers of an edge Envoy (`use_remote_address: true`,
/// `xff_num_trusted_hops`: `trustedProxies`), after removing the headers
/// only the gateway writes; returns the client's address. (Envoy also
/// writes `x-envoy-external-address`; nothing here asks for it, and each
/// header written costs the proxy path a few thousand instructions.)
fn forwarding_headers(
    head: &mut RequestHeader,
    conn: &Connection<'_>,
    snap: &Snapshot,
) -> Result<Option<IpAddr>, Verdict> {
    let bad = |_| Verdict::Reject(Rejection::BadRequest);
    let forged: Vec<HeaderName> = head
        .headers
        .keys()
        .filter(|name| is_gateways(name, snap))
        .cloned()
        .collect();
    for name in &forged {
        head.remove_header(name);
    }
    let edge = &snap.edge;
    let remote_ip = crate::authz::remote_ip(&head.headers, conn.peer, edge.trusted_proxies);
    if let Some(peer) = conn.peer {
        let mut chain = String::new();
        for value in head.headers.get_all(X_FORWARDED_FOR) {
            if !value.is_empty() {
                chain.push_str(&String::from_utf8_lossy(value.as_bytes()));
                chain.push_str(", ");
            }
        }
        push_ip(&mut chain, peer);
        head.insert_header(X_FORWARDED_FOR, chain).map_err(bad)?;
    }
    head.insert_header("x-forwarded-proto", conn.scheme)
        .map_err(bad)?;
    let keep_id = edge.preserve_request_id
        && head
            .headers
            .get(X_REQUEST_ID)
            .is_some_and(|id| !id.is_empty());
    if !keep_id {
        head.insert_header(X_REQUEST_ID, crate::random::uuid())
            .map_err(bad)?;
    }
    Ok(remote_ip)
}

/// Appends `ip` as text; IPv4, by far the common case, without the
/// formatting machinery (ten times cheaper on the proxy path).
fn push_ip(text: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(text, "{ip}");
        }
    }
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_REQUEST_ID: &str = "x-request-id";

/// The `Location` of the 301 that a plain listener with `httpsRedirect`
/// answers, before anything else looks at the request (a token sent in
/// clear is not even read). As Envoy's `require_tls: ALL`: `https://` +
/// the `Host` as sent (a port in it is kept) + the path and query.
fn https_redirect(snap: &Snapshot, listener: &str, head: &RequestHeader) -> Option<String> {
    snap.tls.redirects.get(listener)?.get(&request_host(head))?;
    Some(format!(
        "https://{}{}",
        authority(head),
        path_and_query(head)
    ))
}

fn path_and_query(head: &RequestHeader) -> &str {
    head.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// Envoy's CORS filter, on the route the request matches before its token
/// is read: latches an allowed origin in `judged.cors`, and returns the
/// headers of a preflight to answer now.
fn cors(
    table: Option<&HostTable>,
    conn: &Connection<'_>,
    head: &RequestHeader,
    trace: &mut impl Trace,
    judged: &mut Judged,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let table = table.filter(|t| t.has_cors())?;
    let origin = head
        .headers
        .get(http::header::ORIGIN)
        .filter(|o| !o.is_empty())?;
    let host = request_host(head);
    let (route, _) = table.select(&route_view(head, conn, &host, None))?;
    let cors = route.cors.as_deref()?;
    let verdict = cors.verdict(head.method.as_str(), &head.headers, origin);
    trace.cors(route, origin, &verdict);
    match verdict {
        CorsVerdict::None => None,
        CorsVerdict::Allowed => {
            judged.cors = Some((route.clone(), origin.clone()));
            None
        }
        CorsVerdict::Preflight(headers) => Some(headers),
    }
}

/// What routes read of the request.
fn route_view<'r>(
    head: &'r RequestHeader,
    conn: &Connection<'_>,
    host: &'r str,
    claims: Option<crate::routing::ClaimView<'r>>,
) -> RequestView<'r> {
    RequestView {
        scheme: conn.scheme,
        port: conn.port,
        method: head.method.as_str(),
        path: path_and_query(head),
        authority: host,
        headers: &head.headers,
        claims,
    }
}

#[cfg(test)]
mod tests;
