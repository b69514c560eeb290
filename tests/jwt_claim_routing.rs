//! Istio's task "JWT claim based routing", end to end through the real
//! binary, and the claim-routing behaviour around it.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

fn task_gateway() -> Gateway {
    let jwks = jwks_server(&read_fixture("istio/jwks.json"));
    let httpbin = echo_origin("httpbin");
    let port = free_port();
    Gateway::start(
        port,
        &[
            ("gateway.yaml", gateway_yaml(port)),
            (
                "request-authentication.yaml",
                task_request_authentication(&format!("http://{jwks}/jwks.json")),
            ),
            ("virtual-service.yaml", task_virtual_service("")),
            (
                "httpbin.yaml",
                service_entry_yaml("httpbin", "httpbin.foo.svc.cluster.local", httpbin),
            ),
        ],
    )
}

#[test]
fn the_istio_task_gets_its_four_documented_answers() {
    let gw = task_gateway();
    let groups = read_fixture("istio/groups-scope.jwt");
    let no_groups = read_fixture("istio/demo.jwt");

    // 1. No token: the token is optional, and no route matches.
    assert_eq!(get(gw.port, "/headers", &[]).status, 404);

    // 2. An invalid token: 401 with Envoy's body and WWW-Authenticate.
    let invalid = get(
        gw.port,
        "/headers",
        &["Authorization: Bearer some.invalid.token"],
    );
    assert_eq!(invalid.status, 401);
    assert_eq!(invalid.body, "Jwt header is an invalid JSON");
    let realm = format!(
        "Bearer realm=\"http://127.0.0.1:{}/headers\", error=\"invalid_token\"",
        gw.port
    );
    assert_eq!(invalid.header("www-authenticate"), Some(realm.as_str()));

    // 3. A valid token with groups ["group1", "group2"]: proxied to httpbin.
    let ok = get(gw.port, "/headers", &[&bearer(groups.trim())]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.echo()["origin"], "httpbin");

    // 4. A valid token without `groups`: no route.
    assert_eq!(
        get(gw.port, "/headers", &[&bearer(no_groups.trim())]).status,
        404
    );
}

#[test]
fn a_client_cannot_forge_a_claim_with_a_header() {
    let gw = task_gateway();
    // A valid header name that looks like the claim.
    let r = get(gw.port, "/headers", &["request.auth.claims.groups: group1"]);
    assert_eq!(r.status, 404);
    // The pseudo-header itself: `@` is not a valid header-name character,
    // so the request never reaches routing; it must not be routed either way.
    let r = get(
        gw.port,
        "/headers",
        &["@request.auth.claims.groups: group1"],
    );
    assert!(matches!(r.status, 400 | 404), "{r:?}");
    // And with a valid token lacking the claim, the forged header changes nothing.
    let no_groups = read_fixture("istio/demo.jwt");
    let r = get(
        gw.port,
        "/headers",
        &[
            &bearer(no_groups.trim()),
            "request.auth.claims.groups: group1",
        ],
    );
    assert_eq!(r.status, 404);
}

/// A gateway for the test issuer with one route per behaviour under test,
/// each to its own echo origin, so a response says which route matched.
fn claims_gateway(rule_extra: &str) -> Gateway {
    let jwks = jwks_server(&test_jwks());
    let port = free_port();
    let mut files = vec![
        ("gateway.yaml".to_string(), gateway_yaml(port)),
        (
            "request-authentication.yaml".to_string(),
            test_request_authentication(&format!("http://{jwks}/jwks.json"), rule_extra),
        ),
        (
            "virtual-service.yaml".to_string(),
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: claims
  namespace: foo
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - name: nested-dots
    match:
    - uri: {exact: /nested}
      headers:
        "@request.auth.claims.team.name": {exact: edge}
    route: [{destination: {host: nested, port: {number: 8000}}}]
  - name: nested-brackets
    match:
    - uri: {exact: /brackets}
      headers:
        "@request.auth.claims[https://claimgate.test/org][unit]": {exact: platform}
    route: [{destination: {host: brackets, port: {number: 8000}}}]
  - name: prefix
    match:
    - uri: {exact: /prefix}
      headers:
        "@request.auth.claims.email": {prefix: "admin@"}
    route: [{destination: {host: prefix, port: {number: 8000}}}]
  - name: regex
    match:
    - uri: {exact: /regex}
      headers:
        "@request.auth.claims.groups": {regex: "team-[0-9]+"}
    route: [{destination: {host: regex, port: {number: 8000}}}]
  - name: both-claims
    match:
    - uri: {exact: /and}
      headers:
        "@request.auth.claims.groups": {exact: group1}
        "@request.auth.claims.tier": {exact: gold}
    route: [{destination: {host: both, port: {number: 8000}}}]
  - name: not-banned
    match:
    - uri: {exact: /without}
      withoutHeaders:
        "@request.auth.claims.groups": {exact: banned}
    route: [{destination: {host: without, port: {number: 8000}}}]
  - name: anyone
    match:
    - uri: {prefix: /echo}
    route: [{destination: {host: echo, port: {number: 8000}}}]
"#
            .to_string(),
        ),
    ];
    for name in [
        "nested", "brackets", "prefix", "regex", "both", "without", "echo",
    ] {
        let addr = echo_origin(name);
        let entry = service_entry_yaml(name, &format!("{name}.foo.svc.cluster.local"), addr);
        files.push((format!("{name}.yaml"), entry));
    }
    Gateway::start(port, &files)
}

/// Which origin answered `path` for a token over `extra` claims (`None`: 404).
fn routed(gw: &Gateway, path: &str, extra: serde_json::Value) -> Option<String> {
    let r = get(gw.port, path, &[&bearer(&rs256(claims(extra)))]);
    match r.status {
        200 => Some(r.echo()["origin"].as_str().unwrap().to_string()),
        404 => None,
        other => panic!("unexpected {other}: {r:?}"),
    }
}

#[test]
fn nested_bracketed_prefix_and_regex_claims_route() {
    let gw = claims_gateway("");
    assert_eq!(
        routed(&gw, "/nested", json!({"team": {"name": "edge"}})).as_deref(),
        Some("nested")
    );
    assert_eq!(
        routed(&gw, "/nested", json!({"team": {"name": "core"}})),
        None
    );
    assert_eq!(routed(&gw, "/nested", json!({"team": "edge"})), None);

    let org = json!({"https://claimgate.test/org": {"unit": "platform"}});
    assert_eq!(routed(&gw, "/brackets", org).as_deref(), Some("brackets"));
    assert_eq!(
        routed(
            &gw,
            "/brackets",
            json!({"https://claimgate.test/org": {"unit": "x"}})
        ),
        None
    );

    assert_eq!(
        routed(&gw, "/prefix", json!({"email": "admin@example.com"})).as_deref(),
        Some("prefix")
    );
    assert_eq!(
        routed(&gw, "/prefix", json!({"email": "user@example.com"})),
        None
    );

    assert_eq!(
        routed(&gw, "/regex", json!({"groups": ["x", "team-42"]})).as_deref(),
        Some("regex")
    );
    assert_eq!(routed(&gw, "/regex", json!({"groups": ["team-42x"]})), None);
}

#[test]
fn two_claims_in_one_match_must_both_hold() {
    let gw = claims_gateway("");
    let both = json!({"groups": ["group1"], "tier": "gold"});
    assert_eq!(routed(&gw, "/and", both).as_deref(), Some("both"));
    assert_eq!(
        routed(&gw, "/and", json!({"groups": ["group1"], "tier": "silver"})),
        None
    );
    assert_eq!(routed(&gw, "/and", json!({"tier": "gold"})), None);
}

#[test]
fn without_headers_on_a_claim_excludes_matching_tokens() {
    let gw = claims_gateway("");
    assert_eq!(
        routed(&gw, "/without", json!({"groups": ["ok"]})).as_deref(),
        Some("without")
    );
    assert_eq!(
        routed(&gw, "/without", json!({})).as_deref(),
        Some("without")
    );
    assert_eq!(
        routed(&gw, "/without", json!({"groups": ["ok", "banned"]})),
        None
    );
    // No token at all: the claim is absent, so the route matches.
    assert_eq!(get(gw.port, "/without", &[]).status, 200);
}

#[test]
fn es256_tokens_are_verified_too() {
    let gw = claims_gateway("");
    let token = es256(claims(json!({"team": {"name": "edge"}})));
    let r = get(gw.port, "/nested", &[&bearer(&token)]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn the_token_is_removed_before_proxying_by_default() {
    let gw = claims_gateway("");
    let token = rs256(claims(json!({})));
    let r = get(gw.port, "/echo", &[&bearer(&token), "X-Other: kept"]);
    assert_eq!(r.status, 200);
    let headers = &r.echo()["headers"];
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert_eq!(headers["x-other"], "kept");

    // In the query string: honoured, and removed with the other parameters kept.
    let r = get(gw.port, &format!("/echo?a=1&access_token={token}&b=2"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo()["uri"], "/echo?a=1&b=2");
}

#[test]
fn forward_original_token_keeps_it() {
    let gw = claims_gateway("    forwardOriginalToken: true\n");
    let token = rs256(claims(json!({})));
    let r = get(gw.port, "/echo", &[&bearer(&token)]);
    assert_eq!(
        r.echo()["headers"]["authorization"],
        format!("Bearer {token}")
    );
    let r = get(gw.port, &format!("/echo?access_token={token}"), &[]);
    assert_eq!(r.echo()["uri"], format!("/echo?access_token={token}"));
}

#[test]
fn a_token_in_the_query_string_routes_on_its_claims() {
    let gw = claims_gateway("");
    let token = rs256(claims(json!({"team": {"name": "edge"}})));
    let r = get(gw.port, &format!("/nested?access_token={token}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo()["origin"], "nested");
}

#[test]
fn expired_and_unknown_issuer_tokens_are_401_with_envoys_words() {
    let gw = claims_gateway("");
    // Past exp by more than the 60 s default skew.
    let expired = rs256(claims(json!({"exp": now() - 120})));
    let r = get(gw.port, "/echo", &[&bearer(&expired)]);
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt is expired"));
    // Within the skew: still accepted.
    let fresh = rs256(claims(json!({"exp": now() - 30})));
    assert_eq!(get(gw.port, "/echo", &[&bearer(&fresh)]).status, 200);

    let stranger = rs256(claims(json!({"iss": "https://elsewhere.test"})));
    let r = get(gw.port, "/echo", &[&bearer(&stranger)]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Jwt issuer is not configured")
    );

    // A valid token in two places at once fails closed.
    let token = rs256(claims(json!({})));
    let r = get(
        gw.port,
        &format!("/echo?access_token={token}"),
        &[&bearer(&rs256(claims(json!({"x": 1}))))],
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Found multiple Jwt tokens")
    );
}

#[test]
fn a_bad_signature_and_an_unknown_kid_are_told_apart() {
    let gw = claims_gateway("");
    let token = rs256(claims(json!({})));
    let (input, sig) = token.rsplit_once('.').unwrap();
    let flipped = format!(
        "{input}.{}{}",
        if sig.starts_with('A') { 'B' } else { 'A' },
        &sig[1..]
    );
    let r = get(gw.port, "/echo", &[&bearer(&flipped)]);
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt verification fails"));

    let header = base64_url(r#"{"alg":"RS256","kid":"no-such-key"}"#);
    let (_, rest) = token.split_once('.').unwrap();
    let r = get(gw.port, "/echo", &[&bearer(&format!("{header}.{rest}"))]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Jwks doesn't have key to match kid or alg from Jwt")
    );

    // And they are counted apart.
    assert_eq!(
        gw.metric("claimgate_rejections_total{reason=\"bad_signature\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("claimgate_rejections_total{reason=\"unknown_kid\"}"),
        1.0
    );
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn an_unreachable_destination_answers_503_quickly() {
    let port = free_port();
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gw = Gateway::start(
        port,
        &[
            ("gateway.yaml", gateway_yaml(port)),
            (
                "vs.yaml",
                r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: dead, namespace: foo}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - route: [{destination: {host: dead, port: {number: 8000}}}]
"#
                .to_string(),
            ),
            (
                "dead.yaml",
                service_entry_yaml("dead", "dead.foo.svc.cluster.local", dead),
            ),
        ],
    );
    let started = Instant::now();
    let r = get(gw.port, "/anything", &[]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.body,
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
