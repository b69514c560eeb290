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

const ROUTE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: foo}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - route: [{destination: {host: pool}}]
"#;

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
        ("routes.yaml", ROUTE.to_string()),
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
    let port = free_port();
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        ("pool.yaml", pool(&[good, dead])),
        ("routes.yaml", ROUTE.to_string()),
        (
            "dr.yaml",
            destination_rule(
                "    outlierDetection:\n      consecutiveGatewayErrors: 2\n      interval: 1s\n      baseEjectionTime: 2s\n      maxEjectionPercent: 50\n",
            ),
        ),
    ];
    let gw = Gateway::start(port, &files);
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
    std::fs::write(dir.path().join("routes.yaml"), ROUTE).unwrap();
    let policy = "    loadBalancer: {simple: PASSTHROUGH}\n    connectionPool: {tcp: {maxConnections: 10}}\n";
    std::fs::write(
        dir.path().join("dr.yaml"),
        destination_rule(policy) + "  subsets: [{name: v1, labels: {v: \"1\"}}]\n",
    )
    .unwrap();
    let (code, _, err) = check(Path::new(dir.path()));
    assert_eq!(code, Some(1), "{err}");
    for path in [
        "spec.trafficPolicy.loadBalancer.simple",
        "spec.trafficPolicy.connectionPool",
        "spec.subsets",
    ] {
        assert!(err.contains(path), "{path} missing in:\n{err}");
    }
}
