//! The endpoint and connection settings of one attempt at the upstream.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::{RequestCtx, NO_HEALTHY_UPSTREAM, NO_SERVER_NAME};
use crate::request::request_host;
use crate::routing::host_without_port;
use crate::upstream::{Balance, Cluster, HashOn};

/// The peer for this attempt at `cluster`: an endpoint by the cluster's
/// balancing that avoids the endpoints tried, with its TLS name, and
/// timeouts bounded by `per_try` and by what is `remaining` of the route's
/// `timeout`. The endpoint is counted in flight until `logging` (or the
/// next attempt's pick).
pub(super) fn peer(
    session: &Session,
    ctx: &mut RequestCtx,
    cluster: &Cluster,
    per_try: Option<Duration>,
    remaining: Option<Duration>,
) -> Result<Box<HttpPeer>> {
    // A header the gateway writes from the token is in the request
    // already (and a client's copy is not), as Envoy adds it before
    // routing. The request does not change between attempts: the key is
    // computed once.
    let key = ctx
        .hash_key
        .get_or_insert_with(|| match &cluster.policy.balance {
            Balance::Hash(on) => hash_key(on, session),
            _ => Vec::new(),
        });
    let addr = cluster
        .pick_avoiding(key, ctx.retry.tried())
        .ok_or_else(|| Error::new(ErrorType::Custom(NO_HEALTHY_UPSTREAM)))?;
    // Only TLS needs the host (its server name); no work otherwise.
    let host = match cluster.policy.tls {
        Some(_) => upstream_host(session, ctx),
        None => Cow::Borrowed(""),
    };
    let mut peer = cluster
        .peer_for(addr, &host)
        .map_err(|_| Error::new(ErrorType::Custom(NO_SERVER_NAME)))?;
    count_in_flight(ctx, cluster, addr);
    set_timeouts(&mut peer, cluster, per_try, remaining);
    ctx.upstream = Some(addr);
    Ok(peer)
}

/// Counts the picked endpoint in flight. A retry picks again: the
/// previous pick is no longer in flight.
fn count_in_flight(ctx: &mut RequestCtx, cluster: &Cluster, addr: SocketAddr) {
    if let Some(previous) = ctx.endpoint.take() {
        previous.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
    let endpoint = cluster.state.get(addr);
    endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
    ctx.endpoint = Some(endpoint);
}

/// An attempt reads and writes no longer than `perTryTimeout` and what is
/// left of the route's `timeout`; it connects no longer than the latter.
fn set_timeouts(
    peer: &mut HttpPeer,
    cluster: &Cluster,
    per_try: Option<Duration>,
    remaining: Option<Duration>,
) {
    let attempt = match (per_try, remaining) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(attempt) = attempt {
        peer.options.read_timeout = Some(attempt);
        peer.options.write_timeout = Some(attempt);
    }
    if let Some(remaining) = remaining {
        let connect = cluster.connect_timeout().min(remaining);
        peer.options.connection_timeout = Some(connect);
        peer.options.total_connection_timeout = Some(connect);
    }
}

/// The host the upstream request is for, without port: the destination's
/// `rewrite.authority` (or `host` header operation), else the client's.
/// Envoy's automatic SNI reads the same.
fn upstream_host<'s>(session: &'s Session, ctx: &'s RequestCtx) -> Cow<'s, str> {
    let rewritten = ctx
        .forward()
        .and_then(|f| ctx.destination.and_then(|i| f.destinations.get(i)))
        .and_then(|d| d.authority.as_ref());
    match rewritten {
        Some(authority) => {
            Cow::Owned(host_without_port(authority.to_str().unwrap_or("")).to_ascii_lowercase())
        }
        None => request_host(session.req_header()),
    }
}

/// What a consistent hash policy hashes in this request: a header's
/// value, a cookie's, the client's IP, or a query parameter's (empty when
/// absent: those requests share one endpoint).
fn hash_key(on: &HashOn, session: &Session) -> Vec<u8> {
    let req = session.req_header();
    match on {
        HashOn::Header(name) => req
            .headers
            .get(name)
            .map_or_else(Vec::new, |v| v.as_bytes().to_vec()),
        HashOn::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map_or_else(Vec::new, |(_, v)| v.as_bytes().to_vec()),
        HashOn::SourceIp => session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or_else(Vec::new, |a| a.ip().to_string().into_bytes()),
        HashOn::QueryParameter(param) => req
            .uri
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| k == param)
            .map_or_else(Vec::new, |(_, v)| v.as_bytes().to_vec()),
    }
}
