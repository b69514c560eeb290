//! What an operator sees: exact counts in /metrics (read with a real
//! Prometheus text parser), /config_dump following a reload with secrets
//! redacted, and the access log: one JSON line per request, no token.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const ALPHA: &str = "outbound|8000||alpha.foo.svc.cluster.local";
const DEAD: &str = "outbound|8000||dead.foo.svc.cluster.local";
const NONE: &str = "(none)";

fn routes() -> String {
    r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: claims, namespace: foo}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - name: dead
    match: [{uri: {prefix: /dead}}]
    route: [{destination: {host: dead.foo.svc.cluster.local}}]
  - name: ok
    match:
    - headers:
        "@request.auth.claims.groups": {exact: group1}
    route: [{destination: {host: alpha.foo.svc.cluster.local}}]
"#
    .to_string()
}

const DENY_FORBIDDEN: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-forbidden, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: [/forbidden]}
"#;

/// A closed port: connections to it are refused.
fn dead_addr() -> std::net::SocketAddr {
    let port = free_port();
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// The configuration shared by the tests, with `extra` RequestAuthentication
/// lines (under the rule) and `settings`.
fn start(extra_rule: &str, settings: &str) -> Gateway {
    let jwks = jwks_server(&test_jwks());
    let port = free_port();
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        (
            "authn.yaml",
            test_request_authentication(&format!("http://{jwks}/jwks.json"), extra_rule),
        ),
        (
            "alpha.yaml",
            service_entry_yaml("alpha", "alpha.foo.svc.cluster.local", echo_origin("alpha")),
        ),
        (
            "dead.yaml",
            service_entry_yaml("dead", "dead.foo.svc.cluster.local", dead_addr()),
        ),
        ("routes.yaml", routes()),
        ("policy.yaml", DENY_FORBIDDEN.to_string()),
    ];
    Gateway::start_with_settings(port, &files, settings)
}

/// A token whose signature no longer matches: one signature byte changed.
fn bad_signature(token: &str) -> String {
    let (head, signature) = token.rsplit_once('.').unwrap();
    let mut signature: Vec<u8> = signature.bytes().collect();
    let i = signature.len() / 2;
    signature[i] = if signature[i] == b'A' { b'B' } else { b'A' };
    format!("{head}.{}", String::from_utf8(signature).unwrap())
}

/// Every sample of `/metrics`, parsed by a Prometheus text parser, by
/// metric name and labels.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    fn of(gw: &Gateway) -> Scrape {
        let body = raw_get(gw.admin, "/metrics").unwrap().body;
        let lines = body.lines().map(|l| Ok(l.to_string()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text"))
    }

    /// The value of `name` with exactly `labels`; `None` when absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: HashMap<&str, &str> = labels.iter().copied().collect();
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .find(|s| {
                s.labels.len() == want.len()
                    && want.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map_or(0.0, |b| b.count)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    }

    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

#[test]
fn metrics_count_a_known_mix_of_requests_exactly() {
    let gw = start("", "");
    let token = rs256(claims(json!({"groups": ["group1"]})));
    let expired = rs256(claims(json!({"exp": now() - 3600, "groups": ["group1"]})));
    let forged = bad_signature(&token);

    let mut statuses = Vec::new();
    let mut send = |path: &str, token: Option<&str>| {
        let header = token.map(bearer);
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        statuses.push(get(gw.port, path, &headers).status);
    };
    for _ in 0..3 {
        send("/anything", Some(&token)); // 200 (one verified, then cached)
    }
    send("/anything", Some(&expired)); // 401 expired
    send("/anything", Some(&forged)); // 401 bad signature
    send("/forbidden", Some(&token)); // 403 by policy
    send("/nothing", None); // 404: the claim route needs a token
    send("/nothing", None); // 404
    send("/dead", None); // the upstream refuses connections
    let dead_status = *statuses.last().unwrap();
    assert_eq!(
        &statuses[..8],
        &[200, 200, 200, 401, 401, 403, 404, 404],
        "{statuses:?}"
    );
    assert!(matches!(dead_status, 502 | 503), "{statuses:?}");
    let dead_code = dead_status.to_string();

    // Metrics are recorded after the answer is sent: wait for the last.
    eventually(Duration::from_secs(5), "all 9 requests recorded", || {
        let m = Scrape::of(&gw);
        m.count(
            "claimgate_request_duration_seconds_count",
            &[("route", "foo/claims/dead")],
        ) == 1.0
            && m.count(
                "claimgate_request_duration_seconds_count",
                &[("route", NONE)],
            ) == 5.0
    });
    let m = Scrape::of(&gw);
    let requests = |route: &str, cluster: &str, code: &str| {
        m.count(
            "claimgate_requests_total",
            &[("route", route), ("cluster", cluster), ("code", code)],
        )
    };
    assert_eq!(requests("foo/claims/ok", ALPHA, "200"), 3.0);
    assert_eq!(requests(NONE, NONE, "401"), 2.0);
    assert_eq!(requests(NONE, NONE, "403"), 1.0);
    assert_eq!(requests(NONE, NONE, "404"), 2.0);
    assert_eq!(requests("foo/claims/dead", DEAD, &dead_code), 1.0);

    let histogram = "claimgate_request_duration_seconds_count";
    assert_eq!(m.count(histogram, &[("route", "foo/claims/ok")]), 3.0);
    assert_eq!(m.count(histogram, &[("route", NONE)]), 5.0);
    let upstream = "claimgate_upstream_response_seconds_count";
    assert_eq!(m.count(upstream, &[("cluster", ALPHA)]), 3.0);
    assert_eq!(m.count(upstream, &[("cluster", DEAD)]), 0.0);

    let rejected = |reason: &str| m.count("claimgate_rejections_total", &[("reason", reason)]);
    assert_eq!(rejected("expired"), 1.0);
    assert_eq!(rejected("bad_signature"), 1.0);
    assert_eq!(rejected("authz_denied"), 1.0);
    assert_eq!(rejected("no_route"), 2.0);
    assert_eq!(rejected("upstream_connect_failure"), 1.0);

    let validated = |result: &str| {
        m.count(
            "claimgate_jwt_validations_total",
            &[("issuer", TEST_ISSUER), ("result", result)],
        )
    };
    assert_eq!(validated("valid"), 1.0);
    assert_eq!(validated("cached"), 3.0); // two 200s and the 403
    assert_eq!(validated("expired"), 1.0);
    assert_eq!(validated("bad_signature"), 1.0);
    assert_eq!(m.count("claimgate_jwt_cache_hits_total", &[]), 3.0);
    assert_eq!(m.count("claimgate_jwt_cache_misses_total", &[]), 3.0);
    assert_eq!(m.count("claimgate_jwt_cache_entries", &[]), 1.0);
    assert_eq!(m.count("claimgate_jwt_cache_evictions_total", &[]), 0.0);

    assert_eq!(
        m.count("claimgate_upstream_endpoints", &[("cluster", ALPHA)]),
        1.0
    );
    assert_eq!(
        m.count(
            "claimgate_upstream_endpoints_healthy",
            &[("cluster", ALPHA)]
        ),
        1.0
    );
    assert_eq!(m.count("claimgate_downstream_requests_active", &[]), 0.0);
    // Nine requests on a connection each, and the start-up probe's connection.
    assert_eq!(m.count("claimgate_downstream_connections_total", &[]), 10.0);
    eventually(Duration::from_secs(5), "every connection closed", || {
        Scrape::of(&gw).count("claimgate_downstream_connections", &[]) == 0.0
    });
    assert_eq!(m.count("claimgate_config_generation", &[]), 1.0);
    assert_eq!(
        m.count(
            "claimgate_authz_decisions_total",
            &[
                ("policy", "istio-system/deny-forbidden"),
                ("result", "deny")
            ]
        ),
        1.0
    );
}

/// An inline key set with an HMAC secret in it.
const SECRET: &str = "c2VjcmV0LWhtYWMta2V5LW9mLWF0LWxlYXN0LTMyLWJ5dGVz";

fn inline_secret_rule() -> String {
    let jwks = json!({"keys": [{"kty": "oct", "kid": "hmac", "alg": "HS256", "k": SECRET}]});
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: hmac, namespace: istio-system}}
spec:
  jwtRules:
  - issuer: hmac-issuer
    jwks: '{jwks}'
"#
    )
}

#[test]
fn config_dump_follows_a_reload_and_redacts_secrets() {
    let gw = start("", "");
    std::fs::write(gw.config_dir().join("hmac.yaml"), inline_secret_rule()).unwrap();
    gw.signal("HUP");
    let dump = || -> Value {
        let reply = raw_get(gw.admin, "/config_dump").unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert!(!reply.body.contains(SECRET), "a secret in the dump");
        serde_json::from_str(&reply.body).unwrap()
    };
    eventually(Duration::from_secs(5), "the first reload", || {
        dump()["generation"] == 2
    });
    let first = dump();
    let files = first["files"].as_array().unwrap();
    assert!(files
        .iter()
        .any(|f| f.as_str().unwrap().ends_with("hmac.yaml")));
    let sha = first["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    let text = first["documents"].to_string();
    assert!(text.contains("deny-forbidden"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");

    // A second change: generation 3, a new hash, the new document shown.
    let routes = routes().replace("name: dead", "name: gone");
    std::fs::write(gw.config_dir().join("routes.yaml"), routes).unwrap();
    eventually(Duration::from_secs(5), "the second reload", || {
        dump()["generation"] == 3
    });
    let second = dump();
    assert_ne!(second["sha256"], first["sha256"]);
    assert!(second["documents"].to_string().contains("gone"));
    assert_eq!(gw.metric("claimgate_config_generation"), 3.0);

    // The other admin paths.
    assert_eq!(raw_get(gw.admin, "/healthz").unwrap().status, 200);
    assert_eq!(raw_get(gw.admin, "/ready").unwrap().status, 200);
    assert_eq!(raw_get(gw.admin, "/nope").unwrap().status, 404);
    let post = raw_request(
        gw.admin,
        "POST /config_dump HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(post.status, 405);
}

#[test]
fn access_log_writes_one_json_line_per_request_and_never_a_token() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let rule = "    fromHeaders: [{name: Authorization, prefix: \"Bearer \"}]\n    fromParams: [access_token]\n";
    let gw = start(rule, &format!("  accessLog: {}\n", log.display()));
    let token = rs256(claims(json!({"groups": ["group1"]})));
    let signature = token.rsplit_once('.').unwrap().1.to_string();

    assert_eq!(
        get(gw.port, "/anything?a=1", &[&bearer(&token)]).status,
        200
    );
    let in_query = format!("/anything?access_token={token}&b=2");
    assert_eq!(get(gw.port, &in_query, &[]).status, 200);
    assert_eq!(
        get(gw.port, "/anything", &[&bearer(&bad_signature(&token))]).status,
        401
    );
    assert_eq!(get(gw.port, "/forbidden", &[&bearer(&token)]).status, 403);
    assert_eq!(get(gw.port, "/nothing", &[]).status, 404);

    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(Duration::from_secs(5), "five lines", || {
        read().lines().count() == 5
    });
    let text = read();
    assert!(
        !text.contains(&signature),
        "a signature in the log:\n{text}"
    );
    assert!(!text.contains("eyJ"), "a token in the log:\n{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        for field in [
            "time",
            "client",
            "method",
            "host",
            "path",
            "status",
            "route",
            "cluster",
            "upstream",
            "duration_seconds",
            "bytes_sent",
            "bytes_received",
            "jwt",
            "issuer",
            "subject",
            "rejection",
            "policy",
        ] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
        assert_eq!(line["method"], "GET");
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let ok = &lines[0];
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["path"], "/anything?a=1");
    assert_eq!(ok["route"], "foo/claims/ok");
    assert_eq!(ok["cluster"], ALPHA);
    assert!(ok["upstream"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(ok["jwt"], "valid");
    assert_eq!(ok["issuer"], TEST_ISSUER);
    assert_eq!(ok["subject"], "user-1");
    assert!(ok["bytes_sent"].as_u64().unwrap() > 0);
    // The path as judged and forwarded: a verified token that is not
    // forwarded is no longer in it (one that is, or one refused, reads
    // `[redacted]`).
    assert_eq!(lines[1]["path"], "/anything?b=2");
    assert_eq!(lines[1]["jwt"], "cached");
    assert_eq!(lines[2]["status"], 401);
    assert_eq!(lines[2]["rejection"], "bad_signature");
    assert_eq!(lines[2]["issuer"], Value::Null);
    assert_eq!(lines[3]["status"], 403);
    assert_eq!(lines[3]["policy"], "istio-system/deny-forbidden");
    assert_eq!(lines[3]["rejection"], "authz_denied");
    assert_eq!(lines[4]["status"], 404);
    assert_eq!(lines[4]["rejection"], "no_route");
    assert_eq!(lines[4]["jwt"], Value::Null);

    // logrotate: move the file away, SIGUSR1, and the next line starts a new file.
    std::fs::rename(&log, logs.path().join("access.log.1")).unwrap();
    gw.signal("USR1");
    eventually(Duration::from_secs(5), "a reopened log", || {
        let _ = get(gw.port, "/nothing", &[]);
        read().lines().count() >= 1
    });
    let rotated = std::fs::read_to_string(logs.path().join("access.log.1")).unwrap();
    assert_eq!(rotated.lines().count(), 5);
}
