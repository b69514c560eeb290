//! DestinationRule traffic policies: consistent hashing on a header the
//! gateway writes from a verified claim (per-user stickiness), outlier
//! ejection and return, and what `check` refuses.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// A ServiceEntry `pool` whose endpoints are these addresses.
fn pool(addrs: &[SocketAddr]) -> String {
    service_entry_endpoints("pool", addrs)
}

/// A gateway routing everything to the pool at `addrs`, under a
/// DestinationRule with these `trafficPolicy` lines.
fn pool_gateway(addrs: &[SocketAddr], policy: &str) -> Gateway {
    let port = free_port();
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        ("pool.yaml", pool(addrs)),
        ("routes.yaml", routes_everything_to("pool")),
        ("dr.yaml", destination_rule(policy)),
    ];
    Gateway::start(port, &files)
}

fn destination_rule(policy: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: pool, namespace: foo}}
spec:
  host: pool
  trafficPolicy:
{policy}"#
    )
}

#[test]
fn hashing_a_claim_written_header_keeps_each_user_on_one_endpoint() {
    let jwks = jwks_server(&test_jwks());
    let addrs: Vec<SocketAddr> = (0..3).map(|i| echo_origin(&format!("e{i}"))).collect();
    let port = free_port();
    let rule = "    outputClaimToHeaders: [{header: x-user, claim: sub}]\n";
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        (
            "authn.yaml",
            test_request_authentication(&format!("http://{jwks}/jwks.json"), rule),
        ),
        ("pool.yaml", pool(&addrs)),
        ("routes.yaml", routes_everything_to("pool")),
        (
            "dr.yaml",
            destination_rule("    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n"),
        ),
    ];
    let _gw = Gateway::start(port, &files);
    let tokens: Vec<String> = (0..20)
        .map(|u| rs256(claims(json!({"sub": format!("user-{u}")}))))
        .collect();
    let mut placed: HashMap<usize, HashSet<String>> = HashMap::new();
    let mut client = Client::connect(port).unwrap();
    for i in 0..1000 {
        let user = i % tokens.len();
        // A client-sent x-user must not steer the hash.
        let forged = format!("x-user: forged-{i}");
        let reply = client
            .get("/anything", &[&bearer(&tokens[user]), &forged])
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.echo()["headers"]["x-user"], format!("user-{user}"));
        placed.entry(user).or_default().insert(reply.origin());
    }
    for (user, endpoints) in &placed {
        assert_eq!(endpoints.len(), 1, "user-{user} went to {endpoints:?}");
    }
    let used: HashSet<&String> = placed.values().flatten().collect();
    assert!(used.len() > 1, "every user on one endpoint: {used:?}");
}

#[test]
fn a_failing_endpoint_is_ejected_and_comes_back() {
    let good = echo_origin("good");
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gw = pool_gateway(
        &[good, dead],
        "    outlierDetection:\n      consecutiveGatewayErrors: 2\n      interval: 1s\n      baseEjectionTime: 2s\n      maxEjectionPercent: 50\n",
    );
    let port = gw.port;
    let healthy = || {
        gw.metric("claimgate_upstream_endpoints_healthy{cluster=\"outbound|8000||pool.foo.svc.cluster.local\"}")
    };
    assert_eq!(healthy(), 2.0);

    // Round robin: every other request goes to the dead endpoint first,
    // and Istio's default retry (connect-failure) hides that from the
    // client; the second failed attempt ejects it.
    let statuses: Vec<u16> = (0..6).map(|_| get(port, "/x", &[]).status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(healthy(), 1.0);
    assert_eq!(
        gw.metric("claimgate_upstream_retries_total{cluster=\"outbound|8000||pool.foo.svc.cluster.local\"}"),
        2.0
    );
    let ejected_at = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(port, "/x", &[]).origin(), "good");
    }
    // Ejected: not even tried (no retry needed).
    assert_eq!(
        gw.metric("claimgate_upstream_retries_total{cluster=\"outbound|8000||pool.foo.svc.cluster.local\"}"),
        2.0
    );

    // After baseEjectionTime it is back (and fails again).
    std::thread::sleep(Duration::from_secs(2).saturating_sub(ejected_at.elapsed()));
    eventually(Duration::from_secs(2), "the endpoint back", || {
        healthy() == 2.0
    });
    let retries = gw.metric(
        "claimgate_upstream_retries_total{cluster=\"outbound|8000||pool.foo.svc.cluster.local\"}",
    );
    for _ in 0..4 {
        assert_eq!(get(port, "/x", &[]).status, 200);
    }
    assert!(
        gw.metric("claimgate_upstream_retries_total{cluster=\"outbound|8000||pool.foo.svc.cluster.local\"}") > retries,
        "the returned endpoint was not tried"
    );
}

#[test]
fn check_refuses_what_is_not_supported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = echo_origin("good");
    std::fs::write(dir.path().join("gateway.yaml"), gateway_yaml(8080)).unwrap();
    std::fs::write(dir.path().join("pool.yaml"), pool(&[good])).unwrap();
    std::fs::write(dir.path().join("routes.yaml"), routes_everything_to("pool")).unwrap();
    let policy = "    loadBalancer: {simple: PASSTHROUGH}\n    connectionPool: {tcp: {maxConnections: 0, maxConnectionDuration: 1h, tcpKeepalive: {time: 500ms, probes: 200}}, http: {http2MaxRequests: -1, maxRequestsPerConnection: 1, h2UpgradePolicy: UPGRADE}}\n";
    let subsets = "  subsets:\n  - {name: v1, labels: {v: \"1\"}}\n  - {name: v1}\n  - {name: v2, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}}\n";
    std::fs::write(dir.path().join("dr.yaml"), destination_rule(policy)).unwrap();
    std::fs::write(
        dir.path().join("dr2.yaml"),
        destination_rule("    outlierDetection: {}\n")
            .replace("name: pool,", "name: pool2,")
            .replace("host: pool", "host: pool2")
            + subsets,
    )
    .unwrap();
    let (code, _, err) = check(Path::new(dir.path()));
    assert_eq!(code, Some(1), "{err}");
    for path in [
        "spec.trafficPolicy.loadBalancer.simple",
        "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration: not supported",
        "spec.trafficPolicy.connectionPool.http.http2MaxRequests: -1 is not a limit",
        "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time: whole seconds from 1s to 32767s",
        "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes: from 1 to 127",
        "spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection: not supported",
        "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: `UPGRADE` is not supported",
        "spec.subsets[2].trafficPolicy.connectionPool.tcp.connectTimeout: must be more than zero",
        "spec.subsets[1].name: subset `v1` is defined twice",
    ] {
        assert!(err.contains(path), "{path} missing in:\n{err}");
    }
}

// ----------------------------------------------------------------- subsets

/// A ServiceEntry `pool` whose endpoints carry these `(labels, weight)`.
fn labelled_pool(endpoints: &[(SocketAddr, &str, u32)]) -> String {
    let listed: String = endpoints
        .iter()
        .map(|(a, labels, weight)| {
            format!(
                "  - address: {}\n    ports: {{http: {}}}\n    labels: {labels}\n    weight: {weight}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: pool, namespace: foo}}\n\
         spec:\n  hosts: [pool.foo.svc.cluster.local]\n  ports: [{{number: 8000, name: http, protocol: HTTP}}]\n\
         \x20 resolution: STATIC\n  endpoints:\n{listed}"
    )
}

const SUBSET_ROUTES: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: foo}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: pool, subset: v2}}]
  - route: [{destination: {host: pool, subset: v1}}]
"#;

#[test]
fn subsets_route_to_the_endpoints_their_labels_select_with_their_own_policy() {
    let e: Vec<SocketAddr> = (0..3).map(|i| echo_origin(&format!("e{i}"))).collect();
    let port = free_port();
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        (
            "pool.yaml",
            labelled_pool(&[
                (e[0], "{version: v1}", 1),
                (e[1], "{version: v1, zone: a}", 1),
                (e[2], "{version: v2}", 1),
            ]),
        ),
        ("routes.yaml", SUBSET_ROUTES.to_string()),
        (
            "dr.yaml",
            // v1 replaces the rule's round robin with a hash on x-user.
            destination_rule("    loadBalancer: {simple: ROUND_ROBIN}\n")
                + "  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      loadBalancer:\n        consistentHash: {httpHeaderName: x-user}\n  - name: v2\n    labels: {version: v2}\n",
        ),
    ];
    let gw = Gateway::start(port, &files);
    let mut client = Client::connect(port).unwrap();
    for _ in 0..20 {
        assert_eq!(client.get("/v2/x", &[]).unwrap().origin(), "e2");
    }
    let mut placed: HashMap<usize, HashSet<String>> = HashMap::new();
    for i in 0..200 {
        let user = i % 10;
        let reply = client.get("/", &[&format!("x-user: u{user}")]).unwrap();
        placed.entry(user).or_default().insert(reply.origin());
    }
    let used: HashSet<&String> = placed.values().flatten().collect();
    assert!(
        used.iter().all(|o| *o == "e0" || *o == "e1"),
        "v1 reached {used:?}"
    );
    assert_eq!(used.len(), 2, "both v1 endpoints serve: {used:?}");
    for (user, endpoints) in &placed {
        assert_eq!(endpoints.len(), 1, "u{user} moved: {endpoints:?}");
    }
    for (subset, endpoints) in [("v1", 2.0), ("v2", 1.0)] {
        let sample = format!(
            "claimgate_upstream_endpoints{{cluster=\"outbound|8000|{subset}|pool.foo.svc.cluster.local\"}}"
        );
        assert_eq!(gw.metric(&sample), endpoints, "{sample}");
    }
}

#[test]
fn endpoint_weights_split_round_robin_exactly() {
    let heavy = echo_origin("heavy");
    let light = echo_origin("light");
    let port = free_port();
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        // 30:10 is 3:1.
        (
            "pool.yaml",
            labelled_pool(&[(heavy, "{}", 30), (light, "{}", 10)]),
        ),
        ("routes.yaml", routes_everything_to("pool")),
    ];
    let _gw = Gateway::start(port, &files);
    let mut client = Client::connect(port).unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        *counts
            .entry(client.get("/", &[]).unwrap().origin())
            .or_default() += 1;
    }
    assert_eq!(counts.get("heavy"), Some(&300), "{counts:?}");
    assert_eq!(counts.get("light"), Some(&100), "{counts:?}");
}

#[test]
fn check_refuses_unknown_and_empty_subsets_and_oversized_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (echo_origin("a"), echo_origin("b"));
    std::fs::write(dir.path().join("gateway.yaml"), gateway_yaml(8080)).unwrap();
    std::fs::write(
        dir.path().join("pool.yaml"),
        labelled_pool(&[(a, "{version: v1}", 7_000), (b, "{version: v1}", 7_001)]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("routes.yaml"),
        SUBSET_ROUTES.replace("subset: v1", "subset: v3"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dr.yaml"),
        destination_rule("    loadBalancer: {simple: RANDOM}\n")
            + "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
    )
    .unwrap();
    let (code, _, err) = check(Path::new(dir.path()));
    assert_eq!(code, Some(1), "{err}");
    for expected in [
        "spec.http[0].route[0].destination.subset: subset `v2` selects no endpoint of ServiceEntry foo/pool",
        "spec.http[1].route[0].destination.subset: no DestinationRule for `pool.foo.svc.cluster.local` defines subset `v3`",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }

    // Routed to the whole pool, the weights are too large to balance.
    std::fs::write(dir.path().join("routes.yaml"), routes_everything_to("pool")).unwrap();
    let (code, _, err) = check(Path::new(dir.path()));
    assert_eq!(code, Some(1), "{err}");
    let expected = "spec.endpoints: the endpoints' weights add up to 14001";
    assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
}

// --------------------------------------------------------- connection pool

/// Starts `GET path` on its own connection; the reply and when it came.
fn spawn_get(port: u16, path: &'static str) -> std::thread::JoinHandle<(Reply, Instant)> {
    std::thread::spawn(move || {
        let reply = get(port, path, &[]);
        (reply, Instant::now())
    })
}

#[test]
fn past_max_connections_and_pending_requests_the_gateway_answers_503_overflow_at_once() {
    let gw = pool_gateway(
        &[echo_origin("slow")],
        "    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}\n",
    );
    let port = gw.port;
    let active = || gw.metric("claimgate_downstream_requests_active");
    // One request at the origin, one waiting for its connection...
    let first = spawn_get(port, "/delay/1");
    eventually(Duration::from_secs(5), "the first request in", || {
        active() == 1.0
    });
    let second = spawn_get(port, "/delay/0.2");
    eventually(Duration::from_secs(5), "the second request waiting", || {
        active() == 2.0
    });
    // ...and the third finds both places taken.
    let third = get(port, "/x", &[]);
    let refused_at = Instant::now();
    assert_eq!(third.status, 503);
    assert_eq!(
        third.body,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    assert_eq!(third.header("x-envoy-overloaded"), Some("true"));

    let (first, first_at) = first.join().unwrap();
    let (second, second_at) = second.join().unwrap();
    assert_eq!((first.status, second.status), (200, 200));
    assert!(
        refused_at < first_at,
        "the overflow was answered before the first request ended, not queued"
    );
    assert!(
        first_at <= second_at,
        "the waiting request went after the first"
    );
    assert_eq!(
        gw.metric("claimgate_rejections_total{reason=\"upstream_overflow\"}"),
        1.0
    );
    // The places are given back.
    assert_eq!(get(port, "/x", &[]).status, 200);
}

#[test]
fn past_http2_max_requests_the_next_request_is_refused_without_waiting() {
    let gw = pool_gateway(
        &[echo_origin("slow")],
        "    connectionPool:\n      http: {http2MaxRequests: 2}\n",
    );
    let port = gw.port;
    let busy: Vec<_> = (0..2).map(|_| spawn_get(port, "/delay/1")).collect();
    eventually(Duration::from_secs(5), "two requests in", || {
        gw.metric("claimgate_downstream_requests_active") == 2.0
    });
    let refused = get(port, "/x", &[]);
    let refused_at = Instant::now();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.ends_with("reset reason: overflow"));
    for handle in busy {
        let (reply, at) = handle.join().unwrap();
        assert_eq!(reply.status, 200);
        assert!(refused_at < at, "refused while the others were in flight");
    }
    assert_eq!(get(port, "/x", &[]).status, 200);
}
