//! Request integrity at the edge, through the real binary against raw
//! origins that record every request head byte for byte: path
//! normalization (Istio's "Authorization Policy Normalization" levels), the
//! request-target forms accepted, absolute-form authority, headers the
//! gateway owns (JWT outputs, forwarding headers, request id), head limits
//! and timeouts, HTTP/1.1 pipelining, and `claimgate explain` agreeing with
//! the running gateway on all of it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::raw_origin::{RawOrigin, RawRequest};
use support::*;

const DENIED: &str = "RBAC: access denied";

// ------------------------------------------------------------ config text

fn yaml_list(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap()
}

/// A ServiceEntry `<name>.foo.svc.cluster.local` (port 8000) for each origin.
fn service_entries(origins: &[RawOrigin]) -> String {
    origins
        .iter()
        .map(|o| {
            service_entry_yaml(
                o.name(),
                &format!("{}.foo.svc.cluster.local", o.name()),
                o.addr(),
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A VirtualService on the test Gateway for `hosts` with these `http`
/// routes (YAML list items indented two spaces).
fn virtual_service(name: &str, hosts: &[&str], http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: foo}}\n\
         spec:\n  hosts: {}\n  gateways: [httpbin-gateway]\n  http:\n{http}",
        yaml_list(hosts)
    )
}

/// An `http` route item sending everything that matches `matches` (a
/// flow-style match list, or "" for none) to origin `to`.
fn route(matches: &str, to: &str) -> String {
    if matches.is_empty() {
        format!("  - route: [{{destination: {{host: {to}}}}}]\n")
    } else {
        format!("  - match: {matches}\n    route: [{{destination: {{host: {to}}}}}]\n")
    }
}

/// An AuthorizationPolicy in istio-system (applies to the gateway).
fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: istio-system}}\n\
         spec:\n  action: {action}\n  rules:\n{rules}"
    )
}

/// DENY on paths `/admin` and `/admin/*`.
fn deny_admin() -> String {
    policy(
        "deny-admin",
        "DENY",
        "  - to: [{operation: {paths: [\"/admin\", \"/admin/*\"]}}]\n",
    )
}

/// The test issuer's RequestAuthentication, keys from an in-test JWKS
/// server; `rule` adds lines to the jwtRule (indented four spaces).
fn authn(rule: &str) -> String {
    let jwks = jwks_server(&test_jwks());
    test_request_authentication(&format!("http://{jwks}/jwks.json"), rule)
}

const OUTPUT_HEADERS: &str = "    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - header: x-jwt-role\n      claim: role\n";

fn role_token(role: &str) -> String {
    rs256(claims(json!({ "role": role })))
}

// ------------------------------------------------------------ the gateway

/// A gateway under construction: raw origins (each its own ServiceEntry),
/// VirtualServices (default: everything to the first origin), more
/// documents, and Settings lines.
struct Setup {
    origins: Vec<RawOrigin>,
    virtual_services: Vec<String>,
    docs: Vec<String>,
    settings: String,
}

fn setup(origins: &[&str]) -> Setup {
    Setup {
        origins: origins.iter().map(|n| RawOrigin::start(n)).collect(),
        virtual_services: Vec::new(),
        docs: Vec::new(),
        settings: String::new(),
    }
}

impl Setup {
    fn vs(mut self, doc: String) -> Setup {
        self.virtual_services.push(doc);
        self
    }

    fn doc(mut self, doc: String) -> Setup {
        self.docs.push(doc);
        self
    }

    /// A `Settings.spec` line (without indentation).
    fn setting(mut self, line: &str) -> Setup {
        self.settings.push_str("  ");
        self.settings.push_str(line);
        self.settings.push('\n');
        self
    }

    fn start(self) -> Rig {
        let port = free_port();
        let mut virtual_services = self.virtual_services;
        if virtual_services.is_empty() {
            virtual_services.push(virtual_service(
                "all",
                &["*"],
                &route("", self.origins[0].name()),
            ));
        }
        let mut files = vec![
            ("gateway.yaml".to_string(), gateway_yaml(port)),
            ("services.yaml".to_string(), service_entries(&self.origins)),
            ("routes.yaml".to_string(), virtual_services.join("---\n")),
        ];
        for (i, doc) in self.docs.into_iter().enumerate() {
            files.push((format!("doc-{i}.yaml"), doc));
        }
        let gw = Gateway::start_with_settings(port, &files, &self.settings);
        Rig {
            gw,
            origins: self.origins,
        }
    }
}

/// A running gateway and its raw origins.
struct Rig {
    gw: Gateway,
    origins: Vec<RawOrigin>,
}

impl Rig {
    /// The first origin.
    fn origin(&self) -> &RawOrigin {
        &self.origins[0]
    }

    fn named(&self, name: &str) -> &RawOrigin {
        self.origins.iter().find(|o| o.name() == name).unwrap()
    }

    /// Requests received by all origins together.
    fn forwarded(&self) -> usize {
        self.origins.iter().map(|o| o.count()).sum()
    }

    fn clear(&self) {
        for o in &self.origins {
            o.clear();
        }
    }

    fn connect(&self) -> Conn {
        Conn::open(self.gw.port)
    }

    /// Sends `request` on a fresh connection: the first answer.
    fn send(&self, request: &[u8]) -> Result<Reply, String> {
        let mut conn = self.connect();
        conn.write(request);
        conn.reply()
    }

    /// Sends `request`; it must be answered `status` (`403` with Envoy's
    /// RBAC body) and reach no origin.
    fn expect_refused(&self, f: &mut Failures, label: &str, request: &[u8], status: u16) {
        self.clear();
        let reply = self.send(request);
        // A refused request may still be on its way to an origin: give it a moment.
        std::thread::sleep(Duration::from_millis(20));
        let got = self.forwarded();
        let what = || format!("{label}: {}", shown(request));
        match reply {
            Ok(r) => {
                f.check(r.status == status, || {
                    format!(
                        "{}: expected {status}, got {} {:?}",
                        what(),
                        r.status,
                        r.body
                    )
                });
                if status == 403 && r.status == 403 {
                    f.check(r.body == DENIED, || {
                        format!("{}: 403 body {:?}, expected {DENIED:?}", what(), r.body)
                    });
                }
            }
            Err(e) => f.fail(format!("{}: expected {status}, got no answer: {e}", what())),
        }
        f.check(got == 0, || {
            let targets: Vec<String> = self.origins.iter().flat_map(|o| o.targets()).collect();
            format!(
                "{}: forwarded {got} time(s) (origin saw {targets:?})",
                what()
            )
        });
    }

    /// Sends `request`; it must be answered 200 by origin `to`, which got
    /// exactly one request, with target `expected`. Returns that request.
    fn expect_forwarded(
        &self,
        f: &mut Failures,
        label: &str,
        request: &[u8],
        to: &str,
        expected: &str,
    ) -> Option<RawRequest> {
        self.clear();
        let what = || format!("{label}: {}", shown(request));
        let reply = self.send(request);
        match &reply {
            Ok(r) => f.check(r.status == 200 && r.body == to, || {
                format!(
                    "{}: expected 200 from {to} with target {expected:?}, got {} {:?}",
                    what(),
                    r.status,
                    r.body
                )
            }),
            Err(e) => f.fail(format!("{}: expected 200, got no answer: {e}", what())),
        }
        let seen: Vec<(String, String)> = self
            .origins
            .iter()
            .flat_map(|o| o.targets().into_iter().map(|t| (o.name().to_string(), t)))
            .collect();
        let wanted = vec![(to.to_string(), expected.to_string())];
        f.check(seen == wanted, || {
            format!(
                "{}: origins saw {seen:?}, expected {wanted:?} (answer {:?})",
                what(),
                reply.as_ref().map(|r| r.status)
            )
        });
        self.named(to).requests().pop()
    }
}

/// `GET target HTTP/1.1` with `Host: example.com`, the extra `headers`
/// lines and `Connection: close`; the target's bytes are sent as given.
fn get_request(target: impl AsRef<[u8]>, headers: &[&str]) -> Vec<u8> {
    request("GET", target, headers)
}

fn request(method: &str, target: impl AsRef<[u8]>, headers: &[&str]) -> Vec<u8> {
    let mut out = format!("{method} ").into_bytes();
    out.extend_from_slice(target.as_ref());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: example.com\r\n");
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// A request's head line, for messages (long heads shortened).
fn shown(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(request);
    let mut lines = text.split('\n').map(str::trim_end);
    let line = lines.next().unwrap_or_default();
    let host = lines
        .take_while(|l| !l.is_empty())
        .find(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case("host:"));
    let mut shown = format!("{line:?}");
    match host {
        Some(h) if !h.eq_ignore_ascii_case("host: example.com") => {
            shown.push_str(&format!(" with {h:?}"))
        }
        Some(_) => {}
        None => shown.push_str(" with no Host"),
    }
    if request.len() > 400 {
        shown.push_str(&format!(" (a {}-byte head)", request.len()));
    }
    shown
}

/// Failures of one test, all reported together.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(message());
        }
    }

    fn fail(&mut self, message: String) {
        self.0.push(message);
    }

    fn done(self) {
        if !self.0.is_empty() {
            panic!(
                "{} failure(s):\n  - {}",
                self.0.len(),
                self.0.join("\n  - ")
            );
        }
    }
}

// ------------------------------------------------------------------ client

/// One client connection: raw bytes out, answers read one at a time by
/// their framing (so pipelined answers can be told apart).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    write_error: Option<String>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            write_error: None,
        }
    }

    /// Writes `bytes` in one send; an error is kept (the answer may still come).
    fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            self.write_error = Some(e.to_string());
        }
    }

    /// Reads more bytes: Ok(0) at the end of the stream.
    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next answer on this connection.
    fn reply(&mut self) -> Result<Reply, String> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill() {
                Ok(0) => return Err(self.no_answer("closed")),
                Ok(_) => {}
                Err(e) => return Err(self.no_answer(&e.to_string())),
            }
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else if let Some(length) = header("content-length") {
            let length: usize = length.parse().map_err(|_| "bad content-length")?;
            while self.buf.len() < length {
                match self.fill() {
                    Ok(0) => return Err("closed inside a body".into()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("body: {e}")),
                }
            }
            self.buf.drain(..length).collect()
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            self.chunked()?
        } else {
            // Delimited by the end of the connection.
            while let Ok(n) = self.fill() {
                if n == 0 {
                    break;
                }
            }
            std::mem::take(&mut self.buf)
        };
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                if self.fill().map_err(|e| e.to_string())? == 0 {
                    return Err("closed inside a chunk".into());
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.fill().map_err(|e| e.to_string())? == 0 {
                return Err("closed inside a chunked body".into());
            }
        }
    }

    fn no_answer(&self, how: &str) -> String {
        let mut message = format!("{how} before an answer");
        if !self.buf.is_empty() {
            message.push_str(&format!(
                " ({} bytes: {:?})",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
            ));
        }
        if let Some(e) = &self.write_error {
            message.push_str(&format!(" (write failed: {e})"));
        }
        message
    }

    /// Waits up to `limit` for the server to close this connection
    /// (FIN or reset), reading and keeping whatever comes first: the time
    /// it took, or None if the connection is still open.
    fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            let left = limit.checked_sub(start.elapsed())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.fill() {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => return Some(start.elapsed()),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_uuid(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

// ------------------------------------------------------ path normalization

#[test]
fn dot_segments_cannot_reach_a_denied_path() {
    let rig = setup(&["backend"]).doc(deny_admin()).start();
    let mut f = Failures::default();
    for target in [
        "/x/../admin",
        "/./admin",
        "/%2e/admin",
        "/%2E/admin",
        "/x/%2e%2e/admin",
        "/x/%2E%2e/admin",
        "/admin/./x",
        "/public/../admin",
        "/public/../../admin",
        "/../admin",
        "/admin/.",
        "/x/y/../../admin/z",
    ] {
        rig.expect_refused(&mut f, "BASE", &get_request(target, &[]), 403);
    }
    rig.expect_forwarded(&mut f, "BASE", &get_request("/x/..", &[]), "backend", "/");
    rig.expect_forwarded(
        &mut f,
        "BASE",
        &get_request("/public/x", &[]),
        "backend",
        "/public/x",
    );
    f.done();
}

#[test]
fn encoded_unreserved_characters_cannot_reach_a_denied_path() {
    let rig = setup(&["backend"]).doc(deny_admin()).start();
    let mut f = Failures::default();
    for target in [
        "/%61dmin",
        "/%61%64%6d%69%6e",
        "/%61%64%6D%69%6E",
        "/ad%6Din/x",
        "/%61dmin/%2e",
    ] {
        rig.expect_refused(&mut f, "BASE", &get_request(target, &[]), 403);
    }
    // Decoded once only: `%2561` is `%61` after one pass, which is not `a`.
    rig.expect_forwarded(
        &mut f,
        "BASE",
        &get_request("/%2561dmin", &[]),
        "backend",
        "/%2561dmin",
    );
    rig.expect_forwarded(
        &mut f,
        "BASE",
        &get_request("/%252e%252e/admin", &[]),
        "backend",
        "/%252e%252e/admin",
    );
    f.done();
}

#[test]
fn backslashes_are_slashes_under_base() {
    let rig = setup(&["backend"]).doc(deny_admin()).start();
    let mut f = Failures::default();
    for target in ["/admin\\x", "/x\\..\\admin", "/public\\..\\admin"] {
        rig.expect_refused(&mut f, "BASE", &get_request(target, &[]), 403);
    }
    rig.expect_forwarded(
        &mut f,
        "BASE",
        &get_request("/public\\x", &[]),
        "backend",
        "/public/x",
    );
    f.done();
}

#[test]
fn the_forwarded_path_is_the_normalized_one_with_the_query_as_sent() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    for (sent, received) in [
        ("/x/./y/../z?q=%2e", "/x/z?q=%2e"),
        ("/x/./y/../z?q=/../a&r=%61", "/x/z?q=/../a&r=%61"),
        ("/%7Euser/%41b%2d%5F%2E", "/~user/Ab-_."),
        ("/%7euser", "/~user"),
        ("/a/%2E%2E/b", "/b"),
        ("/../../x", "/x"),
        ("/a/b/..", "/a/"),
        ("/a%2Fb%5Cc%20d%2f", "/a%2Fb%5Cc%20d%2f"),
        ("/x/..%2fadmin", "/x/..%2fadmin"),
        ("//x", "//x"),
        ("/a\"b", "/a%22b"),
        ("/{a}|^", "/%7Ba%7D%7C%5E"),
        ("/caf\u{e9}", "/caf%C3%A9"),
        ("/already", "/already"),
        // A `%` that decoding would join into a new escape is written `%25`:
        // the origin cannot decode `%00` (or `%41`) out of it.
        ("/%%30%30", "/%2500"),
        ("/%%34%31dmin", "/%2541dmin"),
    ] {
        rig.expect_forwarded(&mut f, "BASE", &get_request(sent, &[]), "backend", received);
    }
    f.done();
}

/// Bytes Pingora's HTTP/1 parser refuses in a target (Envoy would escape
/// them): refused whole, never forwarded in another spelling.
#[test]
fn target_bytes_the_parser_refuses_are_400() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    for target in [&b"/a<b>c"[..], b"/a`b", b"/a>b", b"/a\xffb", b"/a\x80b"] {
        rig.expect_refused(&mut f, "parser", &get_request(target, &[]), 400);
    }
    f.done();
}

#[test]
fn an_encoded_slash_is_kept_under_base_and_decoded_under_decode_and_merge_slashes() {
    let base = setup(&["backend"]).doc(deny_admin()).start();
    let mut f = Failures::default();
    for (target, received) in [
        ("/x/..%2fadmin", "/x/..%2fadmin"),
        ("/x/..%2Fadmin", "/x/..%2Fadmin"),
        ("/x/..%5cadmin", "/x/..%5cadmin"),
        ("/admin%2fx", "/admin%2fx"),
    ] {
        base.expect_forwarded(
            &mut f,
            "BASE",
            &get_request(target, &[]),
            "backend",
            received,
        );
    }

    let decode = setup(&["backend"])
        .doc(deny_admin())
        .setting("pathNormalization: DECODE_AND_MERGE_SLASHES")
        .start();
    for target in [
        "/x/..%2fadmin",
        "/x/..%2Fadmin",
        "/x/..%5cadmin",
        "/x/..%5Cadmin",
        "/admin%2fx",
        "%2Fadmin",
        "//admin",
        "/x/..//admin",
    ] {
        // `%2Fadmin` is not origin-form: 400 before any normalization.
        let status = if target.starts_with('/') { 403 } else { 400 };
        decode.expect_refused(
            &mut f,
            "DECODE_AND_MERGE_SLASHES",
            &get_request(target, &[]),
            status,
        );
    }
    for (target, received) in [
        ("/public%2Fx", "/public/x"),
        ("/public%5Cx", "/public/x"),
        ("/a//b%2F%2Fc", "/a/b/c"),
        ("/%2561dmin", "/%2561dmin"),
    ] {
        decode.expect_forwarded(
            &mut f,
            "DECODE_AND_MERGE_SLASHES",
            &get_request(target, &[]),
            "backend",
            received,
        );
    }
    f.done();
}

#[test]
fn double_slashes_are_kept_under_base_and_merged_under_merge_slashes() {
    let base = setup(&["backend"]).doc(deny_admin()).start();
    let mut f = Failures::default();
    base.expect_forwarded(
        &mut f,
        "BASE",
        &get_request("//admin", &[]),
        "backend",
        "//admin",
    );
    base.expect_forwarded(
        &mut f,
        "BASE",
        &get_request("/a//b", &[]),
        "backend",
        "/a//b",
    );

    let merge = setup(&["backend"])
        .doc(deny_admin())
        .setting("pathNormalization: MERGE_SLASHES")
        .start();
    for target in ["//admin", "///admin//x", "/x/..//admin"] {
        merge.expect_refused(&mut f, "MERGE_SLASHES", &get_request(target, &[]), 403);
    }
    for (target, received) in [
        ("/a//b///c?q=//x", "/a/b/c?q=//x"),
        ("/x/..%2fadmin", "/x/..%2fadmin"),
        ("//public/./x", "/public/x"),
        // Dot segments are resolved before slashes are merged, as Envoy
        // does: `..` removes the empty segment between `//`.
        ("/x//..//admin", "/x/admin"),
    ] {
        merge.expect_forwarded(
            &mut f,
            "MERGE_SLASHES",
            &get_request(target, &[]),
            "backend",
            received,
        );
    }
    f.done();
}

#[test]
fn none_judges_and_forwards_the_path_as_received() {
    let rig = setup(&["backend"])
        .doc(deny_admin())
        .setting("pathNormalization: NONE")
        .start();
    let mut f = Failures::default();
    for target in [
        "/x/../admin",
        "/%61dmin",
        "/./admin",
        "//admin",
        "/x/..%2fadmin",
    ] {
        rig.expect_forwarded(&mut f, "NONE", &get_request(target, &[]), "backend", target);
    }
    rig.expect_refused(&mut f, "NONE", &get_request("/admin", &[]), 403);
    rig.expect_refused(&mut f, "NONE", &get_request("/admin%00", &[]), 400);
    f.done();
}

#[test]
fn an_encoded_nul_is_refused_at_every_level() {
    let mut f = Failures::default();
    for level in ["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"] {
        let rig = setup(&["backend"])
            .doc(deny_admin())
            .setting(&format!("pathNormalization: {level}"))
            .start();
        for target in ["/admin%00", "/%00/admin", "/public/x%00", "/public/%00?q=1"] {
            rig.expect_refused(&mut f, level, &get_request(target, &[]), 400);
        }
        // The query is not the path.
        rig.expect_forwarded(
            &mut f,
            level,
            &get_request("/public/x?q=%00", &[]),
            "backend",
            "/public/x?q=%00",
        );
    }
    f.done();
}

#[test]
fn an_allow_on_public_does_not_cover_dot_segments_out_of_it() {
    let rig = setup(&["backend"])
        .doc(policy(
            "public-only",
            "ALLOW",
            "  - to: [{operation: {paths: [\"/public/*\"]}}]\n",
        ))
        .start();
    let mut f = Failures::default();
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/x/../../admin",
        "/public\\..\\admin",
        "/public/..",
    ] {
        rig.expect_refused(&mut f, "BASE", &get_request(target, &[]), 403);
    }
    for (target, received) in [
        ("/public/x", "/public/x"),
        ("/public/./x", "/public/x"),
        ("/admin/../public/x", "/public/x"),
        ("/%70ublic/x", "/public/x"),
    ] {
        rig.expect_forwarded(
            &mut f,
            "BASE",
            &get_request(target, &[]),
            "backend",
            received,
        );
    }
    f.done();
}

#[test]
fn a_fragment_is_never_part_of_the_path() {
    let rig = setup(&["backend"])
        .doc(deny_admin())
        .doc(policy(
            "public-only",
            "ALLOW",
            "  - to: [{operation: {paths: [\"/public/*\"]}}]\n",
        ))
        .start();
    let mut f = Failures::default();
    // Each is judged, and forwarded, without its fragment: (target, the
    // path judged).
    for (target, path) in [
        ("/public/x#frag", "/public/x"),
        ("/public/x#/../../admin", "/public/x"),
        ("/admin#/public/x", "/admin"),
    ] {
        rig.clear();
        let reply = rig.send(&get_request(target, &[]));
        let seen: Vec<String> = rig.origin().targets();
        let allowed = path.starts_with("/public/");
        match &reply {
            Ok(r) if r.status == 200 && allowed => f.check(seen == [path], || {
                format!("{target}: 200, origin saw {seen:?}, expected [{path:?}]")
            }),
            Ok(r) if r.status == 403 && !allowed => f.check(seen.is_empty(), || {
                format!("{target}: 403, yet the origin saw {seen:?}")
            }),
            other => f.fail(format!(
                "{target}: expected {}, got {other:?} (origin saw {seen:?})",
                if allowed { 200 } else { 403 }
            )),
        }
    }
    f.done();
}

#[test]
fn routing_and_rewrites_read_the_normalized_path() {
    let rig = setup(&["backend", "admin", "api"])
        .vs(virtual_service(
            "paths",
            &["*"],
            &format!(
                "{}{}{}",
                route("[{uri: {prefix: /admin}}]", "admin"),
                "  - match: [{uri: {prefix: /api/}}]\n    rewrite: {uri: /v2/}\n    route: [{destination: {host: api}}]\n",
                route("", "backend"),
            ),
        ))
        .start();
    let mut f = Failures::default();
    for (target, to, received) in [
        ("/x/../admin/y", "admin", "/admin/y"),
        ("/%61dmin/y?z=1", "admin", "/admin/y?z=1"),
        ("/./admin", "admin", "/admin"),
        ("/x/..%2fadmin/y", "backend", "/x/..%2fadmin/y"),
        ("/x/../api/items?x=1", "api", "/v2/items?x=1"),
        ("/api/a/../items", "api", "/v2/items"),
        ("/public/../x", "backend", "/x"),
    ] {
        rig.expect_forwarded(&mut f, "BASE", &get_request(target, &[]), to, received);
    }
    f.done();
}

#[test]
fn the_access_log_records_the_normalized_path() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let rig = setup(&["backend"])
        .doc(deny_admin())
        .setting(&format!("accessLog: {}", log.display()))
        .start();
    let mut f = Failures::default();
    rig.expect_forwarded(
        &mut f,
        "BASE",
        &get_request("/x/./y/../z?q=%2e", &[]),
        "backend",
        "/x/z?q=%2e",
    );
    rig.expect_refused(&mut f, "BASE", &get_request("/x/../admin", &[]), 403);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(Duration::from_secs(5), "two access log lines", || {
        read().lines().count() >= 2
    });
    let mut paths: Vec<(String, u64)> = read()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap_or_default().to_string(),
                v["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    // A line is written when its request ends, after the answer went out:
    // two requests in a row may be logged in either order.
    paths.sort();
    let expected = vec![("/admin".to_string(), 403), ("/x/z?q=%2e".to_string(), 200)];
    f.check(paths == expected, || {
        format!("access log paths {paths:?}, expected {expected:?}")
    });
    f.done();
}

// --------------------------------------------------------- request targets

#[test]
fn targets_that_are_neither_origin_nor_absolute_form_are_refused() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    for target in [
        "admin",
        "./admin",
        "\\admin",
        "*/admin",
        "%2Fadmin",
        "*",
        "http:/x",
        "http:x",
        "ftp://example.com/x",
        "example.com:80",
        "?q=1",
    ] {
        rig.expect_refused(&mut f, "target", &get_request(target, &[]), 400);
    }
    rig.expect_refused(
        &mut f,
        "target",
        &request("POST", "*", &["Content-Length: 0"]),
        400,
    );
    // HTTP/1.1 origin-form needs a Host.
    rig.expect_refused(
        &mut f,
        "target",
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        400,
    );
    rig.expect_forwarded(&mut f, "target", &get_request("//x", &[]), "backend", "//x");
    rig.expect_forwarded(&mut f, "target", &get_request("/", &[]), "backend", "/");
    f.done();
}

#[test]
fn options_asterisk_is_404_and_never_forwarded() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    rig.expect_refused(&mut f, "OPTIONS *", &request("OPTIONS", "*", &[]), 404);
    // An ordinary OPTIONS is routed as any request.
    rig.expect_forwarded(
        &mut f,
        "OPTIONS /x",
        &request("OPTIONS", "/x", &[]),
        "backend",
        "/x",
    );
    f.done();
}

#[test]
fn whitespace_and_control_bytes_in_the_target_are_refused() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    for target in [
        &b"/a b"[..],
        b"/a\tb",
        b"/a\x01b",
        b"/a\x7fb",
        b"/a\x0bb",
        b"/a\x00b",
        b"/a b/../c",
    ] {
        rig.expect_refused(&mut f, "target", &get_request(target, &[]), 400);
    }
    rig.expect_forwarded(
        &mut f,
        "target",
        &get_request("/a%20b", &[]),
        "backend",
        "/a%20b",
    );
    rig.expect_forwarded(
        &mut f,
        "target",
        &get_request("/a%09b", &[]),
        "backend",
        "/a%09b",
    );
    f.done();
}

#[test]
fn a_method_not_in_upper_case_is_refused() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    for method in ["get", "Get", "gET", "post"] {
        rig.expect_refused(
            &mut f,
            "method",
            &request(method, "/", &["Content-Length: 0"]),
            400,
        );
    }
    let reply = rig.expect_forwarded(&mut f, "method", &request("GET", "/", &[]), "backend", "/");
    if let Some(r) = reply {
        f.check(r.method == "GET", || {
            format!("origin saw method {:?}", r.method)
        });
    }
    f.done();
}

// ------------------------------------------------------------ absolute-form

/// `GET <url> HTTP/1.1` with only `headers` (no Host unless given).
fn absolute(url: &str, headers: &[&str]) -> Vec<u8> {
    let mut out = format!("GET {url} HTTP/1.1\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

#[test]
fn an_absolute_form_authority_is_the_host_policies_see() {
    let rig = setup(&["backend"])
        .doc(policy(
            "deny-admin-host",
            "DENY",
            "  - to: [{operation: {hosts: [\"admin.example.com\"]}}]\n",
        ))
        .start();
    let mut f = Failures::default();
    for request in [
        absolute("http://admin.example.com/x", &[]),
        absolute("http://admin.example.com/x", &["Host: admin.example.com"]),
        absolute("http://ADMIN.example.com/x", &[]),
        absolute("HTTP://admin.example.com/x?y=1", &[]),
        absolute("https://admin.example.com/x", &[]),
        absolute("/x", &["Host: admin.example.com"]),
    ] {
        rig.expect_refused(&mut f, "absolute", &request, 403);
    }
    let seen = rig.expect_forwarded(
        &mut f,
        "absolute",
        &absolute("http://public.example.com/x", &[]),
        "backend",
        "/x",
    );
    if let Some(r) = seen {
        let hosts = r.header_all("host");
        f.check(hosts == ["public.example.com"], || {
            format!("origin saw Host {hosts:?}, expected [\"public.example.com\"]")
        });
    }
    f.done();
}

#[test]
fn an_absolute_form_request_is_routed_by_its_authority() {
    let rig = setup(&["backend", "admin"])
        .vs(virtual_service(
            "admin-host",
            &["admin.example.com"],
            &route("", "admin"),
        ))
        .vs(virtual_service("others", &["*"], &route("", "backend")))
        .start();
    let mut f = Failures::default();
    for (request, to, target, host) in [
        (
            absolute("http://admin.example.com/x", &[]),
            "admin",
            "/x",
            "admin.example.com",
        ),
        (
            absolute(
                "http://admin.example.com/x?y=1",
                &["Host: admin.example.com"],
            ),
            "admin",
            "/x?y=1",
            "admin.example.com",
        ),
        (
            absolute("HTTP://admin.example.com/a/../x", &[]),
            "admin",
            "/x",
            "admin.example.com",
        ),
        (
            absolute("http://other.example.com/x", &[]),
            "backend",
            "/x",
            "other.example.com",
        ),
    ] {
        if let Some(r) = rig.expect_forwarded(&mut f, "absolute", &request, to, target) {
            let hosts: Vec<String> = r
                .header_all("host")
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            f.check(hosts == [host], || {
                format!(
                    "{}: origin saw Host {hosts:?}, expected [{host:?}]",
                    shown(&request)
                )
            });
        }
    }
    // A Host that disagrees with the URI's authority.
    for request in [
        absolute("http://admin.example.com/x", &["Host: other.example.com"]),
        absolute("http://other.example.com/x", &["Host: admin.example.com"]),
    ] {
        rig.expect_refused(&mut f, "absolute with another Host", &request, 400);
    }
    f.done();
}

/// A `Host` beside an absolute-form target must be its authority byte for
/// byte (Pingora's parser compares them so; Envoy would replace `Host`):
/// no request carries two hosts.
#[test]
fn a_host_that_differs_from_the_absolute_target_is_400() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    for host in ["Host: other.example.com", "Host: ADMIN.example.com"] {
        let request = absolute("http://admin.example.com/x", &[host]);
        rig.expect_refused(&mut f, "absolute", &request, 400);
    }
    f.done();
}

// ------------------------------------------------- the gateway's own headers

#[test]
fn a_forged_claim_header_does_not_pick_a_route() {
    let rig = setup(&["backend", "admin"])
        .doc(authn(OUTPUT_HEADERS))
        .vs(virtual_service(
            "roles",
            &["*"],
            &format!(
                "{}{}",
                route("[{headers: {x-jwt-role: {exact: admin}}}]", "admin"),
                route("", "backend")
            ),
        ))
        .start();
    let mut f = Failures::default();
    let user = bearer(&role_token("user"));
    let admin = bearer(&role_token("admin"));
    let cases: Vec<(Vec<&str>, &str, Option<&str>)> = vec![
        (vec!["x-jwt-role: admin"], "backend", None),
        (
            vec!["X-JWT-Role: admin", "x-jwt-role: admin"],
            "backend",
            None,
        ),
        (
            vec!["x-jwt-role: admin", "X-Jwt-Payload: forged"],
            "backend",
            None,
        ),
        (
            vec![user.as_str(), "x-jwt-role: admin"],
            "backend",
            Some("user"),
        ),
        (
            vec!["X-Jwt-Role: admin", user.as_str(), "x-jwt-role: admin"],
            "backend",
            Some("user"),
        ),
        (vec![admin.as_str()], "admin", Some("admin")),
        (
            vec![admin.as_str(), "x-jwt-role: admin", "x-jwt-payload: forged"],
            "admin",
            Some("admin"),
        ),
        (
            vec![admin.as_str(), "x-jwt-role: user"],
            "admin",
            Some("admin"),
        ),
    ];
    for (headers, to, role) in cases {
        let request = get_request("/r", &headers);
        let label = format!(
            "headers {:?}",
            headers
                .iter()
                .map(|h| &h[..h.len().min(30)])
                .collect::<Vec<_>>()
        );
        let Some(seen) = rig.expect_forwarded(&mut f, &label, &request, to, "/r") else {
            continue;
        };
        let roles = seen.header_all("x-jwt-role");
        let wanted: Vec<&str> = role.into_iter().collect();
        f.check(roles == wanted, || {
            format!("{label}: origin saw x-jwt-role {roles:?}, expected {wanted:?}")
        });
        let payloads = seen.header_all("x-jwt-payload");
        f.check(!payloads.contains(&"forged"), || {
            format!("{label}: a client's x-jwt-payload reached the origin: {payloads:?}")
        });
        f.check(payloads.len() == usize::from(role.is_some()), || {
            format!("{label}: origin saw x-jwt-payload {payloads:?}")
        });
    }
    f.done();
}

#[test]
fn a_forged_claim_header_does_not_satisfy_a_policy() {
    let rig = setup(&["backend"])
        .doc(authn(OUTPUT_HEADERS))
        .doc(policy(
            "admins-only",
            "ALLOW",
            "  - when:\n    - key: request.headers[x-jwt-role]\n      values: [admin]\n",
        ))
        .start();
    let mut f = Failures::default();
    let user = bearer(&role_token("user"));
    let admin = bearer(&role_token("admin"));
    for headers in [
        vec!["x-jwt-role: admin"],
        vec!["X-JWT-ROLE: admin", "x-jwt-role: admin"],
        vec![user.as_str(), "x-jwt-role: admin"],
        vec!["x-jwt-role: admin", user.as_str()],
    ] {
        rig.expect_refused(&mut f, "forged role", &get_request("/r", &headers), 403);
    }
    for headers in [
        vec![admin.as_str()],
        vec![admin.as_str(), "x-jwt-role: admin"],
        vec!["x-jwt-role: user", admin.as_str()],
    ] {
        if let Some(seen) = rig.expect_forwarded(
            &mut f,
            "admin token",
            &get_request("/r", &headers),
            "backend",
            "/r",
        ) {
            let roles = seen.header_all("x-jwt-role");
            f.check(roles == ["admin"], || {
                format!("origin saw x-jwt-role {roles:?}, expected [\"admin\"]")
            });
        }
    }
    f.done();
}

/// Once verified, a token that is not forwarded is gone before policies and
/// routes read the request (Envoy's jwt_authn removes it first): a route on
/// the `authorization` header or on the `access_token` parameter no longer
/// matches, and a policy on them no longer sees them.
#[test]
fn a_verified_token_is_removed_before_policies_and_routes_read_the_request() {
    let on_token = "[{headers: {authorization: {prefix: Bearer}}}, {queryParams: {access_token: {regex: '.+'}}}]";
    let token = rs256(claims(json!({})));
    let mut f = Failures::default();
    for (forward, to) in [
        ("", "backend"),
        ("    forwardOriginalToken: true\n", "token"),
    ] {
        let rig = setup(&["backend", "token"])
            .doc(authn(forward))
            .vs(virtual_service(
                "on-token",
                &["*"],
                &(route(on_token, "token") + &route("", "backend")),
            ))
            .start();
        let in_query = format!("/r?access_token={token}");
        let query_target = if forward.is_empty() {
            "/r"
        } else {
            in_query.as_str()
        };
        for (request, target) in [
            (get_request("/r", &[&bearer(&token)]), "/r"),
            (get_request(&in_query, &[]), query_target),
        ] {
            rig.expect_forwarded(&mut f, "verified token", &request, to, target);
        }
    }
    f.done();
}

#[test]
fn a_token_sent_twice_is_removed_from_both_places() {
    let rig = setup(&["backend"]).doc(authn("")).start();
    let mut f = Failures::default();
    let token = rs256(claims(json!({})));
    let auth = bearer(&token);
    for (target, received) in [
        (format!("/p?a=1&access_token={token}&b=2"), "/p?a=1&b=2"),
        (format!("/p?access_token={token}&a=1&b=2"), "/p?a=1&b=2"),
        (format!("/p?a=1&b=2&access_token={token}"), "/p?a=1&b=2"),
    ] {
        let Some(seen) = rig.expect_forwarded(
            &mut f,
            "token twice",
            &get_request(&target, &[&auth]),
            "backend",
            received,
        ) else {
            continue;
        };
        f.check(seen.header("authorization").is_none(), || {
            format!(
                "{received}: origin saw authorization {:?}",
                seen.header("authorization")
            )
        });
        f.check(!seen.raw_head.windows(3).any(|w| w == b"eyJ"), || {
            format!(
                "{received}: the token reached the origin: {:?}",
                seen.request_line
            )
        });
    }
    // Only in the query: removed there too.
    if let Some(seen) = rig.expect_forwarded(
        &mut f,
        "token in the query",
        &get_request(format!("/p?access_token={token}"), &[]),
        "backend",
        "/p",
    ) {
        f.check(!seen.target.contains("access_token"), || {
            format!("origin saw {:?}", seen.target)
        });
    }
    f.done();
}

// ------------------------------------------------------ forwarding headers

#[test]
fn forwarding_headers_are_written_as_an_edge_envoy_writes_them() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    let client_headers = [
        "X-Forwarded-For: 198.51.100.1",
        "X-Forwarded-Proto: https",
        "x-envoy-retry-on: 5xx",
        "x-envoy-original-path: /admin",
        "X-Envoy-Internal: true",
        "x-envoy-external-address: 192.0.2.9",
        "X-Envoy-Max-Retries: 7",
        "x-request-id: client-chosen-id",
    ];
    let seen = rig.expect_forwarded(
        &mut f,
        "forwarding",
        &get_request("/f", &client_headers),
        "backend",
        "/f",
    );
    if let Some(seen) = seen {
        let xff = seen.header_all("x-forwarded-for");
        f.check(xff == ["198.51.100.1, 127.0.0.1"], || {
            format!("x-forwarded-for {xff:?}, expected [\"198.51.100.1, 127.0.0.1\"]")
        });
        let proto = seen.header_all("x-forwarded-proto");
        f.check(proto == ["http"], || {
            format!("x-forwarded-proto {proto:?}, expected [\"http\"]")
        });
        let envoy: Vec<&(String, String)> = seen
            .headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-envoy-"))
            .collect();
        f.check(envoy.is_empty(), || {
            format!("x-envoy-* headers at the origin {envoy:?}, expected none")
        });
        let ids = seen.header_all("x-request-id");
        f.check(ids.len() == 1 && is_uuid(ids[0]), || {
            format!("x-request-id {ids:?}, expected one UUID")
        });
    }

    // Without forwarding headers from the client: the peer alone, and a
    // fresh request id each time.
    let mut ids = Vec::new();
    for _ in 0..2 {
        if let Some(seen) = rig.expect_forwarded(
            &mut f,
            "no client headers",
            &get_request("/g", &[]),
            "backend",
            "/g",
        ) {
            let xff = seen.header_all("x-forwarded-for");
            f.check(xff == ["127.0.0.1"], || {
                format!("x-forwarded-for {xff:?}, expected [\"127.0.0.1\"]")
            });
            let id = seen.header_all("x-request-id").join(",");
            f.check(is_uuid(&id), || {
                format!("x-request-id {id:?}, expected a UUID")
            });
            ids.push(id);
        }
    }
    f.check(ids.len() != 2 || ids[0] != ids[1], || {
        format!("the same x-request-id twice: {ids:?}")
    });
    f.done();
}

#[test]
fn a_client_request_id_is_kept_only_when_preserved() {
    let mut f = Failures::default();
    for preserve in [false, true] {
        let mut s = setup(&["backend"]);
        if preserve {
            s = s.setting("preserveExternalRequestId: true");
        }
        let rig = s.start();
        let label = format!("preserveExternalRequestId: {preserve}");
        if let Some(seen) = rig.expect_forwarded(
            &mut f,
            &label,
            &get_request("/r", &["X-Request-Id: client-chosen-id"]),
            "backend",
            "/r",
        ) {
            let ids = seen.header_all("x-request-id");
            if preserve {
                f.check(ids == ["client-chosen-id"], || {
                    format!("{label}: x-request-id {ids:?}, expected the client's")
                });
            } else {
                f.check(ids.len() == 1 && is_uuid(ids[0]), || {
                    format!("{label}: x-request-id {ids:?}, expected one fresh UUID")
                });
            }
        }
        // Without one from the client, a UUID is made either way.
        if let Some(seen) =
            rig.expect_forwarded(&mut f, &label, &get_request("/s", &[]), "backend", "/s")
        {
            let ids = seen.header_all("x-request-id");
            f.check(ids.len() == 1 && is_uuid(ids[0]), || {
                format!("{label}, no client id: x-request-id {ids:?}, expected one UUID")
            });
        }
    }
    f.done();
}

#[test]
fn one_trusted_proxy_makes_the_forwarded_client_the_remote_address() {
    let rig = setup(&["backend"])
        .doc(policy(
            "deny-doc-net",
            "DENY",
            "  - from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]\n",
        ))
        .setting("trustedProxies: 1")
        .start();
    let mut f = Failures::default();
    for xff in [
        "X-Forwarded-For: 203.0.113.7",
        "X-Forwarded-For: 192.0.2.1, 203.0.113.7",
    ] {
        rig.expect_refused(&mut f, "trusted hop", &get_request("/t", &[xff]), 403);
    }
    for (xff, forwarded) in [
        ("X-Forwarded-For: 198.51.100.7", "198.51.100.7, 127.0.0.1"),
        // The client's own leftmost entry is not trusted: one hop only.
        (
            "X-Forwarded-For: 203.0.113.7, 198.51.100.7",
            "203.0.113.7, 198.51.100.7, 127.0.0.1",
        ),
    ] {
        if let Some(seen) = rig.expect_forwarded(
            &mut f,
            "trusted hop",
            &get_request("/t", &[xff]),
            "backend",
            "/t",
        ) {
            let got = seen.header_all("x-forwarded-for");
            f.check(got == [forwarded], || {
                format!("{xff}: origin saw x-forwarded-for {got:?}, expected [{forwarded:?}]")
            });
        }
    }
    f.done();
}

// ------------------------------------------------------------------ limits

/// A GET whose head carries `headers` (each `name: value`).
fn get_with_headers(headers: &[String]) -> Vec<u8> {
    let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    get_request("/l", &refs)
}

#[test]
fn a_head_over_sixty_kib_is_431() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    let big = |kib: usize| format!("x-big: {}", "a".repeat(kib * 1024));
    rig.expect_refused(
        &mut f,
        "one 70 KiB header",
        &get_with_headers(&[big(70)]),
        431,
    );
    let many: Vec<String> = (0..50)
        .map(|i| format!("x-h-{i}: {}", "b".repeat(1400)))
        .collect();
    rig.expect_refused(&mut f, "50 headers, 70 KB", &get_with_headers(&many), 431);
    // Under the limit: forwarded whole.
    if let Some(seen) = rig.expect_forwarded(
        &mut f,
        "one 50 KiB header",
        &get_with_headers(&[big(50)]),
        "backend",
        "/l",
    ) {
        let len = seen.header("x-big").map_or(0, str::len);
        f.check(len == 50 * 1024, || {
            format!("origin saw x-big of {len} bytes")
        });
    }
    f.done();
}

#[test]
fn more_than_a_hundred_headers_is_431() {
    let rig = setup(&["backend"]).start();
    let mut f = Failures::default();
    // get_request adds Host and Connection: these are 98 + 2 = 100 headers.
    let headers = |n: usize| -> Vec<String> { (0..n).map(|i| format!("x-h-{i}: v")).collect() };
    if let Some(seen) = rig.expect_forwarded(
        &mut f,
        "100 headers",
        &get_with_headers(&headers(98)),
        "backend",
        "/l",
    ) {
        f.check(seen.header("x-h-97") == Some("v"), || {
            "the 100th header did not reach the origin".into()
        });
    }
    rig.expect_refused(&mut f, "101 headers", &get_with_headers(&headers(99)), 431);
    rig.expect_refused(&mut f, "150 headers", &get_with_headers(&headers(148)), 431);
    f.done();
}

#[test]
fn the_head_limits_follow_the_settings() {
    let rig = setup(&["backend"])
        .setting("maxRequestHeadersKb: 8")
        .setting("maxHeadersCount: 10")
        .start();
    let mut f = Failures::default();
    let big = |kib: usize| format!("x-big: {}", "a".repeat(kib * 1024));
    rig.expect_refused(
        &mut f,
        "10 KiB head, limit 8",
        &get_with_headers(&[big(10)]),
        431,
    );
    rig.expect_forwarded(
        &mut f,
        "6 KiB head, limit 8",
        &get_with_headers(&[big(6)]),
        "backend",
        "/l",
    );
    let headers = |n: usize| -> Vec<String> { (0..n).map(|i| format!("x-h-{i}: v")).collect() };
    rig.expect_forwarded(
        &mut f,
        "10 headers, limit 10",
        &get_with_headers(&headers(8)),
        "backend",
        "/l",
    );
    rig.expect_refused(
        &mut f,
        "11 headers, limit 10",
        &get_with_headers(&headers(9)),
        431,
    );
    f.done();
}

#[test]
fn a_stalled_head_is_closed_by_the_headers_timeout() {
    let rig = setup(&["backend"])
        .setting("requestHeadersTimeout: 1s")
        .start();
    let mut f = Failures::default();
    let started = Instant::now();
    let mut stalled = rig.connect();
    stalled.write(b"GET /stalled HTTP/1.1\r\nHost: example.com\r\nX-Partial: abc");
    let mut before_line = rig.connect();
    before_line.write(b"GET /sta");
    // Others are still answered meanwhile.
    rig.expect_forwarded(
        &mut f,
        "while one stalls",
        &get_request("/other", &[]),
        "backend",
        "/other",
    );
    for (label, conn) in [
        ("half a head", &mut stalled),
        ("half a request line", &mut before_line),
    ] {
        let limit = Duration::from_secs(3).saturating_sub(started.elapsed());
        match conn.closed_within(limit) {
            Some(_) => {
                let after = started.elapsed();
                // The timeout closed it, not a refusal of the bytes sent.
                f.check(after >= Duration::from_millis(500), || {
                    format!("{label}: closed after {after:?}, before the 1 s timeout")
                });
                let answer = String::from_utf8_lossy(&conn.buf).into_owned();
                f.check(
                    answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
                    || format!("{label}: closed with {answer:?}, expected nothing or a 408"),
                );
            }
            None => f.fail(format!(
                "{label}: still open 3 s after it stalled (requestHeadersTimeout: 1s)"
            )),
        }
    }
    let seen = rig.origin().targets();
    f.check(seen == ["/other"], || {
        format!("origin saw {seen:?}, expected [\"/other\"] (nothing stalled)")
    });
    rig.expect_forwarded(
        &mut f,
        "after the timeouts",
        &get_request("/after", &[]),
        "backend",
        "/after",
    );
    let counted = rig
        .gw
        .metric("claimgate_rejections_total{reason=\"request_header_timeout\"}");
    f.check(counted == 2.0, || {
        format!("{counted} stalled heads counted, expected 2")
    });
    f.done();
}

// -------------------------------------------------------------- pipelining

fn alpha_beta() -> Rig {
    setup(&["alpha", "beta"])
        .doc(deny_admin())
        .vs(virtual_service(
            "ab",
            &["*"],
            &format!(
                "{}{}",
                route("[{uri: {prefix: /a/}}]", "alpha"),
                route("[{uri: {prefix: /b/}}]", "beta")
            ),
        ))
        .start()
}

/// A keep-alive `method target` (no `Connection: close`).
fn keep_alive(method: &str, target: &str, body: &str) -> String {
    if body.is_empty() && method == "GET" {
        format!("{method} {target} HTTP/1.1\r\nHost: example.com\r\n\r\n")
    } else {
        format!(
            "{method} {target} HTTP/1.1\r\nHost: example.com\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// The (status, body) of `n` answers read from `conn`.
fn answers(conn: &mut Conn, n: usize) -> Vec<Result<(u16, String), String>> {
    (0..n)
        .map(|_| conn.reply().map(|r| (r.status, r.body)))
        .collect()
}

#[test]
fn pipelined_requests_are_answered_in_order_on_their_connection() {
    let rig = alpha_beta();
    let mut f = Failures::default();
    let mut conn = rig.connect();
    conn.write(
        format!(
            "{}{}",
            keep_alive("GET", "/a/1", ""),
            keep_alive("GET", "/b/2", "")
        )
        .as_bytes(),
    );
    let got = answers(&mut conn, 2);
    let want: Vec<Result<(u16, String), String>> =
        vec![Ok((200, "alpha".into())), Ok((200, "beta".into()))];
    f.check(got == want, || {
        format!("two pipelined: {got:?}, expected {want:?}")
    });

    conn.write(
        format!(
            "{}{}{}",
            keep_alive("GET", "/b/3", ""),
            keep_alive("POST", "/a/4", "hello"),
            keep_alive("GET", "/b/./x/../5", "")
        )
        .as_bytes(),
    );
    let got = answers(&mut conn, 3);
    let want: Vec<Result<(u16, String), String>> = vec![
        Ok((200, "beta".into())),
        Ok((200, "alpha".into())),
        Ok((200, "beta".into())),
    ];
    f.check(got == want, || {
        format!("three pipelined: {got:?}, expected {want:?}")
    });
    let alpha = rig.named("alpha").requests();
    let beta = rig.named("beta").targets();
    let alpha_seen: Vec<(String, String, usize)> = alpha
        .iter()
        .map(|r| (r.method.clone(), r.target.clone(), r.body_len))
        .collect();
    let alpha_want = vec![
        ("GET".to_string(), "/a/1".to_string(), 0),
        ("POST".to_string(), "/a/4".to_string(), 5),
    ];
    f.check(alpha_seen == alpha_want, || {
        format!("alpha saw {alpha_seen:?}, expected {alpha_want:?}")
    });
    f.check(beta == ["/b/2", "/b/3", "/b/5"], || {
        format!("beta saw {beta:?}, expected [\"/b/2\", \"/b/3\", \"/b/5\"]")
    });
    f.done();
}

/// Sends `GET target` on the kept-alive `conn`: it must be answered
/// `status` with `body`.
fn step(conn: &mut Conn, f: &mut Failures, target: &str, status: u16, body: &str) {
    conn.write(keep_alive("GET", target, "").as_bytes());
    let got = conn.reply().map(|r| (r.status, r.body));
    f.check(got == Ok((status, body.to_string())), || {
        format!("GET {target} on the kept connection: {got:?}, expected ({status}, {body:?})")
    });
}

#[test]
fn a_404_or_403_leaves_a_keep_alive_connection_usable() {
    let rig = alpha_beta();
    let mut f = Failures::default();
    let mut conn = rig.connect();
    step(&mut conn, &mut f, "/nowhere", 404, "");
    step(&mut conn, &mut f, "/a/1", 200, "alpha");
    step(&mut conn, &mut f, "/admin", 403, DENIED);
    step(&mut conn, &mut f, "/b/2", 200, "beta");
    step(&mut conn, &mut f, "/x/../admin/y", 403, DENIED);
    step(&mut conn, &mut f, "/a/3", 200, "alpha");

    // The same, pipelined in one send.
    let mut conn = rig.connect();
    conn.write(
        format!(
            "{}{}{}{}",
            keep_alive("GET", "/admin", ""),
            keep_alive("GET", "/a/4", ""),
            keep_alive("GET", "/nowhere", ""),
            keep_alive("GET", "/b/5", "")
        )
        .as_bytes(),
    );
    let got: Vec<Result<u16, String>> = (0..4).map(|_| conn.reply().map(|r| r.status)).collect();
    let want: Vec<Result<u16, String>> = vec![Ok(403), Ok(200), Ok(404), Ok(200)];
    f.check(got == want, || {
        format!("pipelined after refusals: {got:?}, expected {want:?}")
    });
    let alpha = rig.named("alpha").targets();
    let beta = rig.named("beta").targets();
    f.check(
        alpha == ["/a/1", "/a/3", "/a/4"] && beta == ["/b/2", "/b/5"],
        || format!("alpha saw {alpha:?}, beta saw {beta:?}"),
    );
    f.done();
}

// ------------------------------------------------------------------ explain

/// The status on the `answer:` line of a trace.
fn answered_status(trace: &str) -> Option<u16> {
    trace
        .lines()
        .find_map(|l| l.strip_prefix("answer: "))
        .and_then(|a| a.get(..3))
        .and_then(|s| s.parse().ok())
}

/// The path and query a trace judged and forwarded: its
/// `path: X is judged and forwarded as Y (...)` line when it has one
/// (printed when the path changed), else the URL's, as sent.
fn judged_path(trace: &str, url: &str) -> String {
    for line in trace.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("path: ") {
            if let Some((_, after)) = rest.split_once(" forwarded as ") {
                return after.split(" (").next().unwrap().to_string();
            }
        }
    }
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    after_scheme
        .find('/')
        .map_or("/".to_string(), |i| after_scheme[i..].to_string())
}

#[test]
fn explain_agrees_with_the_running_gateway() {
    let rig = setup(&["backend", "admin"])
        .doc(authn(OUTPUT_HEADERS))
        .doc(deny_admin())
        .doc(policy(
            "deny-host",
            "DENY",
            "  - to: [{operation: {hosts: [\"denied.example.com\"]}}]\n",
        ))
        .vs(virtual_service(
            "explained",
            &["*"],
            &format!(
                "{}{}",
                route("[{headers: {x-jwt-role: {exact: admin}}}]", "admin"),
                route("[{uri: {prefix: /public}}]", "backend")
            ),
        ))
        .start();
    let port = rig.gw.port;
    let jwks = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(jwks.path(), test_jwks()).unwrap();
    let admin_token = role_token("admin");
    let admin_bearer = bearer(&admin_token);

    struct Case {
        label: &'static str,
        /// What the gateway is sent.
        request: Vec<u8>,
        /// The explain arguments after --config (besides --jwks).
        args: Vec<String>,
        /// The path (no query) the origin must get, when forwarded.
        forwarded: Option<&'static str>,
    }
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let cases = vec![
        Case {
            label: "a dot-segment path to a denied one",
            request: get_request("/x/../admin", &[]),
            args: s(&["GET", &url("/x/../admin")]),
            forwarded: None,
        },
        Case {
            label: "an encoded dot-segment path to a denied one",
            request: get_request("/public/%2e%2e/admin", &[]),
            args: s(&["GET", &url("/public/%2e%2e/admin")]),
            forwarded: None,
        },
        Case {
            label: "a NUL in the path (400)",
            request: get_request("/admin%00", &[]),
            args: s(&["GET", &url("/admin%00")]),
            forwarded: None,
        },
        Case {
            label: "a forged claim header (no route)",
            request: get_request("/secret", &["x-jwt-role: admin"]),
            args: s(&["-H", "x-jwt-role: admin", "GET", &url("/secret")]),
            forwarded: None,
        },
        Case {
            label: "a valid admin token takes the header route",
            request: get_request("/secret", &[&admin_bearer]),
            args: s(&["--token", &admin_token, "GET", &url("/secret")]),
            forwarded: Some("/secret"),
        },
        Case {
            label: "absolute-form without Host meets a host policy",
            request: absolute("http://denied.example.com/public/x", &[]),
            args: s(&[
                "-H",
                "Host: denied.example.com",
                "GET",
                &url("/public/x").replace("127.0.0.1", "denied.example.com"),
            ]),
            forwarded: None,
        },
        Case {
            label: "an allowed path, normalized",
            request: get_request("/a/../public/./b/%7Ec?q=%2e", &[]),
            args: s(&["GET", &url("/a/../public/./b/%7Ec?q=%2e")]),
            forwarded: Some("/public/b/~c"),
        },
        Case {
            label: "an encoded slash kept under BASE",
            request: get_request("/public/..%2fadmin", &[]),
            args: s(&["GET", &url("/public/..%2fadmin")]),
            forwarded: Some("/public/..%2fadmin"),
        },
    ];
    let mut f = Failures::default();
    let mut statuses = std::collections::BTreeSet::new();
    for case in cases {
        rig.clear();
        let real = rig.send(&case.request);
        let seen: Vec<String> = rig
            .origins
            .iter()
            .flat_map(|o| o.requests())
            .map(|r| r.path().to_string())
            .collect();
        let mut args = vec!["--jwks".to_string(), jwks.path().display().to_string()];
        args.extend(case.args.iter().cloned());
        let (code, trace, stderr) = explain(&rig.gw.config_dir(), &args);
        let Ok(real) = real else {
            f.fail(format!(
                "{}: the gateway gave no answer: {real:?}",
                case.label
            ));
            continue;
        };
        statuses.insert(real.status);
        if code != Some(0) {
            f.fail(format!(
                "{}: explain {args:?} exited {code:?}: {stderr}",
                case.label
            ));
            continue;
        }
        let said = answered_status(&trace);
        f.check(said == Some(real.status), || {
            format!(
                "{}: the gateway answered {}, explain says {said:?}:\n{trace}",
                case.label, real.status
            )
        });
        match case.forwarded {
            Some(path) => {
                f.check(seen == [path], || {
                    format!("{}: origin saw {seen:?}, expected [{path:?}]", case.label)
                });
                // The path the trace judged and forwarded is the origin's.
                let url = case.args.last().unwrap();
                let judged = judged_path(&trace, url);
                let judged = judged.split('?').next().unwrap();
                f.check(judged == path, || {
                    format!(
                        "{}: explain judged and forwarded {judged:?}, the origin got {path:?}:\n{trace}",
                        case.label
                    )
                });
            }
            None => f.check(seen.is_empty(), || {
                format!("{}: forwarded although refused: {seen:?}", case.label)
            }),
        }
    }
    // Raw targets (`admin`, `\admin`, `GET /a b`, `get /`) cannot be written
    // as explain's absolute URL: only the running gateway is tested on them.
    f.check(
        statuses.iter().copied().collect::<Vec<_>>() == [200, 400, 403, 404],
        || format!("the gateway's answers were {statuses:?}"),
    );
    f.done();
}

// ----------------------------------------------------------------- settings

#[test]
fn the_request_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let write = |extra: &str| {
        std::fs::write(dir.path().join("gateway.yaml"), gateway_yaml(8080)).unwrap();
        std::fs::write(
            dir.path().join("settings.yaml"),
            settings_yaml(15000, extra),
        )
        .unwrap();
    };
    write(
        "  pathNormalization: DECODE_AND_MERGE_SLASHES\n  maxRequestHeadersKb: 96\n  maxHeadersCount: 200\n  requestHeadersTimeout: 5s\n  streamIdleTimeout: 1m\n  preserveExternalRequestId: true\n  trustedProxies: 2\n",
    );
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    for level in ["NONE", "BASE", "MERGE_SLASHES"] {
        write(&format!("  pathNormalization: {level}\n"));
        let (code, _, stderr) = check(dir.path());
        assert_eq!(code, Some(0), "{level}: {stderr}");
    }
    for (bad, field) in [
        ("  pathNormalization: SOMETIMES\n", "spec.pathNormalization"),
        (
            "  requestHeadersTimeout: soon\n",
            "spec.requestHeadersTimeout",
        ),
        ("  streamIdleTimeout: soon\n", "spec.streamIdleTimeout"),
        ("  maxHeadersCount: many\n", "spec.maxHeadersCount"),
    ] {
        write(bad);
        let (code, _, stderr) = check(dir.path());
        assert_eq!(code, Some(1), "{bad}accepted: {stderr}");
        assert!(stderr.contains(field), "{bad}: no {field} in:\n{stderr}");
    }
}

// ------------------------------------------------------ stream idle timeout

/// An origin that answers the first request on each connection with an
/// endless body and reports, on the channel, when the gateway stopped
/// taking it (a write failed or blocked past `stall`).
fn endless_origin(stall: Duration) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<Instant>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let done = done.clone();
            std::thread::spawn(move || {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head);
                let _ = stream.set_write_timeout(Some(stall));
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n";
                if stream.write_all(answer.as_bytes()).is_err() {
                    let _ = done.send(Instant::now());
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    if stream.write_all(&chunk).is_err() {
                        let _ = done.send(Instant::now());
                        return;
                    }
                }
            });
        }
    });
    (addr, ended)
}

/// A client that asks for an answer and never reads it holds the upstream
/// connection for `streamIdleTimeout`, not forever: the gateway's writes
/// to the client time out and the upstream connection is closed.
#[test]
fn a_client_that_stops_reading_frees_the_upstream_connection() {
    // The origin gives up on its own only after 30 s of a blocked write.
    let (origin, ended) = endless_origin(Duration::from_secs(30));
    let port = free_port();
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        (
            "origin.yaml",
            service_entry_yaml("slow", "slow.foo.svc.cluster.local", origin),
        ),
        (
            "routes.yaml",
            routes_everything_to("slow.foo.svc.cluster.local"),
        ),
    ];
    let _gw = Gateway::start_with_settings(port, &files, "  streamIdleTimeout: 1s\n");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let asked = Instant::now();
    let freed = ended
        .recv_timeout(Duration::from_secs(20))
        .expect("the upstream connection was still open 20 s after the client stopped reading");
    // Buffers fill in well under a second on loopback; then one second of
    // blocked writes, and the gateway lets go (well before the origin's own 30 s).
    assert!(
        freed.duration_since(asked) < Duration::from_secs(15),
        "freed after {:?}",
        freed.duration_since(asked)
    );
    drop(client);
}
