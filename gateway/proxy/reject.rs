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
    "bad_request",
    "headers_too_large",
    // Counted by the head guard, which answers 408 itself.
    "request_header_timeout",
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
    /// The TLS handshake with the chosen endpoint failed (DestinationRule
    /// `tls`), or the request has no name to make it with.
    UpstreamTls(TlsFailure),
    /// The upstream closed or reset before answering.
    UpstreamReset,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream answered with something that is not HTTP.
    UpstreamProtocolError,
    /// A `connectionPool` limit of the cluster was reached.
    Overflow,
    /// A request the gateway will not judge: a target that is neither
    /// origin- nor absolute-form, a path with `%00`, no host, a method not
    /// in upper case (Envoy's 400).
    BadRequest,
    /// More header bytes or headers than `maxRequestHeadersKb` /
    /// `maxHeadersCount` allow (Envoy's 431).
    HeadersTooLarge,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::Jwt(e) => e.status(),
            Rejection::Denied => 403,
            Rejection::NoRoute => 404,
            Rejection::NoHealthyUpstream
            | Rejection::ConnectFailure
            | Rejection::UpstreamTls(_)
            | Rejection::UpstreamReset
            | Rejection::UpstreamProtocolError
            | Rejection::Overflow => 503,
            Rejection::UpstreamTimeout => 504,
            Rejection::BadRequest => 400,
            Rejection::HeadersTooLarge => 431,
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Rejection::Jwt(e) => e.message(),
            Rejection::Denied => "RBAC: access denied",
            Rejection::NoRoute | Rejection::BadRequest | Rejection::HeadersTooLarge => "",
            Rejection::NoHealthyUpstream => "no healthy upstream",
            Rejection::ConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            Rejection::UpstreamTls(failure) => failure.body(),
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
            // Envoy's UF flag: a TLS failure is a connection failure.
            Rejection::ConnectFailure | Rejection::UpstreamTls(_) => "upstream_connect_failure",
            Rejection::UpstreamReset => "upstream_reset",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::UpstreamProtocolError => "upstream_protocol_error",
            Rejection::Overflow => "upstream_overflow",
            Rejection::BadRequest => "bad_request",
            Rejection::HeadersTooLarge => "headers_too_large",
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
            Custom(NO_SERVER_NAME) => {
                return Some(Rejection::UpstreamTls(TlsFailure::NoServerName))
            }
            _ => {}
        }
        if e.esource() != &ErrorSource::Upstream {
            return None;
        }
        Some(match e.etype() {
            TLSHandshakeFailure | InvalidCert => Rejection::UpstreamTls(TlsFailure::of(e)),
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError
            | ConnectProxyFailure | TLSHandshakeTimedout | SocketError | BindError => {
                Rejection::ConnectFailure
            }
            ReadTimedout | WriteTimedout => Rejection::UpstreamTimeout,
            InvalidHTTPHeader | H1Error | H2Error | InvalidH2 => Rejection::UpstreamProtocolError,
            // TLS 1.3: an upstream that refuses the client certificate (or
            // its absence) says so after the client's side of the
            // handshake, when the response is read.
            _ if e.to_string().contains("received fatal alert") => {
                Rejection::UpstreamTls(TlsFailure::Alert)
            }
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

/// The `Custom` error type `upstream_peer` raises when the cluster speaks
/// TLS without `sni` and the request's host cannot be a server name.
pub const NO_SERVER_NAME: &str = "no TLS server name";

/// Why a TLS handshake with an upstream failed, as far as the client may
/// be told: Envoy's reason (BoringSSL's, without its error number) and
/// what it means, never a certificate's names or dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The chain does not lead to a trusted CA.
    UnknownIssuer,
    /// The certificate is not valid for the name verified.
    WrongName,
    /// The certificate has expired or is not valid yet.
    Expired,
    /// Any other certificate problem.
    BadCertificate,
    /// The upstream answered the handshake with a fatal alert (a client
    /// certificate it wanted and did not get or refused, a version or
    /// cipher it does not have).
    Alert,
    /// The upstream does not speak TLS (plain HTTP on that port).
    NotTls,
    /// Anything else in the handshake.
    Handshake,
    /// No server name to send and verify: `sni` is not set and the
    /// request's host cannot be one.
    NoServerName,
}

impl TlsFailure {
    /// Classifies pingora's handshake error by rustls's words in it (the
    /// error keeps no typed cause).
    pub fn of(e: &Error) -> TlsFailure {
        let text = e.to_string();
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if has(&["UnknownIssuer"]) {
            TlsFailure::UnknownIssuer
        } else if has(&["NotValidForName", "certificate not valid for name"]) {
            TlsFailure::WrongName
        } else if has(&[
            "Expired",
            "certificate expired",
            "NotValidYet",
            "certificate not valid yet",
        ]) {
            TlsFailure::Expired
        } else if has(&["invalid peer certificate", "peer sent no certificates"]) {
            TlsFailure::BadCertificate
        } else if has(&["received fatal alert"]) {
            TlsFailure::Alert
        } else if has(&["received corrupt message"]) {
            TlsFailure::NotTls
        } else {
            TlsFailure::Handshake
        }
    }

    fn body(self) -> &'static str {
        match self {
            TlsFailure::UnknownIssuer => "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: CERTIFICATE_VERIFY_FAILED: the certificate is not signed by a trusted CA",
            TlsFailure::WrongName => "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: CERTIFICATE_VERIFY_FAILED: the certificate is not valid for the server name",
            TlsFailure::Expired => "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: CERTIFICATE_VERIFY_FAILED: the certificate has expired or is not valid yet",
            TlsFailure::BadCertificate => "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: CERTIFICATE_VERIFY_FAILED",
            TlsFailure::Alert => "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: the upstream refused the handshake (TLS alert)",
            TlsFailure::NotTls => "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: WRONG_VERSION_NUMBER: the upstream does not speak TLS",
            TlsFailure::Handshake => "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: handshake failure",
            TlsFailure::NoServerName => "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: no server name: the request's host is not a DNS name or IP address",
        }
    }
}

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
        let others = [
            Rejection::Denied,
            Rejection::NoRoute,
            Rejection::NoHealthyUpstream,
            Rejection::ConnectFailure,
            Rejection::UpstreamTls(TlsFailure::UnknownIssuer),
            Rejection::UpstreamReset,
            Rejection::UpstreamTimeout,
            Rejection::UpstreamProtocolError,
            Rejection::Overflow,
            Rejection::BadRequest,
            Rejection::HeadersTooLarge,
        ];
        let all = JwtError::ALL.into_iter().map(Rejection::Jwt).chain(others);
        let mut seen = std::collections::HashSet::new();
        for rejection in all {
            assert!(REASONS.contains(&rejection.reason()), "{rejection:?}");
            seen.insert(rejection.reason());
        }
        // The head guard's own reason, not a `Rejection` of the proxy's.
        seen.insert("request_header_timeout");
        assert_eq!(seen.len(), REASONS.len(), "a listed reason nothing gives");
    }

    #[test]
    fn a_tls_handshake_failure_says_why_without_the_certificate_names() {
        // The contexts pingora's rustls connector gives, with rustls's words.
        let failure = |context: &str| {
            let mut e = Error::explain(ErrorType::TLSHandshakeFailure, context.to_string());
            e.esource = ErrorSource::Upstream;
            let rejection = Rejection::from_proxy_error(&e).unwrap();
            assert_eq!(rejection.status(), 503);
            assert_eq!(rejection.reason(), "upstream_connect_failure");
            let body = rejection.body();
            assert!(body.starts_with("upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: "), "{body}");
            assert!(!body.contains("example"), "{body}");
            rejection
        };
        let tls = |f| Rejection::UpstreamTls(f);
        assert_eq!(
            failure(
                "TLS connect() failed: invalid peer certificate: UnknownIssuer, SNI: a.example"
            ),
            tls(TlsFailure::UnknownIssuer)
        );
        assert_eq!(
            failure("TLS connect() failed: invalid peer certificate: certificate not valid for name \"a.example\"; certificate is only valid for DnsName(\"b.example\"), SNI: a.example"),
            tls(TlsFailure::WrongName)
        );
        assert_eq!(
            failure("TLS connect() failed: invalid peer certificate: certificate expired: verification time 2 (UNIX), but certificate is not valid after 1 (1 seconds ago), SNI: a.example"),
            tls(TlsFailure::Expired)
        );
        assert_eq!(
            failure(
                "TLS connect() failed: received fatal alert: CertificateRequired, SNI: a.example"
            ),
            tls(TlsFailure::Alert)
        );
        assert_eq!(
            failure("TLS connect() failed: received corrupt message of type InvalidContentType, SNI: a.example"),
            tls(TlsFailure::NotTls)
        );
        assert_eq!(
            failure(
                "TLS connect() failed: Connection reset by peer (os error 104), SNI: a.example"
            ),
            tls(TlsFailure::Handshake)
        );
        let mut read = Error::explain(ErrorType::ReadError, "while reading response headers");
        read.esource = ErrorSource::Upstream;
        assert_eq!(
            Rejection::from_proxy_error(&read),
            Some(Rejection::UpstreamReset)
        );
        read.cause = Some("received fatal alert: CertificateRequired".into());
        assert_eq!(
            Rejection::from_proxy_error(&read),
            Some(tls(TlsFailure::Alert))
        );
        assert_eq!(
            Rejection::from_proxy_error(&Error::new(ErrorType::Custom(NO_SERVER_NAME))),
            Some(tls(TlsFailure::NoServerName))
        );
    }
}
