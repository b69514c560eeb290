//! A route's CORS policy and header operations.

use http::{HeaderName, HeaderValue};

use crate::config::{parse_duration, CorsPolicy, Headers, Resource, VirtualServiceSpec};
use crate::routing::{operation_name, operation_value, Cors, HeaderOp, HeaderOps, StringMatcher};

use super::matchers::string_matcher;
use super::Compiler;

/// The header operations of one level (a route or a destination):
/// (removals, sets then adds) for the request and for the response, and
/// the authority a request `set`/`add` of `host` gives.
#[derive(Debug, Clone, Default)]
pub(super) struct LevelOps {
    pub(super) request: (Vec<HeaderName>, Vec<HeaderOp>),
    pub(super) response: (Vec<HeaderName>, Vec<HeaderOp>),
    pub(super) authority: Option<HeaderValue>,
}

impl LevelOps {
    pub(super) fn request(&self) -> HeaderOps {
        HeaderOps::level(self.request.0.clone(), self.request.1.clone())
    }

    pub(super) fn response(&self) -> HeaderOps {
        HeaderOps::level(self.response.0.clone(), self.response.1.clone())
    }
}

impl Compiler {
    /// `corsPolicy`, checked as Istio validates it.
    pub(super) fn cors(
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
                    match string_matcher(m, false, false) {
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
    pub(super) fn header_ops(
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
}

/// An authority sent as `Host`: `host` or `host:port`, nothing else.
pub(super) fn authority_value(authority: &str) -> Result<HeaderValue, String> {
    authority
        .parse::<http::uri::Authority>()
        .ok()
        .filter(|a| !a.as_str().contains('@'))
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .ok_or_else(|| format!("`{authority}` is not an authority (host or host:port)"))
}
