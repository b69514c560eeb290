//! VirtualService traffic features through the real binary, against
//! in-test origins: weighted splits, matches, rewrites, redirects and
//! direct responses, header operations, timeouts and retries, CORS, and how
//! several VirtualServices on one host merge.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use support::*;

/// The ServiceEntry documents for `origins` (name, address): each is host
/// `<name>.foo.svc.cluster.local`, port 8000.
fn service_entries(origins: &[(&str, SocketAddr)]) -> String {
    origins
        .iter()
        .map(|(name, addr)| {
            service_entry_yaml(name, &format!("{name}.foo.svc.cluster.local"), *addr)
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A gateway on a fresh port serving `virtual_services` (YAML documents
/// bound to `httpbin-gateway`), with an echo origin per name in `origins`.
fn gateway(origins: &[&str], virtual_services: &str) -> Gateway {
    let addrs: Vec<(&str, SocketAddr)> = origins.iter().map(|n| (*n, echo_origin(n))).collect();
    gateway_with(&addrs, virtual_services)
}

/// `gateway`, with origins at the given addresses. `{PORT}` in the
/// VirtualServices stands for the listener's port.
fn gateway_with(origins: &[(&str, SocketAddr)], virtual_services: &str) -> Gateway {
    gateway_files(origins, virtual_services, Vec::new())
}

/// `gateway_with`, plus more configuration files.
fn gateway_files(
    origins: &[(&str, SocketAddr)],
    virtual_services: &str,
    mut files: Vec<(&str, String)>,
) -> Gateway {
    let port = free_port();
    files.extend([
        ("gateway.yaml", gateway_yaml(port)),
        ("services.yaml", service_entries(origins)),
        (
            "routes.yaml",
            virtual_services.replace("{PORT}", &port.to_string()),
        ),
    ]);
    Gateway::start(port, &files)
}

/// The test issuer's RequestAuthentication (keys from an in-test JWKS
/// server) and a DENY policy for `/denied`.
fn authn_and_policy() -> Vec<(&'static str, String)> {
    let jwks = jwks_server(&test_jwks());
    vec![
        (
            "authn.yaml",
            test_request_authentication(&format!("http://{jwks}/jwks.json"), ""),
        ),
        (
            "policy.yaml",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: istio-system}\n\
             spec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [/denied]}}]}]\n"
                .to_string(),
        ),
    ]
}

/// A VirtualService `name` on every host of the test Gateway with these
/// `http` routes (YAML list items, indented two spaces).
fn virtual_service(name: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: foo}}\n\
         spec:\n  hosts: [\"*\"]\n  gateways: [httpbin-gateway]\n  http:\n{http}"
    )
}

/// `claimgate check` on these documents (plus the test Gateway and the
/// origins' ServiceEntries): its stderr, after asserting it failed.
fn check_fails(origins: &[&str], virtual_services: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<(&str, SocketAddr)> = origins
        .iter()
        .map(|n| (*n, SocketAddr::from(([127, 0, 0, 1], 9))))
        .collect();
    std::fs::write(dir.path().join("gateway.yaml"), gateway_yaml(8080)).unwrap();
    std::fs::write(dir.path().join("services.yaml"), service_entries(&addrs)).unwrap();
    std::fs::write(dir.path().join("routes.yaml"), virtual_services).unwrap();
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, Some(1), "check accepted it:\n{stderr}");
    stderr
}

/// The requests a scripted origin got, head and body, as text.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// An origin that answers every request with `status` and the body `name`,
/// after `delay`, keeping every request it got: a failing, slow or
/// mirror endpoint.
fn scripted_origin(
    name: &'static str,
    status: u16,
    delay: std::time::Duration,
) -> (SocketAddr, Seen) {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Default::default();
    let kept = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                loop {
                    // The head, up to the empty line, then a Content-Length body.
                    let mut request = String::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" && !request.is_empty() => break,
                            Ok(_) => {
                                if let Some((k, v)) = line.split_once(':') {
                                    if k.eq_ignore_ascii_case("content-length") {
                                        length = v.trim().parse().unwrap_or(0);
                                    }
                                }
                                request.push_str(&line);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    request.push_str("\r\n");
                    request.push_str(&String::from_utf8_lossy(&body));
                    kept.lock().unwrap().push(request);
                    std::thread::sleep(delay);
                    let answer = format!(
                        "HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{name}",
                        name.len()
                    );
                    if reader.get_mut().write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A closed port: connections to it are refused.
fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ----------------------------------------------------------------- weights

#[test]
fn a_ninety_ten_split_is_exact_over_ten_thousand_requests() {
    let gw = gateway(
        &["alpha", "beta"],
        &virtual_service(
            "split",
            "  - name: canary\n    route:\n    - destination: {host: alpha}\n      weight: 90\n    - destination: {host: beta}\n      weight: 10\n",
        ),
    );
    // Four keep-alive clients at once, as a load balancer's pool would send.
    let port = gw.port;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(port).unwrap();
                let mut counts: HashMap<String, usize> = HashMap::new();
                for _ in 0..2500 {
                    let reply = client.get("/headers", &[]).expect("an answer");
                    assert_eq!(reply.status, 200, "{reply:?}");
                    *counts.entry(reply.origin()).or_default() += 1;
                }
                counts
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for worker in workers {
        for (origin, n) in worker.join().unwrap() {
            *counts.entry(origin).or_default() += n;
        }
    }
    let alpha = counts.get("alpha").copied().unwrap_or(0);
    let beta = counts.get("beta").copied().unwrap_or(0);
    assert_eq!(alpha + beta, 10_000, "{counts:?}");
    // Within ±3% is what a user may rely on; the split is in fact exact.
    assert!((8700..=9300).contains(&alpha), "{counts:?}");
    assert_eq!((alpha, beta), (9000, 1000));

    // Each request is counted under the cluster it was actually sent to.
    let requests = |cluster: &str| {
        gw.metric(&format!(
            "claimgate_requests_total{{cluster=\"outbound|8000||{cluster}.foo.svc.cluster.local\",code=\"200\",route=\"foo/split/canary\"}}"
        ))
    };
    eventually(std::time::Duration::from_secs(5), "metrics counted", || {
        requests("alpha") == 9000.0 && requests("beta") == 1000.0
    });
}

#[test]
fn a_zero_weight_destination_gets_nothing() {
    let gw = gateway(
        &["alpha", "beta"],
        &virtual_service(
            "split",
            "  - route:\n    - destination: {host: alpha}\n      weight: 0\n    - destination: {host: beta}\n      weight: 1\n",
        ),
    );
    let mut client = Client::connect(gw.port).unwrap();
    for _ in 0..20 {
        assert_eq!(client.get("/", &[]).unwrap().origin(), "beta");
    }
}

#[test]
fn bad_weights_and_subsets_are_refused_with_their_location() {
    let stderr = check_fails(
        &["alpha", "beta"],
        &virtual_service(
            "bad",
            "  - route:\n    - destination: {host: alpha}\n      weight: 0\n    - destination: {host: beta}\n\
             \x20 - route:\n    - destination: {host: alpha}\n      weight: -1\n    - destination: {host: beta}\n      weight: 1\n\
             \x20 - route:\n    - destination: {host: alpha, subset: v1}\n",
        ),
    );
    for expected in [
        "document 1: spec.http[0].route: the destinations' weights add up to 0",
        "document 1: spec.http[1].route[0].weight: -1 is not a weight",
        "document 1: spec.http[2].route[0].destination.subset: no DestinationRule for `alpha.foo.svc.cluster.local` defines subset `v1`",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}` in:\n{stderr}");
    }
}

// ----------------------------------------------------------------- matches

#[test]
fn routes_match_on_query_parameters_scheme_and_port() {
    let gw = gateway(
        &["alpha", "beta", "gamma"],
        &virtual_service(
            "matches",
            r#"  - match: [{uri: {prefix: /q}, queryParams: {v: {exact: "2"}}}]
    route: [{destination: {host: beta}}]
  - match: [{uri: {prefix: /q}, queryParams: {flag: {}}}]
    route: [{destination: {host: gamma}}]
  - match: [{uri: {prefix: /q}, queryParams: {id: {regex: "[0-9]+"}}}]
    route: [{destination: {host: gamma}}]
  - match: [{uri: {prefix: /s}, scheme: {exact: https}}]
    route: [{destination: {host: gamma}}]
  - match: [{uri: {prefix: /s}, scheme: {exact: http}}]
    route: [{destination: {host: beta}}]
  - match: [{uri: {prefix: /p}, port: 1}]
    route: [{destination: {host: gamma}}]
  - match: [{uri: {prefix: /p}, port: {PORT}}]
    route: [{destination: {host: beta}}]
  - route: [{destination: {host: alpha}}]
"#,
        ),
    );
    let via = |path: &str| get(gw.port, path, &[]).origin();
    // Query parameters: the first value, exactly as sent.
    assert_eq!(via("/q?v=2"), "beta");
    assert_eq!(via("/q?x=1&v=2&v=3"), "beta");
    assert_eq!(via("/q?v=3&v=2"), "alpha");
    assert_eq!(via("/q?v=%32"), "alpha");
    assert_eq!(via("/q?vv=2"), "alpha");
    // `{}`: present, with or without a value.
    assert_eq!(via("/q?flag"), "gamma");
    assert_eq!(via("/q?a=1&flag=no"), "gamma");
    // Regexes match the whole value.
    assert_eq!(via("/q?id=42"), "gamma");
    assert_eq!(via("/q?id=42x"), "alpha");
    // The listener is plain HTTP.
    assert_eq!(via("/s"), "beta");
    // The port the request arrived on, whatever the Host header says.
    assert_eq!(via("/p"), "beta");
    let reply = raw_request(
        gw.port,
        "GET /p HTTP/1.1\r\nHost: example.com:1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(reply.origin(), "beta");
}

#[test]
fn bad_matches_are_refused_with_their_location() {
    let stderr = check_fails(
        &["alpha"],
        &virtual_service(
            "bad",
            r#"  - match: [{port: 70000}, {scheme: {}}, {queryParams: {a: {regex: "("}}}]
    route: [{destination: {host: alpha}}]
"#,
        ),
    );
    for expected in [
        "spec.http[0].match[0].port: 70000 is not a port",
        "spec.http[0].match[1].scheme: set one of exact, prefix, regex",
        "spec.http[0].match[2].queryParams.a: invalid regex",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

// ----------------------------------------------------------------- rewrite

#[test]
fn rewrites_change_the_path_and_host_sent_upstream() {
    let gw = gateway(
        &["alpha"],
        &virtual_service(
            "rewrites",
            r#"  - match: [{uri: {prefix: /api/}}]
    rewrite: {uri: /v2/}
    route: [{destination: {host: alpha}}]
  - match: [{uri: {exact: /old}}]
    rewrite: {uri: /new}
    route: [{destination: {host: alpha}}]
  - match: [{uri: {prefix: /svc/}}]
    rewrite:
      uriRegexRewrite: {match: "^/svc/([^/]+)/(.*)$", rewrite: "/\\2/by/\\1"}
    route: [{destination: {host: alpha}}]
  - match: [{uri: {prefix: /host}}]
    rewrite: {authority: "internal.example.com:8443"}
    route: [{destination: {host: alpha}}]
  - route: [{destination: {host: alpha}}]
"#,
        ),
    );
    let sent = |path: &str| {
        let echo = get(gw.port, path, &[]).echo();
        (
            echo["uri"].as_str().unwrap_or_default().to_string(),
            echo["headers"]["host"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    let client_host = format!("127.0.0.1:{}", gw.port);
    // The matched prefix is swapped, the query kept.
    assert_eq!(
        sent("/api/items?x=1"),
        ("/v2/items?x=1".into(), client_host.clone())
    );
    // An exact match has its whole path replaced, the query kept.
    assert_eq!(sent("/old?a=b").0, "/new?a=b");
    // A regex rewrite with capture groups, on the path only.
    assert_eq!(
        sent("/svc/foo/bar/baz?q=/svc/x/y").0,
        "/bar/baz/by/foo?q=/svc/x/y"
    );
    // The authority: Host sent upstream, the path unchanged.
    assert_eq!(
        sent("/host/a?b"),
        ("/host/a?b".into(), "internal.example.com:8443".into())
    );
    // Without a rewrite, nothing changes.
    assert_eq!(sent("/plain?z"), ("/plain?z".into(), client_host));
}

#[test]
fn bad_rewrites_are_refused_with_their_location() {
    let stderr = check_fails(
        &["alpha"],
        &virtual_service(
            "bad",
            r#"  - rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}
    route: [{destination: {host: alpha}}]
  - rewrite: {uriRegexRewrite: {match: "a(b)", rewrite: "\\2"}}
    route: [{destination: {host: alpha}}]
  - rewrite: {authority: "a b"}
    route: [{destination: {host: alpha}}]
  - rewrite: {}
    route: [{destination: {host: alpha}}]
"#,
        ),
    );
    for expected in [
        "spec.http[0].rewrite: set one of uri and uriRegexRewrite, not both",
        "spec.http[1].rewrite.uriRegexRewrite: rewrite names group \\2, but `a(b)` has 1 group(s)",
        "spec.http[2].rewrite.authority: `a b` is not an authority",
        "spec.http[3].rewrite: set at least one of uri, uriRegexRewrite and authority",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

// ------------------------------------------------ redirect, directResponse

#[test]
fn redirects_and_direct_responses_are_answered_by_the_gateway_after_authn_and_authz() {
    let origins = [("alpha", echo_origin("alpha"))];
    let gw = gateway_files(
        &origins,
        &virtual_service(
            "local",
            r#"  - name: moved
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
  - name: elsewhere
    match: [{uri: {prefix: /elsewhere}}]
    redirect: {authority: other.example.com, scheme: https, port: 8443, redirectCode: 308}
  - name: same-port
    match: [{uri: {prefix: /same-port}}]
    redirect: {authority: other.example.com, derivePort: FROM_REQUEST_PORT, redirectCode: 302}
  - name: denied
    match: [{uri: {prefix: /denied}}]
    redirect: {uri: /ok}
  - name: maintenance
    match: [{uri: {prefix: /maintenance}}]
    directResponse: {status: 503, body: {string: "down for maintenance"}}
  - name: empty
    match: [{uri: {prefix: /empty}}]
    directResponse: {status: 204}
  - name: bytes
    match: [{uri: {prefix: /bytes}}]
    directResponse: {status: 200, body: {bytes: "aGVsbG8="}}
"#,
        ),
        authn_and_policy(),
    );
    let port = gw.port;

    // 301 by default; the path replaced, the query and Host kept.
    let r = get(port, "/old/page?a=1", &[]);
    assert_eq!(r.status, 301, "{r:?}");
    let here = format!("127.0.0.1:{port}");
    assert_eq!(
        r.header("location"),
        Some(format!("http://{here}/new?a=1").as_str())
    );
    assert_eq!(r.body, "");

    // Scheme, authority, port and code.
    let r = get(port, "/elsewhere/x?y", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://other.example.com:8443/elsewhere/x?y")
    );
    let r = get(port, "/same-port", &[]);
    assert_eq!(r.status, 302);
    let expected = format!("http://other.example.com:{port}/same-port");
    assert_eq!(r.header("location"), Some(expected.as_str()));

    // directResponse: status and body, text/plain as Envoy sends it.
    let r = get(port, "/maintenance", &[]);
    assert_eq!((r.status, r.body.as_str()), (503, "down for maintenance"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = get(port, "/empty", &[]);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let r = get(port, "/bytes", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "hello"));

    // Authentication and authorization come first, as for any route.
    let r = get(port, "/old", &["Authorization: Bearer not.a.token"]);
    assert_eq!(r.status, 401, "{r:?}");
    let r = get(port, "/denied", &[]);
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    let token = rs256(claims(serde_json::json!({})));
    let r = get(port, "/maintenance", &[&bearer(&token)]);
    assert_eq!(r.status, 503);

    // Counted under the route, with no cluster.
    let counted = |route: &str, code: u16| {
        gw.metric(&format!(
            "claimgate_requests_total{{cluster=\"(none)\",code=\"{code}\",route=\"foo/local/{route}\"}}"
        ))
    };
    eventually(std::time::Duration::from_secs(5), "metrics", || {
        counted("moved", 301) == 1.0 && counted("maintenance", 503) == 2.0
    });
}

#[test]
fn bad_redirects_and_direct_responses_are_refused_with_their_location() {
    let stderr = check_fails(
        &["alpha"],
        &virtual_service(
            "bad",
            r#"  - redirect: {uri: /a, redirectCode: 304}
  - redirect: {scheme: ftp}
  - redirect: {port: 80, derivePort: FROM_REQUEST_PORT}
  - redirect: {uri: /a}
    route: [{destination: {host: alpha}}]
  - directResponse: {status: 700}
  - directResponse: {status: 200}
    rewrite: {uri: /x}
  - redirect: {uri: /a}
    directResponse: {status: 200}
  - redirect: {}
"#,
        ),
    );
    for expected in [
        "spec.http[0].redirect.redirectCode: 304 is not supported: 301, 302, 303, 307 or 308",
        "spec.http[1].redirect.scheme: `ftp` is not a redirect scheme",
        "spec.http[2].redirect: set one of port and derivePort, not both",
        "spec.http[3].route: a route with redirect has no destinations",
        "spec.http[4].directResponse.status: 700 is not in range 200-599",
        "spec.http[5].rewrite: a route with directResponse is not forwarded",
        "spec.http[6]: set one of redirect and directResponse, not both",
        "spec.http[7].redirect: set at least one of uri, authority, scheme, port and derivePort",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

// ----------------------------------------------------------------- headers

#[test]
fn header_operations_change_requests_and_responses_in_envoys_order() {
    let gw = gateway(
        &["alpha", "beta"],
        &virtual_service(
            "ops",
            r#"  - name: single
    match: [{uri: {prefix: /single}}]
    headers:
      request:
        set: {x-route: r, x-both: route}
        add: {x-added: one}
        remove: [x-drop]
      response:
        set: {x-resp: r, x-both: route}
        add: {x-resp-add: a}
        remove: [content-type]
    route:
    - destination: {host: alpha}
      headers:
        request: {set: {x-both: destination}, add: {x-added: two}}
        response: {set: {x-both: destination}}
  - name: weighted
    match: [{uri: {prefix: /weighted}}]
    headers:
      request: {set: {x-both: route}}
    route:
    - destination: {host: alpha}
      weight: 1
      headers:
        request: {set: {x-both: alpha, x-dest: alpha}}
        response: {add: {x-served-by: alpha}}
    - destination: {host: beta}
      weight: 1
      headers:
        request: {set: {x-both: beta, x-dest: beta}}
        response: {add: {x-served-by: beta}}
  - name: host
    match: [{uri: {prefix: /host}}]
    headers:
      request: {set: {host: "internal.example.com"}}
    route: [{destination: {host: alpha}}]
  - name: direct
    match: [{uri: {prefix: /direct}}]
    headers:
      response: {set: {cache-control: no-store}}
    directResponse: {status: 200, body: {string: ok}}
"#,
        ),
    );
    let port = gw.port;
    let r = get(
        port,
        "/single",
        &["x-drop: 1", "x-added: client", "x-both: client"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let sent = &r.echo()["headers"];
    assert_eq!(sent["x-route"], "r");
    // One destination: its operations follow the route's, and win.
    assert_eq!(sent["x-both"], "destination");
    assert_eq!(sent["x-added"], "client,one,two");
    assert!(sent.get("x-drop").is_none(), "{sent}");
    // The response: set, added, removed.
    assert_eq!(r.header("x-resp"), Some("r"));
    assert_eq!(r.header("x-resp-add"), Some("a"));
    assert_eq!(r.header("x-both"), Some("destination"));
    assert_eq!(r.header("content-type"), None, "{r:?}");

    // Weighted destinations: theirs first, then the route's, which win.
    let mut client = Client::connect(port).unwrap();
    for _ in 0..2 {
        let r = client.get("/weighted", &[]).unwrap();
        let sent = &r.echo()["headers"];
        let origin = r.origin();
        assert_eq!(sent["x-both"], "route");
        assert_eq!(sent["x-dest"], origin.as_str());
        assert_eq!(r.header("x-served-by"), Some(origin.as_str()));
    }

    // `host` in a request operation is the authority sent upstream.
    let r = get(port, "/host", &[]);
    assert_eq!(r.echo()["headers"]["host"], "internal.example.com");

    // A direct response gets the route's response operations too.
    let r = get(port, "/direct", &[]);
    assert_eq!(
        (r.status, r.header("cache-control")),
        (200, Some("no-store"))
    );
}

#[test]
fn bad_header_operations_are_refused_with_their_location() {
    let stderr = check_fails(
        &["alpha"],
        &virtual_service(
            "bad",
            r#"  - headers:
      request:
        set: {content-length: "0", x-ok: "%HOSTNAME%"}
        remove: [":path"]
      response:
        set: {host: x}
    route: [{destination: {host: alpha}}]
  - headers:
      request: {set: {host: a.example.com}}
    rewrite: {authority: b.example.com}
    route: [{destination: {host: alpha}}]
  - headers:
      request: {set: {x-a: b}}
    directResponse: {status: 200}
"#,
        ),
    );
    for expected in [
        "spec.http[0].headers.request.set.content-length: `content-length` frames the message",
        "spec.http[0].headers.request.set.x-ok: `%HOSTNAME%`: Envoy's %VARIABLE% substitutions are not supported",
        "spec.http[0].headers.request.remove[0]: `:path`: a header cannot have a \":\" prefix",
        "spec.http[0].headers.response.set.host: `host`: the Host header cannot be changed here",
        "spec.http[1].rewrite.authority: the authority is also set in headers.request",
        "spec.http[2].headers.request: a route with directResponse sends no request upstream",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}` in:\n{stderr}");
    }
}

// ---------------------------------------------------------- retries, timeout

/// A gateway whose cluster `pool` has a good endpoint and a `bad` one, with
/// one route per retry policy under test (`/<name>`).
fn pool_gateway(bad: SocketAddr) -> Gateway {
    let good = echo_origin("good");
    let port = free_port();
    let routes = virtual_service(
        "retries",
        r#"  - name: none
    match: [{uri: {prefix: /none}}]
    retries: {attempts: 0}
    route: [{destination: {host: pool}}]
  - name: default
    match: [{uri: {prefix: /default}}]
    route: [{destination: {host: pool}}]
  - name: server-error
    match: [{uri: {prefix: /server-error}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: pool}}]
  - name: gateway-error
    match: [{uri: {prefix: /gateway-error}}]
    retries: {attempts: 2, retryOn: gateway-error}
    route: [{destination: {host: pool}}]
  - name: status
    match: [{uri: {prefix: /status}}]
    retries: {attempts: 2, retryOn: "500"}
    route: [{destination: {host: pool}}]
  - name: reset
    match: [{uri: {prefix: /reset}}]
    retries: {attempts: 1, retryOn: reset}
    route: [{destination: {host: pool}}]
  - name: connect
    match: [{uri: {prefix: /connect}}]
    retries: {attempts: 1, retryOn: connect-failure}
    route: [{destination: {host: pool}}]
  - name: per-try
    match: [{uri: {prefix: /per-try}}]
    retries: {attempts: 2, perTryTimeout: 300ms, retryOn: reset}
    route: [{destination: {host: pool}}]
"#,
    );
    Gateway::start(
        port,
        &[
            ("gateway.yaml", gateway_yaml(port)),
            ("pool.yaml", service_entry_endpoints("pool", &[bad, good])),
            ("routes.yaml", routes),
        ],
    )
}

/// The statuses of `n` requests to `path`, sent one after the other on a
/// keep-alive connection (a new one when the gateway closed it: it does
/// after an error of its own).
fn statuses(port: u16, path: &str, n: usize) -> Vec<u16> {
    let mut client = Client::connect(port).unwrap();
    (0..n)
        .map(|_| {
            if client.closed {
                client = Client::connect(port).unwrap();
            }
            match client.get(path, &[]) {
                Some(r) => r.status,
                None => {
                    client = Client::connect(port).unwrap();
                    client.get(path, &[]).map_or(0, |r| r.status)
                }
            }
        })
        .collect()
}

#[test]
fn retries_hide_an_endpoint_that_answers_503() {
    let (bad, hits) = scripted_origin("bad", 503, std::time::Duration::ZERO);
    let gw = pool_gateway(bad);
    // Without retries, round robin sends every other request to the bad one.
    let none = statuses(gw.port, "/none", 10);
    assert_eq!(none.iter().filter(|&&s| s == 503).count(), 5, "{none:?}");
    // Istio's default policy (no `retries`) retries a 503 on another endpoint.
    for path in ["/default", "/server-error", "/gateway-error"] {
        let before = hits.lock().unwrap().len();
        let got = statuses(gw.port, path, 20);
        assert!(got.iter().all(|&s| s == 200), "{path}: {got:?}");
        // The bad endpoint was tried, and its answers were not passed on.
        assert!(hits.lock().unwrap().len() > before, "{path}");
    }
    let retried = gw.metric(
        "claimgate_upstream_retries_total{cluster=\"outbound|8000||pool.foo.svc.cluster.local\"}",
    );
    assert!(retried >= 30.0, "{retried}");
}

#[test]
fn retry_on_names_which_failures_are_retried() {
    let (bad, _) = scripted_origin("bad", 500, std::time::Duration::ZERO);
    let gw = pool_gateway(bad);
    // 500 is a 5xx, but not a gateway error, nor Istio's default 503.
    assert!(statuses(gw.port, "/server-error", 10)
        .iter()
        .all(|&s| s == 200));
    assert!(statuses(gw.port, "/status", 10).iter().all(|&s| s == 200));
    for path in ["/gateway-error", "/default"] {
        let got = statuses(gw.port, path, 10);
        assert_eq!(
            got.iter().filter(|&&s| s == 500).count(),
            5,
            "{path}: {got:?}"
        );
    }
}

#[test]
fn retries_hide_an_endpoint_that_refuses_connections() {
    let gw = pool_gateway(dead_addr());
    let none = statuses(gw.port, "/none", 10);
    assert_eq!(
        none.iter().filter(|&&s| s == 503).count(),
        5,
        "{none:?}\n{}",
        gw.log()
    );
    for path in ["/default", "/connect", "/reset", "/server-error"] {
        let got = statuses(gw.port, path, 10);
        assert!(got.iter().all(|&s| s == 200), "{path}: {got:?}");
    }
}

#[test]
fn a_per_try_timeout_moves_on_to_the_next_endpoint() {
    let (slow, _) = scripted_origin("slow", 200, std::time::Duration::from_secs(3));
    let gw = pool_gateway(slow);
    let started = std::time::Instant::now();
    let got = statuses(gw.port, "/per-try", 4);
    assert!(got.iter().all(|&s| s == 200), "{got:?}");
    // Two of the four met the slow endpoint first and waited 300ms, no more.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_route_timeout_answers_504_upstream_request_timeout() {
    let gw = gateway(
        &["alpha"],
        &virtual_service(
            "slow",
            r#"  - name: quick
    timeout: 300ms
    route: [{destination: {host: alpha}}]
"#,
        ),
    );
    let started = std::time::Instant::now();
    let r = get(gw.port, "/delay/3", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "upstream request timeout")
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // In time: the upstream's answer.
    assert_eq!(get(gw.port, "/delay/0.01", &[]).status, 200);
    eventually(std::time::Duration::from_secs(5), "counted", || {
        gw.metric("claimgate_rejections_total{reason=\"upstream_timeout\"}") == 1.0
    });
}

#[test]
fn bad_timeouts_and_retries_are_refused_with_their_location() {
    let stderr = check_fails(
        &["alpha"],
        &virtual_service(
            "bad",
            r#"  - timeout: soon
    route: [{destination: {host: alpha}}]
  - retries: {attempts: 0, retryOn: 5xx}
    route: [{destination: {host: alpha}}]
  - retries: {attempts: 3, retryOn: "5xx,sometimes"}
    route: [{destination: {host: alpha}}]
  - retries: {attempts: -1}
    route: [{destination: {host: alpha}}]
  - retries: {attempts: 1, perTryTimeout: 0s}
    route: [{destination: {host: alpha}}]
  - timeout: 1s
    directResponse: {status: 200}
"#,
        ),
    );
    for expected in [
        "spec.http[0].timeout: `soon`",
        "spec.http[1].retries: a retry policy is configured while attempts is 0",
        "spec.http[2].retries.retryOn: `sometimes` is not a valid retryOn policy",
        "spec.http[3].retries.attempts: -1 retries: from 0 to 50",
        "spec.http[4].retries.perTryTimeout: must be at least 1ms",
        "spec.http[5].timeout: a route with directResponse sends no request upstream",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

// -------------------------------------------------------------------- CORS

#[test]
fn a_preflight_is_answered_before_authentication_and_answers_carry_cors_headers() {
    let jwks = jwks_server(&test_jwks());
    let origins = [("alpha", echo_origin("alpha"))];
    let gw = gateway_files(
        &origins,
        &virtual_service(
            "cors",
            r#"  - name: api
    corsPolicy:
      allowOrigins:
      - exact: https://app.example.com
      - regex: "https://[a-z]+\\.partner\\.example"
      allowMethods: [GET, POST]
      allowHeaders: [authorization, content-type]
      exposeHeaders: [x-request-id]
      maxAge: 600s
      allowCredentials: true
    route: [{destination: {host: alpha}}]
"#,
        ),
        vec![
            (
                "authn.yaml",
                test_request_authentication(&format!("http://{jwks}/jwks.json"), ""),
            ),
            (
                "require-token.yaml",
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: require-token, namespace: istio-system}\n\
                 spec:\n  action: ALLOW\n  rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]\n"
                    .to_string(),
            ),
        ],
    );
    let port = gw.port;
    let preflight = |origin: &str, extra: &str| {
        raw_request(
            port,
            &format!(
                "OPTIONS /api/items HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization\r\n{extra}Connection: close\r\n\r\n"
            ),
        )
        .unwrap()
    };

    // A preflight needs no token, and even a bad one is not looked at.
    for extra in ["", "Authorization: Bearer not.a.token\r\n"] {
        let r = preflight("https://app.example.com", extra);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("authorization,content-type")
        );
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(r.body, "");
    }
    let r = preflight("https://shop.partner.example", "");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.partner.example")
    );

    // A preflight from another origin goes on like any request: here the
    // policy wants a token, so 403, and no CORS headers.
    let r = preflight("https://evil.example", "");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // Actual requests from an allowed origin: the answer carries the origin,
    // credentials and exposed headers, whoever answered.
    let token = rs256(claims(serde_json::json!({})));
    let r = get(
        port,
        "/api/items",
        &["Origin: https://app.example.com", &bearer(&token)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.origin(), "alpha");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    // A refusal too, so the browser lets the page read it.
    let r = get(port, "/api/items", &["Origin: https://app.example.com"]);
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = get(
        port,
        "/api/items",
        &[
            "Origin: https://app.example.com",
            "Authorization: Bearer bad",
        ],
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // Another origin gets nothing.
    let r = get(
        port,
        "/api/items",
        &["Origin: https://evil.example", &bearer(&token)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn bad_cors_policies_are_refused_with_their_location() {
    let stderr = check_fails(
        &["alpha"],
        &virtual_service(
            "bad",
            r#"  - corsPolicy:
      allowOrigins: [{exact: ""}, {regex: "("}]
      allowMethods: [FETCH]
      allowHeaders: ["bad header"]
      maxAge: 1.5s
      unmatchedPreflights: DROP
    route: [{destination: {host: alpha}}]
"#,
        ),
    );
    for expected in [
        "spec.http[0].corsPolicy.allowOrigins[0]: an origin match must not be empty",
        "spec.http[0].corsPolicy.allowOrigins[1]: invalid regex",
        "spec.http[0].corsPolicy.allowMethods[0]: `FETCH` is not a supported HTTP method",
        "spec.http[0].corsPolicy.allowHeaders[0]: `bad header` is not a valid header name",
        "spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision",
        "spec.http[0].corsPolicy.unmatchedPreflights: `DROP` is not FORWARD or IGNORE",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

// ------------------------------------------------- several VirtualServices

#[test]
fn virtual_services_on_one_host_merge_as_istio_merges_them() {
    // `first` has a catch-all entry; in Istio a VirtualService's routes end
    // at its first catch-all, and the merged host's catch-alls go last, so
    // `second`'s routes are reachable.
    let first = virtual_service(
        "first",
        r#"  - name: a
    match: [{uri: {prefix: /a}}, {uri: {prefix: /}}]
    route: [{destination: {host: alpha}}]
  - name: late
    match: [{uri: {prefix: /late}}]
    route: [{destination: {host: beta}}]
"#,
    );
    let second = virtual_service(
        "second",
        r#"  - name: b
    match: [{uri: {prefix: /b}}]
    route: [{destination: {host: gamma}}]
  - name: late
    match: [{uri: {prefix: /late}}]
    route: [{destination: {host: gamma}}]
  - name: by-header
    match: [{uri: {prefix: /}, headers: {x-v2: {exact: "1"}}}]
    route: [{destination: {host: beta}}]
"#,
    );
    let gw = gateway(
        &["alpha", "beta", "gamma"],
        &format!("{first}---\n{second}"),
    );
    let via = |path: &str, headers: &[&str]| get(gw.port, path, headers).origin();
    assert_eq!(via("/a", &[]), "alpha");
    assert_eq!(via("/b", &[]), "gamma");
    // `first`'s /late came after its catch-all: it is not there.
    assert_eq!(via("/late", &[]), "gamma");
    // A prefix `/` with a header condition is not a catch-all.
    assert_eq!(via("/zzz", &["x-v2: 1"]), "beta");
    assert_eq!(via("/zzz", &[]), "alpha");
}

// ------------------------------------------------------------------ mirror

#[test]
fn mirrors_get_copies_and_never_delay_the_answer() {
    // The mirror takes 3 s to answer; the client must not notice.
    let (shadow, copies) = scripted_origin("shadow", 200, std::time::Duration::from_secs(3));
    let (half, half_copies) = scripted_origin("half", 200, std::time::Duration::ZERO);
    let origins = [
        ("alpha", echo_origin("alpha")),
        ("shadow", shadow),
        ("half", half),
        ("dead", dead_addr()),
    ];
    let gw = gateway_with(
        &origins,
        &virtual_service(
            "mirrored",
            r#"  - name: all
    match: [{uri: {prefix: /all}}]
    mirror: {host: shadow}
    route: [{destination: {host: alpha}}]
  - name: half
    match: [{uri: {prefix: /half}}]
    mirror: {host: half}
    mirrorPercentage: {value: 50}
    route: [{destination: {host: alpha}}]
  - name: dead
    match: [{uri: {prefix: /dead}}]
    mirrors: [{destination: {host: dead}}]
    route: [{destination: {host: alpha}}]
"#,
        ),
    );
    let started = std::time::Instant::now();
    for i in 0..5 {
        let r = get(gw.port, &format!("/all/{i}?q=1"), &["x-trace: t"]);
        assert_eq!((r.status, r.origin()), (200, "alpha".to_string()));
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the mirror delayed the answers: {:?}",
        started.elapsed()
    );
    // A POST body is copied too.
    let r = raw_request(
        gw.port,
        "POST /all/post HTTP/1.1\r\nHost: shop.example.com:8080\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    eventually(std::time::Duration::from_secs(10), "six copies", || {
        copies.lock().unwrap().len() == 6
    });
    let copies = copies.lock().unwrap().clone();
    // The request as sent upstream, with `-shadow` on its host.
    assert!(copies[0].starts_with("GET /all/"), "{}", copies[0]);
    let lower = copies[0].to_ascii_lowercase();
    assert!(
        lower.contains(&format!("host: 127.0.0.1-shadow:{}", gw.port)),
        "{lower}"
    );
    assert!(lower.contains("x-trace: t"), "{lower}");
    let post = copies.iter().find(|c| c.starts_with("POST")).unwrap();
    assert!(
        post.to_ascii_lowercase()
            .contains("host: shop.example.com-shadow:8080"),
        "{post}"
    );
    assert!(post.ends_with("\r\nhello"), "{post:?}");

    // mirrorPercentage: a share, at random, as Envoy samples it.
    let mut client = Client::connect(gw.port).unwrap();
    for _ in 0..200 {
        assert_eq!(client.get("/half", &[]).unwrap().status, 200);
    }
    let sampled = || half_copies.lock().unwrap().len();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let n = sampled();
    assert!((60..=140).contains(&n), "{n} of 200 mirrored at 50%");

    // A mirror that cannot be reached changes nothing for the client.
    assert_eq!(get(gw.port, "/dead", &[]).status, 200);
    eventually(std::time::Duration::from_secs(5), "failure counted", || {
        gw.metric("claimgate_mirror_requests_total{cluster=\"outbound|8000||dead.foo.svc.cluster.local\",result=\"error\"}") == 1.0
    });
}

#[test]
fn bad_mirrors_are_refused_with_their_location() {
    let stderr = check_fails(
        &["alpha"],
        &virtual_service(
            "bad",
            r#"  - mirror: {host: alpha}
    mirrorPercentage: {value: 150}
    route: [{destination: {host: alpha}}]
  - mirror: {host: nowhere}
    route: [{destination: {host: alpha}}]
  - mirror: {host: alpha}
    mirrors: [{destination: {host: alpha}}]
    route: [{destination: {host: alpha}}]
  - mirror: {host: alpha}
    directResponse: {status: 200}
"#,
        ),
    );
    for expected in [
        "spec.http[0].mirrorPercentage.value: 150 is not in range 0-100",
        "spec.http[1].mirror.host: no ServiceEntry defines host `nowhere.foo.svc.cluster.local`",
        "spec.http[2]: set one of mirror and mirrors, not both",
        "spec.http[3].mirror: a route with directResponse sends no request upstream to mirror",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn with_a_consistent_hash_a_retry_stays_on_the_hashed_endpoint() {
    // Istio gives a hashed destination a retry policy without the
    // previous-hosts predicate: a user's retries go where the hash says.
    let (bad, hits) = scripted_origin("bad", 503, std::time::Duration::ZERO);
    let good = echo_origin("good");
    let port = free_port();
    let rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: pool, namespace: foo}\n\
                spec:\n  host: pool\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n";
    let gw = Gateway::start(
        port,
        &[
            ("gateway.yaml", gateway_yaml(port)),
            ("pool.yaml", service_entry_endpoints("pool", &[bad, good])),
            (
                "routes.yaml",
                virtual_service("hashed", "  - route: [{destination: {host: pool}}]\n"),
            ),
            ("rule.yaml", rule.to_string()),
        ],
    );
    let (mut stuck, mut served) = (0, 0);
    for user in 0..20 {
        let before = hits.lock().unwrap().len();
        let r = get(gw.port, "/x", &[&format!("x-user: user-{user}")]);
        let attempts = hits.lock().unwrap().len() - before;
        match r.status {
            // Hashed to the failing endpoint: the first attempt and Istio's
            // two default retries (503) all went there.
            503 => {
                assert_eq!(attempts, 3, "user-{user}");
                stuck += 1;
            }
            200 => {
                assert_eq!(attempts, 0, "user-{user}");
                served += 1;
            }
            other => panic!("user-{user}: {other}"),
        }
    }
    assert!(stuck > 0 && served > 0, "{stuck} stuck, {served} served");
}
