//! The one table that turns every refusal into a response: status, body and
//! headers. Bodies are Envoy's words, so tooling written for Istio keeps
//! working.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorSource, ErrorType};

use crate::jwt::JwtError;

/// Every `reason()` there is: the label values of
/// `claimgate_rejections_total`, each present from the start at 0.
pub const REASONS: &[&str] = &[
    "malformed",
    "expired",
    "not_yet_valid",
    "unknown_issuer",
    "unknown_kid",
    "bad_signature",
    "audience",
    "jwks_unavailable",
    "multiple_tokens",
    "authz_denied",
    "no_route",
    "no_healthy_upstream",
    "upstream_connect_failure",
    "upstream_reset",
    "upstream_timeout",
    "upstream_protocol_error",
    "upstream_overflow",
];

/// Why the gateway answered instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Authentication failed (401, or 403 for an audience mismatch).
    Jwt(JwtError),
    /// An AuthorizationPolicy denied the request (or none allowed it).
    Denied,
    /// No route of the virtual host matched.
    NoRoute,
    /// The cluster had no endpoint to offer.
    NoHealthyUpstream,
    /// Connecting to the chosen endpoint failed.
    ConnectFailure,
    /// The upstream closed or reset before answering.
    UpstreamReset,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream answered with something that is not HTTP.
    UpstreamProtocolError,
    /// A `connectionPool` limit of the cluster was reached.
    Overflow,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::Jwt(e) => e.status(),
            Rejection::Denied => 403,
            Rejection::NoRoute => 404,
            Rejection::NoHealthyUpstream
            | Rejection::ConnectFailure
            | Rejection::UpstreamReset
            | Rejection::UpstreamProtocolError
            | Rejection::Overflow => 503,
            Rejection::UpstreamTimeout => 504,
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Rejection::Jwt(e) => e.message(),
            Rejection::Denied => "RBAC: access denied",
            Rejection::NoRoute => "",
            Rejection::NoHealthyUpstream => "no healthy upstream",
            Rejection::ConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            Rejection::UpstreamReset => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            Rejection::UpstreamTimeout => "upstream request timeout",
            Rejection::UpstreamProtocolError => {
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
            }
            Rejection::Overflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
        }
    }

    /// A bounded label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Jwt(e) => e.reason(),
            Rejection::Denied => "authz_denied",
            Rejection::NoRoute => "no_route",
            Rejection::NoHealthyUpstream => "no_healthy_upstream",
            Rejection::ConnectFailure => "upstream_connect_failure",
            Rejection::UpstreamReset => "upstream_reset",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::UpstreamProtocolError => "upstream_protocol_error",
            Rejection::Overflow => "upstream_overflow",
        }
    }

    /// Classifies a proxying error; `None` for errors on the client side
    /// (the client is gone or sent garbage: pingora's own answer stands).
    pub fn from_proxy_error(e: &Error) -> Option<Rejection> {
        use ErrorType::*;
        match e.etype() {
            Custom(NO_HEALTHY_UPSTREAM) => return Some(Rejection::NoHealthyUpstream),
            Custom(UPSTREAM_TIMEOUT) => return Some(Rejection::UpstreamTimeout),
            Custom(OVERFLOW) => return Some(Rejection::Overflow),
            _ => {}
        }
        if e.esource() != &ErrorSource::Upstream {
            return None;
        }
        Some(match e.etype() {
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError
            | ConnectProxyFailure | TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert
            | SocketError | BindError => Rejection::ConnectFailure,
            ReadTimedout | WriteTimedout => Rejection::UpstreamTimeout,
            InvalidHTTPHeader | H1Error | H2Error | InvalidH2 => Rejection::UpstreamProtocolError,
            _ => Rejection::UpstreamReset,
        })
    }

    /// The response header. A JWT failure carries `WWW-Authenticate` with
    /// the request URL as realm, as Envoy sends it.
    pub fn response(self, realm: &str) -> pingora::Result<(Box<ResponseHeader>, Bytes)> {
        let body = Bytes::from_static(self.body().as_bytes());
        let mut header = ResponseHeader::build(self.status(), Some(4))?;
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        if !body.is_empty() {
            header.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
        }
        if let Rejection::Overflow = self {
            // Envoy's mark of a local circuit breaker: callers should not
            // retry into it.
            header.insert_header("x-envoy-overloaded", "true")?;
        }
        if let Rejection::Jwt(_) = self {
            let realm = realm.replace('"', "%22");
            let value = format!("Bearer realm=\"{realm}\", error=\"invalid_token\"");
            header.insert_header(http::header::WWW_AUTHENTICATE, value)?;
        }
        Ok((Box::new(header), body))
    }
}

/// The `Custom` error type `upstream_peer` raises for an empty cluster.
pub const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";

/// The `Custom` error type `upstream_peer` raises when the route's
/// `timeout` ran out before another attempt could be made.
pub const UPSTREAM_TIMEOUT: &str = "upstream request timeout";

/// The `Custom` error type `upstream_peer` raises when a `connectionPool`
/// limit of the cluster is reached.
pub const OVERFLOW: &str = "upstream overflow";

/// The `Custom` error type of an upstream response the retry policy
/// retries (it never reaches the client).
pub const RETRY_ON_STATUS: &str = "retriable upstream status";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_a_listed_label_value() {
        use JwtError::*;
        let jwt = [
            BadFormat,
            HeaderBadBase64,
            HeaderBadJson,
            HeaderBadAlg,
            HeaderNotImplementedAlg,
            HeaderBadKid,
            HeaderCritUnsupported,
            TooLarge,
            PayloadBadBase64,
            PayloadBadJson,
            PayloadIssNotString,
            PayloadSubNotString,
            PayloadIatNotInteger,
            PayloadNbfNotInteger,
            PayloadExpNotInteger,
            PayloadAudNotStringOrList,
            SignatureBadBase64,
            UnknownIssuer,
            Expired,
            NotYetValid,
            AudienceNotAllowed,
            KidAlgMismatch,
            VerificationFail,
            JwksFetchFail,
            MultipleTokens,
        ];
        let others = [
            Rejection::Denied,
            Rejection::NoRoute,
            Rejection::NoHealthyUpstream,
            Rejection::ConnectFailure,
            Rejection::UpstreamReset,
            Rejection::UpstreamTimeout,
            Rejection::UpstreamProtocolError,
            Rejection::Overflow,
        ];
        let all = jwt.into_iter().map(Rejection::Jwt).chain(others);
        let mut seen = std::collections::HashSet::new();
        for rejection in all {
            assert!(REASONS.contains(&rejection.reason()), "{rejection:?}");
            seen.insert(rejection.reason());
        }
        assert_eq!(seen.len(), REASONS.len(), "a listed reason nothing gives");
    }
}
