//! `claimgate explain`: the decision trace of one request, offline, on the
//! Istio task's configuration and on small configurations around it.

mod support;

use std::path::{Path, PathBuf};

use serde_json::json;
use support::*;

/// A fixed clock: the task's tokens are valid at this time.
const NOW: &str = "1700000000";

fn task_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/jwt-claim-routing")
}

fn istio_jwks() -> String {
    fixture("istio/jwks.json").display().to_string()
}

/// `explain` of `GET http://localhost/headers` on the task's config with the
/// task's key set, with `extra` arguments; asserts it printed a trace.
fn task(extra: &[&str]) -> String {
    let jwks = istio_jwks();
    let mut args = vec!["--jwks", &jwks, "--now", NOW];
    args.extend_from_slice(extra);
    args.extend(["GET", "http://localhost/headers"]);
    let (code, stdout, stderr) = explain(&task_conf(), &args);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    stdout
}

fn assert_has(trace: &str, expected: &[&str]) {
    for e in expected {
        assert!(trace.contains(e), "missing `{e}` in:\n{trace}");
    }
}

/// The task's configuration files, plus `extra` files, in a new folder.
fn task_dir_with(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(task_conf()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn groups_token() -> String {
    read_fixture("istio/groups-scope.jwt").trim().to_string()
}

const TASK_ROUTE: &str = "foo/httpbin/http[0]";

#[test]
fn task_no_token_is_404_with_the_groups_claim_failing() {
    let trace = task(&[]);
    assert_has(
        &trace,
        &[
            "listener: 0.0.0.0:80: Gateway foo/httpbin-gateway servers[0]",
            "virtual host: \"localhost\" matched * (any host)",
            "token: none (looked in: header authorization (prefix \"Bearer \"), query parameter access_token)",
            &format!("{TASK_ROUTE}: no match: @request.auth.claims.groups: exact \"group1\": no valid token, claim condition cannot hold"),
            "route: none matched",
            "answer: 404 no route",
        ],
    );
}

#[test]
fn task_invalid_token_is_401_with_envoys_words() {
    let trace = task(&["--token", "some.invalid.token"]);
    assert_has(
        &trace,
        &[
            "token: header authorization (prefix \"Bearer \"), read by RequestAuthentication istio-system/ingress-jwt jwtRules[0]",
            "result: 401 Jwt header is an invalid JSON",
            "routes: not evaluated (refused at authentication)",
            "answer: 401 Jwt header is an invalid JSON",
        ],
    );
    assert!(!trace.contains("route: "), "{trace}");
}

#[test]
fn task_group1_token_is_routed_to_httpbin() {
    let token = groups_token();
    let trace = task(&["--token", &token]);
    assert_has(
        &trace,
        &[
            "issuer: \"testing@secure.istio.io\": rule RequestAuthentication istio-system/ingress-jwt jwtRules[0]",
            "key: kid \"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ\"",
            "result: valid; principal testing@secure.istio.io/testing@secure.istio.io",
            &format!("{TASK_ROUTE}: matched"),
            &format!("route: {TASK_ROUTE}"),
            "destination: outbound|8000||httpbin.foo.svc.cluster.local (endpoints, round robin: 127.0.0.1:8000)",
            "upstream request: the token is removed from header authorization",
            &format!("answer: 200 routed to outbound|8000||httpbin.foo.svc.cluster.local by route {TASK_ROUTE}"),
        ],
    );
}

#[test]
fn task_token_without_groups_is_404() {
    let token = read_fixture("istio/demo.jwt");
    let trace = task(&["--token", token.trim()]);
    assert_has(
        &trace,
        &[
            "result: valid",
            &format!("{TASK_ROUTE}: no match: @request.auth.claims.groups: exact \"group1\" did not match (the token has no such claim)"),
            "answer: 404 no route",
        ],
    );
}

#[test]
fn a_token_in_the_query_is_found_there() {
    let jwks = istio_jwks();
    let url = format!("http://localhost/headers?access_token={}", groups_token());
    let (code, trace, _) = explain(&task_conf(), &["--jwks", &jwks, "GET", &url]);
    assert_eq!(code, Some(0));
    assert_has(
        &trace,
        &[
            "token: query parameter access_token",
            "upstream request: the token is removed from query parameter access_token",
            "answer: 200 routed",
        ],
    );
}

#[test]
fn an_expired_token_is_401_at_the_given_time() {
    // groups-scope.jwt expires at 3537391104; the skew is 60 s.
    let token = groups_token();
    let jwks = istio_jwks();
    let at = |now: &str| {
        let args = ["--jwks", &jwks, "--now", now, "--token", &token];
        let (code, trace, _) = explain(
            &task_conf(),
            &[&args[..], &["GET", "http://localhost/headers"]].concat(),
        );
        assert_eq!(code, Some(0));
        trace
    };
    let trace = at("3537391165");
    assert_has(
        &trace,
        &[
            "exp 3537391104 (now 3537391165)",
            "result: 401 Jwt is expired",
            "answer: 401 Jwt is expired",
        ],
    );
    assert_has(&at("3537391164"), &["result: valid", "answer: 200 routed"]);
}

#[test]
fn a_token_whose_kid_is_not_in_the_key_set_is_401() {
    // Signed by the project's test key (kid test-rsa) for the task's issuer.
    let token = rs256(json!({"iss": ISTIO_ISSUER, "sub": "mallory", "groups": ["group1"]}));
    let trace = task(&["--token", &token]);
    assert_has(
        &trace,
        &[
            "header: alg RS256, kid \"test-rsa\"",
            "key: none in the set fits kid \"test-rsa\" and alg RS256 (kids in the set: \"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ\")",
            "the gateway refetches the jwksUri once",
            "answer: 401 Jwks doesn't have key to match kid or alg from Jwt",
        ],
    );
}

#[test]
fn without_jwks_a_remote_key_set_has_no_keys_as_at_start() {
    let token = groups_token();
    let (code, trace, _) = explain(
        &task_conf(),
        &["--token", &token, "GET", "http://localhost/headers"],
    );
    assert_eq!(code, Some(0));
    assert_has(
        &trace,
        &[
            "not fetched and no --jwks FILE given: no keys",
            "answer: 401 Jwks remote fetch is failed",
        ],
    );
    // Without a token, the missing keys change nothing.
    let (_, trace, _) = explain(&task_conf(), &["GET", "http://localhost/headers"]);
    assert_has(&trace, &["answer: 404 no route"]);
}

const DENY_GROUP2: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-group2
  namespace: istio-system
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/ip"]
  - when:
    - key: request.auth.claims[groups]
      values: ["group2"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: istio-system
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
"#;

#[test]
fn a_deny_policy_decides_with_403_and_names_its_rule() {
    let dir = task_dir_with(&[("policies.yaml", DENY_GROUP2)]);
    let jwks = istio_jwks();
    let token = groups_token();
    let (code, trace, _) = explain(
        dir.path(),
        &[
            "--jwks",
            &jwks,
            "--now",
            NOW,
            "--token",
            &token,
            "GET",
            "http://localhost/headers",
        ],
    );
    assert_eq!(code, Some(0), "{trace}");
    assert_has(
        &trace,
        &[
            "DENY istio-system/deny-group2: rules[1] matched",
            "ALLOW istio-system/require-jwt: rules[0] matched",
            "decision: denied by DENY istio-system/deny-group2 rules[1]",
            "routes: not evaluated (refused by authorization)",
            "answer: 403 RBAC: access denied",
        ],
    );

    // Without a token: the DENY does not match, and no ALLOW does.
    let (_, trace, _) = explain(dir.path(), &["GET", "http://localhost/headers"]);
    assert_has(
        &trace,
        &[
            "DENY istio-system/deny-group2: no rule matched",
            "rules[0]: to[0] paths [\"/ip\"] does not hold",
            "rules[1]: when request.auth.claims[groups] values [\"group2\"] does not hold",
            "ALLOW istio-system/require-jwt: no rule matched",
            "rules[0]: from[0] requestPrincipals [\"*\"] does not hold",
            "decision: denied (there are ALLOW policies and none matched)",
            "answer: 403 RBAC: access denied",
        ],
    );

    // A token without group2: allowed by the ALLOW, then routing decides.
    let demo = read_fixture("istio/demo.jwt");
    let (_, trace, _) = explain(
        dir.path(),
        &[
            "--jwks",
            &jwks,
            "--now",
            NOW,
            "--token",
            demo.trim(),
            "GET",
            "http://localhost/headers",
        ],
    );
    assert_has(
        &trace,
        &[
            "decision: allowed by ALLOW istio-system/require-jwt rules[0]",
            "answer: 404 no route",
        ],
    );
}

const HOSTS_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hosts
  namespace: foo
spec:
  hosts: ["api.example.com", "*.example.org"]
  gateways: [httpbin-gateway]
  http:
  - name: api
    match:
    - uri: {prefix: /api}
      method: {exact: GET}
    - uri: {prefix: /v2}
      name: v2
    route: [{destination: {host: httpbin, port: {number: 8000}}}]
"#;

/// The task's Gateway and httpbin, with routes for named hosts only.
fn hosts_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["gateway.yaml", "httpbin-service-entry.yaml"] {
        std::fs::copy(task_conf().join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("vs.yaml"), HOSTS_VS).unwrap();
    dir
}

#[test]
fn an_unknown_host_has_no_virtual_host_and_gets_404() {
    let dir = hosts_dir();
    let (code, trace, _) = explain(dir.path(), &["GET", "http://other.test/api"]);
    assert_eq!(code, Some(0));
    assert_has(
        &trace,
        &[
            "virtual host: none for \"other.test\" (this listener serves: *.example.org, api.example.com)",
            "token: not read (no RequestAuthentication rule applies",
            "route: none matched",
            "answer: 404 no route",
        ],
    );

    let (_, trace, _) = explain(dir.path(), &["GET", "http://API.example.com/api/x"]);
    assert_has(
        &trace,
        &[
            "virtual host: \"api.example.com\" matched api.example.com (exact)",
            "foo/hosts/api match[0]: matched",
            "answer: 200 routed",
        ],
    );

    // A -H Host wins over the URL's host, as it does for a client.
    let (_, trace, _) = explain(
        dir.path(),
        &[
            "-H",
            "Host: www.example.org",
            "POST",
            "http://127.0.0.1/other",
        ],
    );
    assert_has(
        &trace,
        &[
            "virtual host: \"www.example.org\" matched *.example.org (wildcard)",
            // Each match entry is a route of its own, as Istio makes it.
            "foo/hosts/api match[0]: no match: uri: prefix \"/api\" did not match (path \"/other\")",
            "foo/hosts/api match[1] (v2): no match: uri: prefix \"/v2\" did not match (path \"/other\")",
            "answer: 404 no route",
        ],
    );
}

#[test]
fn a_port_with_no_listener_is_refused() {
    let (code, trace, _) = explain(&task_conf(), &["GET", "http://localhost:8080/headers"]);
    assert_eq!(code, Some(0));
    assert_has(
        &trace,
        &[
            "listener: none on port 8080 (listeners: 0.0.0.0:80)",
            "answer: no listener on port 8080: the connection is refused",
        ],
    );
}

#[test]
fn a_bad_config_exits_2_with_file_and_field_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {servers: [{port: {number: 80}, hosts: ['*'], tls: {}}], extra: 1}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = explain(dir.path(), &["GET", "http://localhost/"]);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let file = dir.path().join("gateway.yaml");
    assert!(
        stderr.contains(&format!("{}: document 1: spec", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("error(s)"), "{stderr}");
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["GET", "/headers"][..],
        &["GET", "ftp://localhost/"],
        &["-H", "no-colon", "GET", "http://localhost/"],
        &[
            "-H",
            "@request.auth.claims.groups: group1",
            "GET",
            "http://localhost/",
        ],
        &[
            "--jwks",
            "/nonexistent/jwks.json",
            "GET",
            "http://localhost/",
        ],
        &["GET"],
    ] {
        let (code, stdout, stderr) = explain(&task_conf(), args);
        assert_eq!(code, Some(2), "{args:?}: {stdout}\n{stderr}");
        assert!(!stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn the_readme_example_is_what_explain_prints() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("$ claimgate explain --config conf/jwt-claim-routing")
        .expect("the README has the example");
    let block = &readme[start..];
    let output = &block[block.find("\nrequest: ").unwrap() + 1..];
    let output = &output[..output.find("```").unwrap()];
    // The README's command, run where the README runs it.
    let token = read_fixture("istio/demo.jwt");
    let out = claimgate()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["explain", "--config", "conf/jwt-claim-routing"])
        .args(["--jwks", "tests/fixtures/istio/jwks.json", "--now", NOW])
        .args(["--token", token.trim(), "GET", "http://localhost/headers"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let trace = String::from_utf8_lossy(&out.stdout);
    assert_eq!(output, trace, "update the README example");
}

/// The status on the `answer:` line of a trace.
fn answered_status(trace: &str) -> u16 {
    let answer = trace
        .lines()
        .find_map(|l| l.strip_prefix("answer: "))
        .unwrap_or_else(|| panic!("no answer in:\n{trace}"));
    answer[..3].parse().unwrap()
}

#[test]
fn explain_answers_as_the_running_gateway_does() {
    const DENY_FORBIDDEN: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-forbidden
  namespace: istio-system
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/forbidden*"]}}]
"#;
    let jwks = jwks_server(&read_fixture("istio/jwks.json"));
    let httpbin = echo_origin("httpbin");
    let port = free_port();
    let open_routes = "  - match:\n    - uri:\n        prefix: /\n      withoutHeaders:\n        \"@request.auth.claims.groups\":\n          exact: group1\n    route:\n    - destination:\n        port:\n          number: 8000\n        host: httpbin\n";
    let gw = Gateway::start(
        port,
        &[
            ("gateway.yaml", gateway_yaml(port)),
            (
                "request-authentication.yaml",
                task_request_authentication(&format!("http://{jwks}/jwks.json")),
            ),
            ("virtual-service.yaml", task_virtual_service(open_routes)),
            (
                "httpbin.yaml",
                service_entry_yaml("httpbin", "httpbin.foo.svc.cluster.local", httpbin),
            ),
            ("policies.yaml", DENY_FORBIDDEN.to_string()),
        ],
    );
    let groups = groups_token();
    let demo = read_fixture("istio/demo.jwt").trim().to_string();
    let unknown_kid = rs256(json!({"iss": ISTIO_ISSUER, "sub": "x"}));
    let bearer_groups = bearer(&groups);
    let bearer_demo = bearer(&demo);
    let bearer_unknown = bearer(&unknown_kid);
    let query_groups = format!("/headers?access_token={groups}");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("/headers", vec![]),
        ("/headers", vec!["Authorization: Bearer some.invalid.token"]),
        ("/headers", vec![&bearer_groups]),
        ("/headers", vec![&bearer_demo]),
        ("/headers", vec![&bearer_unknown]),
        (&query_groups, vec![]),
        (&query_groups, vec![&bearer_demo]),
        ("/headers", vec!["request.auth.claims.groups: group1"]),
        ("/other", vec![&bearer_demo]),
        ("/other", vec![&bearer_groups]),
        ("/forbidden", vec![]),
        ("/forbidden", vec![&bearer_groups]),
    ];
    let jwks_file = istio_jwks();
    let mut seen = std::collections::BTreeSet::new();
    for (path, headers) in cases {
        let real = get(gw.port, path, &headers).status;
        seen.insert(real);
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut args = vec!["--jwks", &jwks_file];
        for h in &headers {
            args.extend(["-H", h]);
        }
        args.extend(["GET", &url]);
        let (code, trace, stderr) = explain(&gw.config_dir(), &args);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(
            answered_status(&trace),
            real,
            "GET {path} {headers:?}:\n{trace}"
        );
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [200, 401, 403, 404]);
}
