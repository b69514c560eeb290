//! AuthorizationPolicy through the running gateway: Istio's "require a
//! token" policies on the task's config, DENY over ALLOW, operations, IP
//! blocks, AUDIT, and the decisions counted in /metrics.

mod support;

use support::*;

/// The task's VirtualService plus an open route, to see policies apart from claim routing.
fn virtual_service() -> String {
    task_virtual_service(
        "  - match:\n    - uri:\n        prefix: /open\n    route:\n    - destination:\n        port:\n          number: 8000\n        host: httpbin\n",
    )
}

/// The task's gateway (the Istio key set and tokens) plus `policies`.
fn gateway_with(policies: &str) -> Gateway {
    let jwks = jwks_server(&read_fixture("istio/jwks.json"));
    let httpbin = echo_origin("httpbin");
    let port = free_port();
    let authn = task_request_authentication(&format!("http://{jwks}/jwks.json"));
    Gateway::start(
        port,
        &[
            ("gateway.yaml", gateway_yaml(port)),
            ("authn.yaml", authn),
            ("vs.yaml", virtual_service()),
            (
                "httpbin.yaml",
                service_entry_yaml("httpbin", "httpbin.foo.svc.cluster.local", httpbin),
            ),
            ("policies.yaml", policies.to_string()),
        ],
    )
}

fn groups_token() -> String {
    read_fixture("istio/groups-scope.jwt").trim().to_string()
}

fn no_groups_token() -> String {
    read_fixture("istio/demo.jwt").trim().to_string()
}

fn status_body(gw: &Gateway, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let r = raw_request(
        gw.port,
        &format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .expect("a response");
    (r.status, r.body)
}

fn denied() -> (u16, String) {
    (403, "RBAC: access denied".to_string())
}

const REQUIRE_PRINCIPAL: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
"#;

#[test]
fn istios_require_jwt_policy_gives_403_401_200_404() {
    let gw = gateway_with(REQUIRE_PRINCIPAL);
    assert_eq!(status_body(&gw, "GET", "/headers", None), denied());
    let invalid = status_body(&gw, "GET", "/headers", Some("some.invalid.token"));
    assert_eq!(invalid, (401, "Jwt header is an invalid JSON".to_string()));
    assert_eq!(
        status_body(&gw, "GET", "/headers", Some(&groups_token())).0,
        200
    );
    assert_eq!(
        status_body(&gw, "GET", "/headers", Some(&no_groups_token())).0,
        404
    );
}

#[test]
fn istios_deny_without_token_policy_gives_403() {
    let gw = gateway_with(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-no-jwt
  namespace: istio-system
spec:
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
"#,
    );
    assert_eq!(status_body(&gw, "GET", "/open", None), denied());
    assert_eq!(
        status_body(&gw, "GET", "/open", Some(&no_groups_token())).0,
        200
    );
}

#[test]
fn a_deny_on_a_claim_beats_an_allow_and_not_values_work() {
    let gw = gateway_with(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all-tokens, namespace: istio-system}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["testing@secure.istio.io/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-group2, namespace: istio-system}
spec:
  action: DENY
  rules:
  - when:
    - key: request.auth.claims[groups]
      values: ["group2"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-unless-foo-bar, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/open/foo-only*"]}}]
    when:
    - key: request.auth.claims[foo]
      notValues: ["bar"]
"#,
    );
    // The groups token carries group2: denied although the ALLOW matches.
    assert_eq!(
        status_body(&gw, "GET", "/headers", Some(&groups_token())),
        denied()
    );
    // demo.jwt has no group2: allowed, then routed (to /open).
    assert_eq!(
        status_body(&gw, "GET", "/open", Some(&no_groups_token())).0,
        200
    );
    // notValues: demo.jwt has foo=bar, so it passes; groups-scope.jwt has no foo.
    assert_eq!(
        status_body(&gw, "GET", "/open/foo-only", Some(&no_groups_token())).0,
        200
    );
    // No token: no ALLOW matches.
    assert_eq!(status_body(&gw, "GET", "/open", None), denied());
}

#[test]
fn path_and_method_operations() {
    let gw = gateway_with(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: read-only, namespace: istio-system}
spec:
  rules:
  - to:
    - operation:
        methods: ["GET", "HEAD"]
        paths: ["/open/public*"]
        notPaths: ["/open/public/secret"]
"#,
    );
    assert_eq!(status_body(&gw, "GET", "/open/public/x", None).0, 200);
    assert_eq!(status_body(&gw, "POST", "/open/public/x", None), denied());
    assert_eq!(status_body(&gw, "GET", "/open/private", None), denied());
    assert_eq!(
        status_body(&gw, "GET", "/open/public/secret", None),
        denied()
    );
}

#[test]
fn ip_blocks_match_the_connections_address() {
    let allow_local = gateway_with(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: local-only, namespace: istio-system}
spec:
  rules:
  - from: [{source: {ipBlocks: ["127.0.0.1/32"]}}]
"#,
    );
    assert_eq!(status_body(&allow_local, "GET", "/open", None).0, 200);

    let allow_elsewhere = gateway_with(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: office-only, namespace: istio-system}
spec:
  rules:
  - from: [{source: {ipBlocks: ["10.0.0.0/8", "192.168.0.0/16"]}}]
"#,
    );
    assert_eq!(
        status_body(&allow_elsewhere, "GET", "/open", None),
        denied()
    );
    // X-Forwarded-For is not trusted by default: it cannot claim an office address.
    let r = get(
        allow_elsewhere.port,
        "/open",
        &["X-Forwarded-For: 10.1.2.3"],
    );
    assert_eq!(r.status, 403);
}

#[test]
fn audit_leaves_the_decision_alone_and_every_decision_is_counted() {
    let gw = gateway_with(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-headers, namespace: istio-system}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/headers"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: ["POST"]}}]
"#,
    );
    // Audited but allowed (then routed by claims as usual).
    assert_eq!(
        status_body(&gw, "GET", "/headers", Some(&groups_token())).0,
        200
    );
    assert_eq!(status_body(&gw, "GET", "/headers", None).0, 404);
    assert_eq!(status_body(&gw, "POST", "/open", None), denied());
    assert_eq!(status_body(&gw, "GET", "/open", None).0, 200);

    let metrics = get(gw.admin, "/metrics", &[]).body;
    let count = |policy: &str, result: &str| -> u64 {
        let prefix =
            format!("claimgate_authz_decisions_total{{policy=\"{policy}\",result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    assert_eq!(count("istio-system/audit-headers", "audit"), 2, "{metrics}");
    assert_eq!(count("istio-system/deny-post", "deny"), 1, "{metrics}");
}

#[test]
fn unsupported_conditions_and_custom_fail_check_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policies.yaml"),
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: istio-system}
spec:
  action: CUSTOM
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: timed, namespace: istio-system}
spec:
  rules:
  - when:
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ["[update]"]
"#,
    )
    .unwrap();
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, Some(1));
    let file = dir.path().join("policies.yaml");
    let file = file.display();
    assert!(
        stderr.contains(&format!(
            "{file}: document 1: spec.action: CUSTOM (external authorization) is not supported"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}: document 2: spec.rules[0].when[0].key: `experimental.envoy"
        )),
        "{stderr}"
    );
}
