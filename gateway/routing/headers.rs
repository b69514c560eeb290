//! `headers.request` / `headers.response` `set`, `add` and `remove`, as
//! Envoy evaluates Istio's translation of them: within one level (a route,
//! or a weighted destination) every `remove` first, then the `set`s and
//! then the `add`s, each in name order. Resolved when the configuration is
//! loaded into one list of operations per destination.

use http::{HeaderMap, HeaderName, HeaderValue};

/// One operation on a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Every value of the header goes.
    Remove(HeaderName),
    /// The header is replaced by this one value (Envoy's
    /// `OVERWRITE_IF_EXISTS_OR_ADD`).
    Set(HeaderName, HeaderValue),
    /// The value is added beside any the header has (Envoy's
    /// `APPEND_IF_EXISTS_OR_ADD`).
    Add(HeaderName, HeaderValue),
}

/// `remove x-a`, `set x-a: 1`, `add x-a: 1`.
impl std::fmt::Display for HeaderOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        match self {
            HeaderOp::Remove(name) => write!(f, "remove {name}"),
            HeaderOp::Set(name, v) => write!(f, "set {name}: {}", value(v)),
            HeaderOp::Add(name, v) => write!(f, "add {name}: {}", value(v)),
        }
    }
}

/// Operations, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps(pub Vec<HeaderOp>);

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The operations of one level: its removals, then its sets and adds.
    pub fn level(remove: Vec<HeaderName>, set_add: Vec<HeaderOp>) -> HeaderOps {
        let mut ops: Vec<HeaderOp> = remove.into_iter().map(HeaderOp::Remove).collect();
        ops.extend(set_add);
        HeaderOps(ops)
    }

    /// These operations, then `later`'s.
    pub fn then(mut self, later: &HeaderOps) -> HeaderOps {
        self.0.extend(later.0.iter().cloned());
        self
    }

    /// Applies the operations to a request to be sent upstream.
    pub fn apply_request(&self, req: &mut pingora::http::RequestHeader) -> pingora::Result<()> {
        for op in &self.0 {
            match op {
                HeaderOp::Remove(name) => {
                    req.remove_header(name);
                }
                HeaderOp::Set(name, value) => req.insert_header(name.clone(), value.clone())?,
                HeaderOp::Add(name, value) => {
                    req.append_header(name.clone(), value.clone())?;
                }
            }
        }
        Ok(())
    }

    /// Applies the operations to a response to be sent to the client.
    pub fn apply_response(&self, resp: &mut pingora::http::ResponseHeader) -> pingora::Result<()> {
        for op in &self.0 {
            match op {
                HeaderOp::Remove(name) => {
                    resp.remove_header(name);
                }
                HeaderOp::Set(name, value) => resp.insert_header(name.clone(), value.clone())?,
                HeaderOp::Add(name, value) => {
                    resp.append_header(name.clone(), value.clone())?;
                }
            }
        }
        Ok(())
    }

    /// The operations applied to a plain header map (for `explain`).
    pub fn apply_map(&self, headers: &mut HeaderMap) {
        for op in &self.0 {
            match op {
                HeaderOp::Remove(name) => {
                    headers.remove(name);
                }
                HeaderOp::Set(name, value) => {
                    headers.insert(name.clone(), value.clone());
                }
                HeaderOp::Add(name, value) => {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
    }
}

/// Headers no route may touch: they frame the message or the connection,
/// and changing them would let a configuration desynchronise the gateway
/// and the upstream (or client) about where a message ends.
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "trailer",
];

/// A header name an operation may use, lower-cased. `host` and `:`
/// pseudo-headers are the caller's to handle first.
pub fn operation_name(name: &str) -> Result<HeaderName, String> {
    if name.starts_with(':') {
        return Err(format!("`{name}`: a header cannot have a \":\" prefix"));
    }
    let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    if header == http::header::HOST {
        return Err(format!("`{name}`: the Host header cannot be changed here"));
    }
    if FRAMING.contains(&header.as_str()) {
        return Err(format!(
            "`{name}` frames the message or the connection and cannot be changed"
        ));
    }
    Ok(header)
}

/// A header value as written, with Envoy's escaping: `%%` is a literal
/// `%`; Envoy's `%VARIABLE%` substitutions are not supported.
pub fn operation_value(value: &str) -> Result<HeaderValue, String> {
    let mut literal = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        // `%` must be followed by another `%` (consumed here).
        if c == '%' && chars.next() != Some('%') {
            return Err(format!(
                "`{value}`: Envoy's %VARIABLE% substitutions are not supported (write %% for a literal %)"
            ));
        }
        literal.push(c);
    }
    HeaderValue::from_str(&literal).map_err(|_| format!("`{value}` is not a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &'static str) -> HeaderName {
        HeaderName::from_static(n)
    }

    fn value(v: &'static str) -> HeaderValue {
        HeaderValue::from_static(v)
    }

    #[test]
    fn removals_come_first_then_sets_then_adds() {
        let ops = HeaderOps::level(
            vec![name("x-a")],
            vec![
                HeaderOp::Set(name("x-a"), value("set")),
                HeaderOp::Add(name("x-a"), value("added")),
                HeaderOp::Add(name("x-b"), value("b")),
            ],
        );
        let mut headers = HeaderMap::new();
        headers.append("x-a", value("client"));
        headers.append("x-b", value("client"));
        ops.apply_map(&mut headers);
        let all = |n: &str| {
            headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("x-a"), ["set", "added"]);
        assert_eq!(all("x-b"), ["client", "b"]);
    }

    #[test]
    fn framing_pseudo_and_host_headers_are_refused() {
        for bad in [
            "content-length",
            "Transfer-Encoding",
            ":path",
            "host",
            "Host",
            "bad name",
        ] {
            assert!(operation_name(bad).is_err(), "{bad}");
        }
        assert_eq!(operation_name("X-Env").unwrap(), name("x-env"));
    }

    #[test]
    fn percent_is_escaped_and_substitutions_refused() {
        assert_eq!(operation_value("100%%").unwrap(), value("100%"));
        assert!(operation_value("%DOWNSTREAM_REMOTE_ADDRESS%").is_err());
        assert!(operation_value("a\nb").is_err());
    }
}
