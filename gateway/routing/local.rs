//! Answers the gateway gives itself for a route: `redirect` (Envoy's
//! `RedirectAction`, as Istio translates `HTTPRedirect`) and
//! `directResponse`.

use bytes::Bytes;

/// The port of a redirect's `Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    /// `port: N`.
    Fixed(u16),
    /// `derivePort: FROM_REQUEST_PORT`: the listener's port.
    FromRequest,
}

/// `redirect`: where to send the client, and with which status.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// `http` or `https`; `None`: the request's.
    pub scheme: Option<&'static str>,
    /// `authority`; `None`: the request's `Host`.
    pub authority: Option<String>,
    pub port: Option<RedirectPort>,
    /// `uri`: the new path (and query, if it has one).
    pub path: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    pub code: u16,
}

impl Redirect {
    /// The `Location` for a request with scheme `scheme`, `Host` `host`,
    /// `path_and_query` as received, on listener port `listener_port`:
    /// Envoy's `newUri`.
    pub fn location(
        &self,
        scheme: &str,
        host: &str,
        listener_port: u16,
        path_and_query: &str,
    ) -> String {
        let final_scheme = self.scheme.unwrap_or(scheme);
        // Istio writes no explicit :80 for http or :443 for https.
        let port = match self.port {
            Some(RedirectPort::Fixed(p)) => Some(p),
            Some(RedirectPort::FromRequest) => Some(listener_port),
            None => None,
        }
        .filter(|&p| !matches!((p, final_scheme), (80, "http") | (443, "https")));
        let host = match &self.authority {
            Some(authority) => authority.as_str(),
            None => request_host(host, scheme, final_scheme, port.is_some()),
        };
        let mut location =
            String::with_capacity(final_scheme.len() + host.len() + path_and_query.len() + 16);
        location.push_str(final_scheme);
        location.push_str("://");
        location.push_str(host);
        if let Some(port) = port {
            location.push(':');
            location.push_str(&port.to_string());
        }
        match &self.path {
            // A new path with a query replaces the request's query;
            // without one, the request's query is kept.
            Some(path) => {
                if !path.starts_with('/') {
                    location.push('/');
                }
                location.push_str(path);
                if !path.contains('?') {
                    if let Some(at) = path_and_query.find('?') {
                        location.push_str(&path_and_query[at..]);
                    }
                }
            }
            None => {
                if !path_and_query.starts_with('/') {
                    location.push('/');
                }
                location.push_str(path_and_query);
            }
        }
        location
    }
}

/// The request's `Host` for a redirect that keeps it: its port is dropped
/// when the redirect sets one, or when the scheme changes and the port was
/// the old scheme's default (Envoy's `processRequestHost`).
fn request_host<'h>(host: &'h str, scheme: &str, new_scheme: &str, new_port: bool) -> &'h str {
    let port_at = if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    };
    let Some(at) = port_at else {
        return host;
    };
    let port = &host[at..];
    let default_port = (scheme == "http" && port == ":80") || (scheme == "https" && port == ":443");
    if new_port || (new_scheme != scheme && default_port) {
        &host[..at]
    } else {
        host
    }
}

/// `directResponse`: a fixed status and body.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    pub status: u16,
    pub body: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> Redirect {
        Redirect {
            scheme: None,
            authority: None,
            port: None,
            path: None,
            code: 301,
        }
    }

    #[test]
    fn a_uri_redirect_keeps_host_and_query_unless_it_has_its_own() {
        let r = Redirect {
            path: Some("/new".into()),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "example.com:8080", 8080, "/old?a=1"),
            "http://example.com:8080/new?a=1"
        );
        let r = Redirect {
            path: Some("/new?b=2".into()),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "example.com", 80, "/old?a=1"),
            "http://example.com/new?b=2"
        );
    }

    #[test]
    fn a_scheme_change_drops_the_old_default_port_only() {
        let r = Redirect {
            scheme: Some("https"),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "example.com:80", 80, "/a?b"),
            "https://example.com/a?b"
        );
        assert_eq!(
            r.location("http", "example.com:8080", 8080, "/a"),
            "https://example.com:8080/a"
        );
    }

    #[test]
    fn a_port_replaces_the_host_port_and_defaults_are_left_out() {
        let r = Redirect {
            port: Some(RedirectPort::Fixed(8443)),
            scheme: Some("https"),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "example.com:8080", 8080, "/a"),
            "https://example.com:8443/a"
        );
        let r = Redirect {
            port: Some(RedirectPort::Fixed(443)),
            scheme: Some("https"),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "example.com:8080", 8080, "/a"),
            "https://example.com:8080/a"
        );
        let r = Redirect {
            port: Some(RedirectPort::FromRequest),
            authority: Some("other.example.com".into()),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "example.com", 9000, "/a"),
            "http://other.example.com:9000/a"
        );
        assert_eq!(
            r.location("http", "[::1]:9000", 9000, "/a"),
            "http://other.example.com:9000/a"
        );
        let r = Redirect {
            port: Some(RedirectPort::Fixed(81)),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "[::1]:9000", 9000, "/"),
            "http://[::1]:81/"
        );
    }
}
