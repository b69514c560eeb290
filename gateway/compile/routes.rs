//! VirtualServices: their HTTP routes and what each route does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::{
    parse_duration, HttpBody, HttpDirectResponse, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute,
    Resource, StringMatch, VirtualServiceSpec,
};
use crate::metrics::RouteMetrics;
use crate::proxy::listener_port;
use crate::routing::{
    Action, ClaimPath, Condition, DirectResponse, Forward, HeaderOps, MatchRule, Mirror,
    PathRewrite, Redirect, RedirectPort, RetryPolicy, Route, RouteDestination, UriSpan,
    WeightedPicker, MAX_RETRIES,
};

use super::headers::{authority_value, LevelOps};
use super::listeners::{intersect, on_listener, GatewayServers};
use super::matchers::string_matcher;
use super::services::Service;
use super::Compiler;

/// Istio refuses a `directResponse` body over 1 MiB.
pub(super) const MAX_DIRECT_RESPONSE_BODY: usize = 1 << 20;

impl Compiler {
    pub(super) fn virtual_service(
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

    pub(super) fn route(
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
                    string_matcher(sm, present, fold)
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

    /// Fields that only make sense for a route that forwards are refused
    /// on one the gateway answers itself (`what`).
    pub(super) fn forward_only(
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
    pub(super) fn redirect(
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
    pub(super) fn direct_response(
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
    pub(super) fn forward(
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
    pub(super) fn mirrors(
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
    pub(super) fn timeout(
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
    pub(super) fn retry(
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
    pub(super) fn rewrite(
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
}
