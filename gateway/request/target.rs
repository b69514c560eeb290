//! The request target (RFC 9112 §3.2) and the request's host.
//!
//! Only origin-form (`/path?query`), absolute-form (`http://host/path`)
//! and `OPTIONS *` are requests a gateway serves; anything else (`admin`,
//! `./admin`, `\admin`, `%2Fadmin`, `*/admin`) Envoy's codec refuses as an
//! invalid URL, and so do we.

use std::borrow::Cow;

use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;

use crate::routing::host_without_port;

/// The target, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'r> {
    /// `/path?query`; also the path of an absolute-form target, whose
    /// authority is then `authority`.
    Path {
        path: &'r [u8],
        query: Option<&'r [u8]>,
        authority: Option<&'r [u8]>,
    },
    /// `*` (only `OPTIONS *` is a request).
    Asterisk,
}

/// Why a target is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTarget;

/// Splits the target as received. A fragment is never part of it.
pub fn classify(raw: &[u8]) -> Result<Target<'_>, BadTarget> {
    let raw = raw.split(|&b| b == b'#').next().unwrap_or_default();
    if raw == b"*" {
        return Ok(Target::Asterisk);
    }
    let (path_and_query, authority) = match raw.first() {
        Some(b'/') => (raw, None),
        _ => match raw_target_authority(raw) {
            RawTargetAuthority::Absolute {
                scheme,
                authority,
                path_and_query,
            } if is_http(scheme) && !authority.is_empty() => (path_and_query, Some(authority)),
            _ => return Err(BadTarget),
        },
    };
    let (path, query) = match path_and_query.iter().position(|&b| b == b'?') {
        Some(at) => (&path_and_query[..at], Some(&path_and_query[at + 1..])),
        None => (path_and_query, None),
    };
    // An absolute-form target's path is empty or starts with `/`.
    let path: &[u8] = match path {
        [] => b"/",
        [b'/', ..] => path,
        _ => return Err(BadTarget),
    };
    Ok(Target::Path {
        path,
        query,
        authority,
    })
}

fn is_http(scheme: &[u8]) -> bool {
    scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")
}

/// The request's authority: `Host`, or the URI's (HTTP/2's `:authority`).
pub fn authority(req: &RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// The host routes and policies read: the authority without its port,
/// lower case (borrowed unless it had upper case).
pub fn request_host(req: &RequestHeader) -> Cow<'_, str> {
    let host = host_without_port(authority(req));
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> Option<(String, Option<String>, Option<String>)> {
        match classify(raw.as_bytes()).ok()? {
            Target::Path {
                path,
                query,
                authority,
            } => {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                Some((text(path), query.map(text), authority.map(text)))
            }
            Target::Asterisk => None,
        }
    }

    #[test]
    fn origin_and_absolute_forms_are_split() {
        let origin = path("/a/b?x=1#frag").unwrap();
        assert_eq!(origin, ("/a/b".into(), Some("x=1".into()), None));
        let absolute = path("HTTP://Admin.Example.com:8080/x?q").unwrap();
        assert_eq!(
            absolute,
            (
                "/x".into(),
                Some("q".into()),
                Some("Admin.Example.com:8080".into())
            )
        );
        assert_eq!(path("http://h").unwrap().0, "/");
        assert_eq!(
            path("http://h?q=1").unwrap(),
            ("/".into(), Some("q=1".into()), Some("h".into()))
        );
        assert_eq!(path("//x").unwrap().0, "//x");
    }

    #[test]
    fn other_targets_are_refused() {
        for raw in [
            "admin",
            "./admin",
            "\\admin",
            "*/admin",
            "%2Fadmin",
            "",
            "ftp://h/x",
            "http:/x",
            "http://",
            "http:///x",
            "?q",
        ] {
            assert_eq!(classify(raw.as_bytes()), Err(BadTarget), "{raw:?}");
        }
        assert_eq!(classify(b"*"), Ok(Target::Asterisk));
    }
}
