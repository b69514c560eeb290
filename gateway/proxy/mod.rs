//! The `ProxyHttp` implementation: one instance per listening address, all
//! reading the same swappable `Snapshot`.

mod connections;
mod head_guard;
mod mirror;
mod pick;
mod reject;
mod retry;

pub use connections::Counted;
pub use head_guard::{head_answered, head_read, Framing, HeadLimits};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use retry::{failure_of, Backoff, RetryState};

pub use reject::{
    Rejection, TlsFailure, NO_HEALTHY_UPSTREAM, NO_SERVER_NAME, OVERFLOW, REASONS, RETRY_ON_STATUS,
    UPSTREAM_TIMEOUT,
};

use crate::access_log::{redact_query, rfc3339, AccessLog, Entry};
use crate::authz::Decision;
use crate::jwt::authn::Outcome;
use crate::jwt::Authenticated;
use crate::metrics::RouteMetrics;
use crate::request::{authority, Connection, Judged, Keys, NoTrace, Verdict};
use crate::routing::{
    host_without_port, Action, DirectResponse, Failure, Forward, HeaderOps, Route, UriSpan,
};
use crate::snapshot::Snapshot;
use crate::upstream::{Balance, Endpoint, Outcome as Ended};

/// The gateway as seen by one listener.
pub struct Gateway {
    /// The listening address this instance serves, as in the snapshot.
    listener: String,
    /// Its port, for `to.operation.ports` and `destination.port`.
    port: u16,
    state: Arc<ArcSwap<Snapshot>>,
    /// Set when the listening sockets have been handed to a new process:
    /// every answer then closes its connection, so keep-alive clients move
    /// to the new process on their own before this one stops.
    handed_over: Arc<AtomicBool>,
    access_log: AccessLog,
}

impl Gateway {
    pub fn new(
        listener: String,
        state: Arc<ArcSwap<Snapshot>>,
        handed_over: Arc<AtomicBool>,
        access_log: AccessLog,
    ) -> Gateway {
        let port = listener_port(&listener);
        Gateway {
            listener,
            port,
            state,
            handed_over,
            access_log,
        }
    }
}

/// Per-request state.
pub struct RequestCtx {
    /// The snapshot this request started with; kept to its end.
    snap: Arc<Snapshot>,
    authn: Option<Authenticated>,
    /// The AuthorizationPolicy decision, when there are policies.
    decision: Option<Decision>,
    /// Index of the chosen cluster.
    cluster: Option<usize>,
    /// The route that matched.
    route: Option<Arc<Route>>,
    /// The destination of that route the request goes to, by index.
    destination: Option<usize>,
    /// What the route's match entry matched of the path (for a rewrite).
    span: UriSpan,
    rejection: Option<Rejection>,
    /// What the token came to, when there was one.
    jwt: Option<Outcome>,
    started: Instant,
    /// When the request went upstream, and to which endpoint.
    upstream_sent: Option<Instant>,
    upstream: Option<std::net::SocketAddr>,
    /// That endpoint's counters: one request in flight until `logging`.
    endpoint: Option<Arc<Endpoint>>,
    /// The attempts at the upstream: tries, endpoints tried, deadline,
    /// the place within the cluster's connection pool limits.
    retry: RetryState,
    /// The consistent hash key, computed on the first attempt (the request
    /// does not change between attempts).
    hash_key: Option<Vec<u8>>,
    /// A CORS request from an allowed origin: the route whose policy
    /// allowed it (matched before authentication), and the origin.
    cors: Option<(Arc<Route>, http::HeaderValue)>,
    /// The route's mirrors were looked at (once per request, not per attempt).
    mirrored: bool,
    /// Copies for mirrors, waiting for the request body.
    mirror: Option<mirror::Pending>,
}

impl RequestCtx {
    /// Keeps what the decision learnt; returns what to do.
    fn take(&mut self, judged: Judged) -> Verdict {
        self.jwt = judged.jwt;
        self.authn = judged.authn;
        if let Some(decision) = &judged.policy {
            for policy in &decision.audited {
                tracing::info!(policy = %policy, "AUDIT policy matched");
            }
        }
        self.decision = judged.policy;
        self.cors = judged.cors;
        if let Some((route, span)) = judged.route {
            self.route = Some(route);
            self.span = span;
        }
        if let Verdict::Forward {
            destination,
            cluster,
        } = judged.verdict
        {
            self.destination = Some(destination);
            self.cluster = Some(cluster);
        }
        judged.verdict
    }

    /// The forwarding action of the route this request matched.
    fn forward(&self) -> Option<&Forward> {
        match &self.route.as_deref()?.action {
            Action::Forward(forward) => Some(forward),
            _ => None,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How the request's body is delimited on its connection (RFC 9112 §6.3),
/// for the head guard: where the next request's head begins.
fn framing(req: &RequestHeader) -> Framing {
    let headers = &req.headers;
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers.contains_key(http::header::UPGRADE)
        || req.method == http::Method::CONNECT
    {
        return Framing::Unframed;
    }
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        // Pingora refused a bad Content-Length already.
        None if headers.contains_key(http::header::CONTENT_LENGTH) => Framing::Unframed,
        None => Framing::None,
    }
}

/// A redirect's answer: `code`, `Location`, no body.
fn redirect_header(code: u16, location: String) -> Result<Box<ResponseHeader>> {
    let mut header = ResponseHeader::build(code, Some(2))?;
    header.insert_header(http::header::LOCATION, location)?;
    header.insert_header(http::header::CONTENT_LENGTH, "0")?;
    Ok(Box::new(header))
}

/// `https` when the client's connection is TLS.
fn scheme_of(session: &Session) -> &'static str {
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    if tls {
        "https"
    } else {
        "http"
    }
}

/// The port of a listening address such as `0.0.0.0:80` (0 if it has none).
pub fn listener_port(listener: &str) -> u16 {
    listener
        .parse::<std::net::SocketAddr>()
        .map_or(0, |a| a.port())
}

/// The response header operations of the route a request matched: its
/// destination's (route and destination levels), or the route's own.
fn response_headers(ctx: &RequestCtx) -> Option<&HeaderOps> {
    let route = ctx.route.as_deref()?;
    let ops = match &route.action {
        Action::Forward(f) => {
            &ctx.destination
                .and_then(|i| f.destinations.get(i))?
                .response_headers
        }
        Action::Redirect(_) | Action::Direct(_) => &route.response_headers,
    };
    (!ops.is_empty()).then_some(ops)
}

/// The CORS response headers of a request from an allowed origin (after
/// the route's own operations: Envoy's CORS filter encodes last).
fn apply_cors(ctx: &RequestCtx, response: &mut ResponseHeader) -> Result<()> {
    if let Some((route, origin)) = &ctx.cors {
        if let Some(cors) = &route.cors {
            cors.apply(origin, response)?;
        }
    }
    Ok(())
}

/// The counters a request is recorded in: its route's, for the cluster it
/// was sent to, or the unrouted ones.
fn route_metrics(ctx: &RequestCtx) -> &RouteMetrics {
    let Some(route) = ctx.route.as_deref() else {
        return RouteMetrics::unrouted();
    };
    let chosen = match &route.action {
        Action::Forward(f) => ctx.destination.and_then(|i| f.destinations.get(i)),
        Action::Redirect(_) | Action::Direct(_) => None,
    };
    match chosen {
        Some(destination) => &destination.metrics,
        None => &route.metrics,
    }
}

/// Counts how the request's last attempt ended for outlier detection
/// (earlier attempts were counted when they were retried).
fn report_outcome(ctx: &RequestCtx, status: u16) {
    let cluster = ctx.cluster.and_then(|i| ctx.snap.clusters.get(i));
    if let (Some(cluster), Some(addr)) = (cluster, ctx.upstream) {
        let outcome = match ctx.rejection {
            Some(
                Rejection::ConnectFailure
                | Rejection::UpstreamTls(_)
                | Rejection::UpstreamReset
                | Rejection::UpstreamTimeout
                | Rejection::UpstreamProtocolError,
            ) => Ended::GatewayError,
            _ => Ended::of_status(status),
        };
        cluster.report(addr, outcome);
    }
}

impl Gateway {
    fn log_access(&self, session: &Session, ctx: &RequestCtx, status: u16, seconds: f64) {
        let req = session.req_header();
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = redact_query(path, ctx.snap.authn.token_params());
        let token = ctx.authn.as_ref().map(|a| &a.token);
        let cluster = ctx.cluster.and_then(|i| ctx.snap.clusters.get(i));
        self.access_log.log(&Entry {
            time: rfc3339(std::time::SystemTime::now() - ctx.started.elapsed()),
            client: session.client_addr().map(|a| a.to_string()),
            method: req.method.as_str(),
            host: authority(req),
            path: &path,
            status,
            route: ctx.route.as_ref().map(|r| &*r.name),
            cluster: cluster.map(|c| &*c.name),
            upstream: ctx.upstream.map(|a| a.to_string()),
            duration_seconds: seconds,
            bytes_sent: session.body_bytes_sent(),
            bytes_received: session.body_bytes_read(),
            jwt: ctx.jwt.map(|o| o.result),
            issuer: token.map(|t| t.issuer()),
            subject: token.map(|t| t.subject()).filter(|s| !s.is_empty()),
            rejection: ctx.rejection.map(|r| r.reason()),
            policy: ctx.decision.as_ref().and_then(|d| d.policy.as_deref()),
            request_id: req
                .headers
                .get(crate::request::X_REQUEST_ID)
                .and_then(|id| id.to_str().ok()),
        });
    }

    /// Answers with `rejection` and records it.
    async fn reject(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rejection: Rejection,
    ) -> Result<bool> {
        ctx.rejection = Some(rejection);
        let realm = {
            let req = session.req_header();
            format!("http://{}{}", authority(req), req.uri.path())
        };
        let (header, body) = rejection.response(&realm)?;
        self.answer(session, ctx, header, body).await
    }

    /// The copies of this request for the route's mirrors (each sampled by
    /// its share): sent at once without a body, else once the body is read.
    fn mirror(&self, session: &mut Session, upstream: &RequestHeader, ctx: &mut RequestCtx) {
        let Some(forward) = ctx.forward() else {
            return;
        };
        if forward.mirrors.is_empty() {
            return;
        }
        let copies: Vec<_> = forward
            .mirrors
            .iter()
            .filter(|m| {
                m.per_million >= 1_000_000
                    || crate::random::below(1_000_000) < u64::from(m.per_million)
            })
            .filter_map(|m| {
                let cluster = ctx.snap.clusters.get(m.cluster)?.clone();
                // The copy's TLS name is the request's host, not its
                // `-shadow` marker.
                let peer = cluster.peer(host_without_port(authority(upstream)))?;
                Some((cluster, peer))
            })
            .collect();
        if copies.is_empty() {
            return;
        }
        let mut header = upstream.clone();
        let host = authority(&header).to_string();
        if header
            .insert_header(http::header::HOST, mirror::shadow_host(&host))
            .is_err()
        {
            return;
        }
        let pending = mirror::Pending::new(copies, header);
        if session.is_body_empty() {
            pending.send();
        } else {
            ctx.mirror = Some(pending);
        }
    }

    /// Writes an answer of the gateway's own (a rejection, a redirect, a
    /// direct response): every such answer goes out here.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut header: Box<ResponseHeader>,
        body: Bytes,
    ) -> Result<bool> {
        // Envoy applies a route's response operations to the answers it
        // gives for the route too (redirects, direct responses, upstream
        // failures); not to refusals before a route was chosen.
        if let Some(ops) = response_headers(ctx) {
            ops.apply_response(&mut header)?;
        }
        apply_cors(ctx, &mut header)?;
        session
            .write_response_header(header, body.is_empty())
            .await?;
        if !body.is_empty() {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(true)
    }

    /// Carries out the decision on a request: `false` forwards it, `true`
    /// means it was answered here.
    async fn apply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        verdict: Verdict,
    ) -> Result<bool> {
        match verdict {
            Verdict::Forward { .. } => Ok(false),
            Verdict::Reject(rejection) => self.reject(session, ctx, rejection).await,
            Verdict::HttpsRedirect(location) => {
                let header = redirect_header(301, location)?;
                session.write_response_header(header, true).await?;
                Ok(true)
            }
            Verdict::CorsPreflight(preflight) => {
                let mut header = ResponseHeader::build(200, Some(preflight.len() + 1))?;
                for (name, value) in preflight {
                    header.insert_header(name, value)?;
                }
                header.insert_header(http::header::CONTENT_LENGTH, "0")?;
                self.answer(session, ctx, Box::new(header), Bytes::new())
                    .await
            }
            Verdict::Redirect { location, code } => {
                let header = redirect_header(code, location)?;
                self.answer(session, ctx, header, Bytes::new()).await
            }
            Verdict::Direct => {
                let route = ctx.route.clone();
                match route.as_deref().map(|r| &r.action) {
                    Some(Action::Direct(direct)) => {
                        self.direct_response(session, ctx, direct).await
                    }
                    _ => self.reject(session, ctx, Rejection::NoRoute).await,
                }
            }
        }
    }

    /// A route's `directResponse`: its body is `text/plain`, as Envoy's.
    async fn direct_response(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        direct: &DirectResponse,
    ) -> Result<bool> {
        let mut header = ResponseHeader::build(direct.status, Some(2))?;
        header.insert_header(http::header::CONTENT_LENGTH, direct.body.len().to_string())?;
        if !direct.body.is_empty() {
            header.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
        }
        self.answer(session, ctx, Box::new(header), direct.body.clone())
            .await
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        crate::metrics::get().requests_active.inc();
        RequestCtx {
            snap: self.state.load_full(),
            authn: None,
            decision: None,
            cluster: None,
            route: None,
            destination: None,
            span: UriSpan::Prefix(1),
            rejection: None,
            jwt: None,
            started: Instant::now(),
            upstream_sent: None,
            upstream: None,
            endpoint: None,
            retry: RetryState::default(),
            hash_key: None,
            cors: None,
            mirrored: false,
            mirror: None,
        }
    }

    /// The limits of this request on its connection, before anything else.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let idle = ctx.snap.edge.stream_idle_timeout;
        session.set_read_timeout(Some(idle));
        // A client that stops reading its answer holds the upstream
        // connection no longer than this.
        session.set_write_timeout(Some(idle));
        // HTTP/1.1 pipelining: answered in order, one after the other.
        session.set_pipelining_enabled(true);
        let framing = framing(session.req_header());
        if framing == Framing::Unframed {
            // The head guard cannot tell where the next head starts.
            session.set_keepalive(None);
        }
        head_read(session, framing);
        Ok(())
    }

    /// The whole decision is `request::decide`'s; this applies it.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if self.handed_over.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        let conn = Connection {
            listener: &self.listener,
            port: self.port,
            scheme: scheme_of(session),
            peer: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
        };
        let judged = crate::request::decide(
            &ctx.snap,
            &conn,
            session.req_header_mut(),
            unix_now(),
            Keys::Refetch,
            &mut NoTrace,
        )
        .await;
        let verdict = ctx.take(judged);
        self.apply(session, ctx, verdict).await
    }

    /// The endpoint for this attempt. A retry waits Envoy's jittered
    /// backoff first and prefers an endpoint not tried yet; every attempt
    /// is bounded by what is left of the route's `timeout` and by
    /// `perTryTimeout`.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let snap = ctx.snap.clone();
        let cluster = ctx
            .cluster
            .and_then(|i| snap.clusters.get(i))
            .ok_or_else(|| Error::new(ErrorType::Custom(NO_HEALTHY_UPSTREAM)))?;
        // What this attempt needs of the route, copied out (no allocation).
        let tries = ctx.retry.tries();
        let (timeout, per_try, backoff) = match ctx.forward() {
            Some(f) => (
                f.timeout,
                f.retry.as_ref().and_then(|p| p.per_try_timeout),
                f.retry.as_ref().map(|p| Backoff {
                    other_hosts: p.other_hosts,
                    ceiling: p.backoff_ceiling(tries),
                }),
            ),
            None => (None, None, None),
        };
        ctx.retry.start_clock(timeout);
        ctx.retry.admit(cluster.limits.as_ref()).await?;
        let hashed = matches!(cluster.policy.balance, Balance::Hash(_));
        ctx.retry
            .next_attempt(backoff, hashed, ctx.upstream, &cluster.retries)
            .await;
        let remaining = ctx.retry.remaining()?;
        pick::peer(session, ctx, cluster, per_try, remaining)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = ctx.retry_after(session, Some(Failure::Connect), Ended::GatewayError);
        e.set_retry(retry);
        e
    }

    /// Retries as the route's policy says (any method, as Envoy: the
    /// request body is replayed from pingora's retry buffer, and a retry
    /// is never made once a byte of the answer reached the client).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if matches!(e.etype(), ErrorType::Custom(RETRY_ON_STATUS)) {
            // Decided in upstream_response_filter.
            e.set_retry(true);
            return e;
        }
        if matches!(e.retry, pingora::RetryType::ReusedOnly)
            && client_reused
            && session.req_header().method.is_idempotent()
            && session.response_written().is_none()
            && !session.as_ref().retry_buffer_truncated()
        {
            ctx.retry.mark_stale();
            e.set_retry(true);
            return e;
        }
        let retry =
            failure_of(&e).is_some_and(|f| ctx.retry_after(session, Some(f), Ended::GatewayError));
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_sent = Some(Instant::now());
        let forward = match ctx.route.as_deref().map(|r| &r.action) {
            Some(Action::Forward(forward)) => Some(forward),
            _ => None,
        };
        let destination = forward.and_then(|f| ctx.destination.and_then(|i| f.destinations.get(i)));
        if let Some(rewrite) = forward.and_then(|f| f.rewrite.as_ref()) {
            let path = upstream.uri.path_and_query().map_or("/", |p| p.as_str());
            let uri = rewrite.apply(path, ctx.span).parse().map_err(|_| {
                Error::explain(ErrorType::InternalError, "the rewritten path is not a URI")
            })?;
            upstream.set_uri(uri);
        }
        if let Some(authority) = destination.and_then(|d| d.authority.clone()) {
            upstream.insert_header(http::header::HOST, authority)?;
        }
        // The route's operations come last, as Envoy's router applies them
        // after the JWT filter has written its headers.
        if let Some(d) = destination {
            d.request_headers.apply_request(upstream)?;
        }
        if !ctx.mirrored {
            ctx.mirrored = true;
            self.mirror(session, upstream, ctx);
        }
        Ok(())
    }

    /// Collects the request body for the mirrors' copies; the copies go
    /// once it is whole.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(pending) = ctx.mirror.as_mut() {
            if let Some(chunk) = body {
                if !pending.push(chunk) {
                    ctx.mirror = None;
                    return Ok(());
                }
            }
            if end_of_stream {
                if let Some(pending) = ctx.mirror.take() {
                    pending.send();
                }
            }
        }
        Ok(())
    }

    /// The route's response header operations, on the upstream's answer.
    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(ops) = response_headers(ctx) {
            ops.apply_response(response)?;
        }
        apply_cors(ctx, response)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let cluster = ctx.cluster.and_then(|i| ctx.snap.clusters.get(i));
        if let (Some(cluster), Some(sent)) = (cluster, ctx.upstream_sent) {
            cluster
                .response_seconds
                .observe(sent.elapsed().as_secs_f64());
        }
        // A response the policy retries is dropped before any of it is
        // sent on; the last attempt's is passed on whatever it is.
        let retried = ctx
            .forward()
            .and_then(|f| f.retry.as_ref())
            .is_some_and(|p| p.retries_response(response.status.as_u16(), &response.headers));
        let status = response.status.as_u16();
        if retried && ctx.retry_after(session, None, Ended::of_status(status)) {
            let mut e = Error::new_up(ErrorType::Custom(RETRY_ON_STATUS));
            e.set_retry(true);
            return Err(e);
        }
        ctx.retry.answer_kept();
        Ok(())
    }

    /// The route's `timeout` also bounds the response body: past it, the
    /// answer is cut off (Envoy resets the stream).
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if !end_of_stream && !ctx.retry.time_left() {
            return Err(Error::explain(
                ErrorType::ReadTimedout,
                "the route's timeout ran out during the response body",
            )
            .into_up());
        }
        Ok(None)
    }

    /// Every metric of a request is recorded here, once, and its access log
    /// line written.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        head_answered(session);
        let metrics = crate::metrics::get();
        metrics.requests_active.dec();
        if let Some(endpoint) = ctx.endpoint.take() {
            endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let seconds = ctx.started.elapsed().as_secs_f64();
        route_metrics(ctx).record(status, seconds);
        if let Some(outcome) = ctx.jwt {
            ctx.snap.authn.record(outcome);
        }
        if let Some(decision) = &ctx.decision {
            ctx.snap.authz.record(decision);
        }
        if let Some(rejection) = ctx.rejection {
            metrics
                .rejections
                .with_label_values(&[rejection.reason()])
                .inc();
        }
        report_outcome(ctx, status);
        if self.access_log.is_on() {
            self.log_access(session, ctx, status, seconds);
        }
    }

    /// A client that goes away mid-request is routine at an edge, not an
    /// error worth a log line per connection.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        error.esource() == &pingora::ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let Some(rejection) = Rejection::from_proxy_error(e) else {
            // A client-side failure: nothing useful to send, or pingora's 400.
            let code = match e.etype() {
                ErrorType::HTTPStatus(code) => *code,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            };
            if code > 0 && session.response_written().is_none() {
                let _ = session.respond_error(code).await;
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        };
        ctx.rejection = Some(rejection);
        // An answer of the gateway's own leaves a keep-alive connection
        // usable, as Envoy's local replies do; one cut mid-answer does not.
        let mut whole_answer = false;
        if session.response_written().is_none() {
            match self.reject(session, ctx, rejection).await {
                Ok(_) => whole_answer = true,
                Err(write_error) => {
                    tracing::debug!(%write_error, "could not send the error response")
                }
            }
        }
        FailToProxy {
            error_code: rejection.status(),
            can_reuse_downstream: whole_answer,
        }
    }
}
