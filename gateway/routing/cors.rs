//! `corsPolicy`, as Envoy's CORS filter applies Istio's translation of it.
//! The filter runs before authentication: a preflight is answered without
//! a token, and the policy is the one of the route a request matches
//! before its token is read (claim conditions cannot hold yet).

use http::{HeaderMap, HeaderValue};

use super::StringMatcher;

/// A compiled `corsPolicy`.
#[derive(Debug, Clone)]
pub struct Cors {
    /// `allowOrigins`: an origin that any of them matches is allowed (so is
    /// every origin, when one of them matches `*`).
    pub origins: Vec<StringMatcher>,
    /// `allowMethods` joined by `,`; `*` answers the requested method.
    pub allow_methods: Option<HeaderValue>,
    /// `allowHeaders` joined by `,`; `*` answers the requested headers.
    pub allow_headers: Option<HeaderValue>,
    /// `exposeHeaders` joined by `,`.
    pub expose_headers: Option<HeaderValue>,
    /// `maxAge`, whole seconds.
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
    /// `unmatchedPreflights: FORWARD` (the default): a preflight from an
    /// origin not allowed goes on like any request; `IGNORE`: it is
    /// answered here, without `Access-Control-Allow-Origin`.
    pub forward_unmatched_preflights: bool,
}

/// What Envoy's CORS filter does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsVerdict {
    /// Not a CORS request for this policy's purposes.
    None,
    /// A request from an allowed origin: its answer carries the CORS
    /// response headers.
    Allowed,
    /// A preflight the gateway answers now with these headers.
    Preflight(Vec<(http::HeaderName, HeaderValue)>),
}

impl Cors {
    /// Whether `origin` is allowed (Envoy's `isOriginAllowed`).
    pub fn allows(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|m| m.matches("*") || m.matches(origin))
    }

    /// The filter's decision for a request with `method`, `headers` and a
    /// non-empty `Origin`.
    pub fn verdict(&self, method: &str, headers: &HeaderMap, origin: &HeaderValue) -> CorsVerdict {
        let allowed = origin.to_str().is_ok_and(|o| self.allows(o));
        let request_method = headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|v| !v.is_empty());
        let Some(request_method) = request_method.filter(|_| method == "OPTIONS") else {
            return if allowed {
                CorsVerdict::Allowed
            } else {
                CorsVerdict::None
            };
        };
        if !allowed && self.forward_unmatched_preflights {
            return CorsVerdict::None;
        }
        use http::header::*;
        let mut out = Vec::with_capacity(5);
        if allowed {
            out.push((ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
        }
        if self.allow_credentials {
            out.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(methods) = &self.allow_methods {
            let value = if methods == "*" {
                request_method.clone()
            } else {
                methods.clone()
            };
            out.push((ACCESS_CONTROL_ALLOW_METHODS, value));
        }
        if let Some(allowed_headers) = &self.allow_headers {
            let value = if allowed_headers == "*" {
                headers
                    .get(ACCESS_CONTROL_REQUEST_HEADERS)
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static(""))
            } else {
                allowed_headers.clone()
            };
            out.push((ACCESS_CONTROL_ALLOW_HEADERS, value));
        }
        if let Some(max_age) = &self.max_age {
            out.push((ACCESS_CONTROL_MAX_AGE, max_age.clone()));
        }
        CorsVerdict::Preflight(out)
    }

    /// The headers an allowed request's answer gets (Envoy's
    /// `encodeHeaders`): the origin, credentials, exposed headers.
    pub fn apply(
        &self,
        origin: &HeaderValue,
        response: &mut pingora::http::ResponseHeader,
    ) -> pingora::Result<()> {
        use http::header::*;
        response.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())?;
        if self.allow_credentials {
            response.insert_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        }
        if let Some(expose) = &self.expose_headers {
            response.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: Vec<StringMatcher>) -> Cors {
        Cors {
            origins,
            allow_methods: Some(HeaderValue::from_static("GET,POST")),
            allow_headers: Some(HeaderValue::from_static("*")),
            expose_headers: None,
            max_age: Some(HeaderValue::from_static("600")),
            allow_credentials: true,
            forward_unmatched_preflights: true,
        }
    }

    fn preflight(method: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("access-control-request-method", method.parse().unwrap());
        h.insert(
            "access-control-request-headers",
            "x-a, x-b".parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_is_answered() {
        let c = cors(vec![StringMatcher::Exact("https://app.example.com".into())]);
        let origin = HeaderValue::from_static("https://app.example.com");
        let CorsVerdict::Preflight(headers) = c.verdict("OPTIONS", &preflight("PUT"), &origin)
        else {
            panic!("not answered");
        };
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            get("access-control-allow-origin").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            get("access-control-allow-methods").as_deref(),
            Some("GET,POST")
        );
        // `*` answers what was asked for.
        assert_eq!(
            get("access-control-allow-headers").as_deref(),
            Some("x-a, x-b")
        );
        assert_eq!(get("access-control-max-age").as_deref(), Some("600"));
        assert_eq!(
            get("access-control-allow-credentials").as_deref(),
            Some("true")
        );
    }

    #[test]
    fn other_origins_and_plain_requests_are_told_apart() {
        let c = cors(vec![StringMatcher::Prefix("https://".into())]);
        let evil = HeaderValue::from_static("http://evil.example");
        // A preflight from another origin goes on (FORWARD)...
        assert_eq!(
            c.verdict("OPTIONS", &preflight("GET"), &evil),
            CorsVerdict::None
        );
        // ... or is answered without an allowed origin (IGNORE).
        let ignore = Cors {
            forward_unmatched_preflights: false,
            ..c.clone()
        };
        match ignore.verdict("OPTIONS", &preflight("GET"), &evil) {
            CorsVerdict::Preflight(h) => {
                assert!(h.iter().all(|(k, _)| k != "access-control-allow-origin"))
            }
            other => panic!("{other:?}"),
        }
        // An OPTIONS without Access-Control-Request-Method is no preflight.
        let good = HeaderValue::from_static("https://a.example");
        assert_eq!(
            c.verdict("OPTIONS", &HeaderMap::new(), &good),
            CorsVerdict::Allowed
        );
        assert_eq!(
            c.verdict("GET", &HeaderMap::new(), &good),
            CorsVerdict::Allowed
        );
        assert_eq!(
            c.verdict("GET", &HeaderMap::new(), &evil),
            CorsVerdict::None
        );
    }

    #[test]
    fn a_matcher_that_matches_star_allows_every_origin() {
        let c = cors(vec![StringMatcher::Exact("*".into())]);
        assert!(c.allows("https://anything.example"));
    }
}
