//! Key sets through identity-provider trouble, against a real local JWKS
//! server: rotation, unknown-kid floods, start-up and later outages, bad
//! answers, persistence across a restart, shared URIs, HTTPS with a test CA.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::jwks_server::{Behavior, JwksServer};
use support::*;

/// Only the test RSA key (kid `test-rsa`).
fn rsa_only_jwks() -> String {
    let mut keys: Value = serde_json::from_str(&test_jwks()).unwrap();
    keys["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kty"] == "RSA");
    keys.to_string()
}

const OPEN_ROUTE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: open, namespace: foo}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - route: [{destination: {host: echo, port: {number: 8000}}}]
"#;

fn files(rules: String) -> Vec<(&'static str, String)> {
    vec![
        ("authn.yaml", rules),
        ("routes.yaml", OPEN_ROUTE.to_string()),
        (
            "echo.yaml",
            service_entry_yaml("echo", "echo.foo.svc.cluster.local", echo_origin("echo")),
        ),
    ]
}

/// A gateway whose one rule reads keys from `uri`; `settings` are extra Settings lines.
fn gateway_for(uri: &str, rule_extra: &str, settings: &str, ready: bool) -> Gateway {
    let port = free_port();
    let mut all = files(test_request_authentication(uri, rule_extra));
    all.push(("gateway.yaml", gateway_yaml(port)));
    if ready {
        Gateway::start_with_settings(port, &all, settings)
    } else {
        Gateway::start_unready(port, &all, settings)
    }
}

/// A token never seen before (so never a cache hit).
fn fresh_rs256() -> String {
    rs256(claims(json!({"nonce": fresh_nonce()})))
}

fn fresh_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn status(gw: &Gateway, token: Option<&str>) -> (u16, String) {
    let headers: Vec<String> = token.map(bearer).into_iter().collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let r = get(gw.port, "/anything", &headers);
    (r.status, r.body)
}

fn fetches(gw: &Gateway, uri: &str, result: &str) -> f64 {
    gw.metric(&format!(
        "claimgate_jwks_fetches_total{{result=\"{result}\",uri=\"{uri}\"}}"
    ))
}

#[test]
fn a_rotated_in_key_works_on_its_first_use() {
    let server = JwksServer::start(Behavior::Serve(rsa_only_jwks()), false);
    let gw = gateway_for(&server.url(), "", "", true);
    assert_eq!(status(&gw, Some(&fresh_rs256())).0, 200);
    let hits = server.hits();

    // The identity provider adds the EC key; the first ES256 token succeeds.
    server.set(Behavior::Serve(test_jwks()));
    let token = es256(claims(json!({})));
    let answer = status(&gw, Some(&token));
    assert_eq!(answer.0, 200, "{answer:?}");
    assert_eq!(server.hits(), hits + 1, "one refetch");
    assert_eq!(
        gw.metric(&format!(
            "claimgate_jwks_unknown_kid_refetches_total{{uri=\"{}\"}}",
            server.url()
        )),
        1.0
    );
    assert_eq!(
        gw.metric(&format!("claimgate_jwks_keys{{uri=\"{}\"}}", server.url())),
        2.0
    );
}

#[test]
fn a_flood_of_unknown_kids_refetches_at_most_once_per_cooldown() {
    let server = JwksServer::start(Behavior::Serve(rsa_only_jwks()), false);
    let gw = gateway_for(&server.url(), "", "  jwksRefetchCooldown: 30s\n", true);
    let before = server.hits();
    let payload = claims(json!({})).to_string();
    for i in 0..1000 {
        let token = rs256_with_header(
            &json!({"alg": "RS256", "kid": format!("random-{i}-{}", fresh_nonce())}),
            &payload,
        );
        let (code, body) = status(&gw, Some(&token));
        assert_eq!(
            (code, body.as_str()),
            (401, "Jwks doesn't have key to match kid or alg from Jwt")
        );
    }
    assert!(
        server.hits() - before <= 1,
        "{} fetches for 1000 unknown kids",
        server.hits() - before
    );
    // Known keys are unaffected.
    assert_eq!(status(&gw, Some(&fresh_rs256())).0, 200);
}

#[test]
fn starting_with_the_jwks_server_down_serves_tokenless_requests_until_keys_arrive() {
    // A port with nothing listening yet.
    let port = free_port();
    let uri = format!("http://127.0.0.1:{port}/jwks.json");
    let gw = gateway_for(&uri, "", "", false);
    assert_eq!(status(&gw, None).0, 200);
    assert_eq!(
        status(&gw, Some(&fresh_rs256())),
        (401, "Jwks remote fetch is failed".to_string())
    );
    assert_eq!(gw.ready_status(), Some(503));

    let _server = JwksServer::start_on(port, Behavior::Serve(rsa_only_jwks()), false);
    // The retry backoff starts at 1 s and doubles: a few steps at most.
    eventually(
        Duration::from_secs(20),
        "keys fetched after the server came up",
        || status(&gw, Some(&fresh_rs256())).0 == 200,
    );
    assert_eq!(gw.ready_status(), Some(200));
}

#[test]
fn an_outage_after_start_keeps_the_last_good_keys_and_is_counted() {
    let mut server = JwksServer::start(Behavior::Serve(rsa_only_jwks()), false);
    let uri = server.url();
    let gw = gateway_for(&uri, "", "  jwksRefreshInterval: 1s\n", true);
    server.stop();
    eventually(Duration::from_secs(15), "a failed fetch counted", || {
        fetches(&gw, &uri, "connect") >= 1.0
    });
    for _ in 0..5 {
        assert_eq!(status(&gw, Some(&fresh_rs256())).0, 200);
    }
    assert_eq!(gw.ready_status(), Some(200));
}

#[test]
fn garbage_errors_oversize_and_slow_answers_leave_the_old_keys() {
    let server = JwksServer::start(Behavior::Serve(rsa_only_jwks()), false);
    let uri = server.url();
    let gw = gateway_for(
        &uri,
        "    timeout: 1s\n",
        "  jwksRefreshInterval: 1s\n",
        true,
    );
    let cases = [
        (Behavior::Garbage, "invalid_json"),
        (Behavior::Status(500), "http_status"),
        (Behavior::Oversize, "too_large"),
        (
            Behavior::Serve(r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#.into()),
            "no_valid_keys",
        ),
        (Behavior::Serve(r#"{"issuer":"x"}"#.into()), "no_keys"),
        (
            Behavior::Drip(Duration::from_millis(200), rsa_only_jwks()),
            "timeout",
        ),
    ];
    for (behavior, result) in cases {
        let before = fetches(&gw, &uri, result);
        server.set(behavior);
        eventually(Duration::from_secs(20), result, || {
            fetches(&gw, &uri, result) > before
        });
        assert_eq!(status(&gw, Some(&fresh_rs256())).0, 200, "after {result}");
        assert_eq!(
            gw.metric(&format!("claimgate_jwks_keys{{uri=\"{uri}\"}}")),
            1.0
        );
    }
}

#[test]
fn a_restart_during_an_outage_validates_from_the_persisted_set() {
    let cache = tempfile::tempdir().unwrap();
    let settings = format!("  jwksCacheDir: {}\n", cache.path().display());
    let mut server = JwksServer::start(Behavior::Serve(rsa_only_jwks()), false);
    let uri = server.url();
    let mut first = gateway_for(&uri, "", &settings, true);
    let persisted = || {
        std::fs::read_dir(cache.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    };
    eventually(Duration::from_secs(5), "persisted", || persisted() == 1);
    first.kill();
    server.stop();

    let second = gateway_for(&uri, "", &settings, false);
    assert_eq!(second.ready_status(), Some(200));
    assert_eq!(status(&second, Some(&fresh_rs256())).0, 200);

    // A corrupt file is ignored (with a warning), never fatal.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            std::fs::write(path, b"{corrupt").unwrap();
        }
    }
    let third = gateway_for(&uri, "", &settings, false);
    assert_eq!(
        status(&third, Some(&fresh_rs256())),
        (401, "Jwks remote fetch is failed".to_string())
    );
    assert!(
        third.log().contains("ignoring a corrupt persisted key set"),
        "{}",
        third.log()
    );
}

#[test]
fn two_rules_sharing_a_uri_fetch_once() {
    let server = JwksServer::start(Behavior::Serve(rsa_only_jwks()), false);
    let uri = server.url();
    let port = free_port();
    let second = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: second, namespace: foo}}\n\
         spec:\n  jwtRules:\n  - issuer: https://second.test\n    jwksUri: \"{uri}\"\n"
    );
    let mut all = files(test_request_authentication(&uri, ""));
    all.push(("second.yaml", second));
    all.push(("gateway.yaml", gateway_yaml(port)));
    let gw = Gateway::start(port, &all);
    assert_eq!(server.hits(), 1);
    assert_eq!(status(&gw, Some(&fresh_rs256())).0, 200);
    let other = rs256(claims(json!({"iss": "https://second.test"})));
    assert_eq!(status(&gw, Some(&other)).0, 200);
    assert_eq!(server.hits(), 1);
}

#[test]
fn https_key_sets_are_trusted_through_the_configured_ca_only() {
    let server = JwksServer::start(Behavior::Serve(rsa_only_jwks()), true);
    let ca = fixture("tls/ca.pem");
    let gw = gateway_for(
        &server.url(),
        "",
        &format!("  jwksCaFile: {}\n", ca.display()),
        true,
    );
    assert_eq!(status(&gw, Some(&fresh_rs256())).0, 200);

    // Without the CA, the server's certificate is not trusted: no keys.
    let untrusted = gateway_for(&server.url(), "", "", false);
    assert_eq!(
        status(&untrusted, Some(&fresh_rs256())),
        (401, "Jwks remote fetch is failed".to_string())
    );
    assert_eq!(untrusted.ready_status(), Some(503));
}

#[test]
fn a_jwks_uri_removed_by_a_reload_is_no_longer_fetched_or_waited_for() {
    // A key set that never answers: the gateway is not ready because of it.
    let port = free_port();
    let dead = format!("http://127.0.0.1:{port}/jwks.json");
    let live = JwksServer::start(Behavior::Serve(rsa_only_jwks()), false);
    let gw = gateway_for(&dead, "", "", false);
    assert_eq!(gw.ready_status(), Some(503));
    eventually(Duration::from_secs(10), "the dead URI fetched", || {
        fetches(&gw, &dead, "connect") >= 1.0
    });

    // The rule now reads keys elsewhere.
    let rules = test_request_authentication(&live.url(), "");
    std::fs::write(gw.config_dir().join("authn.yaml"), rules).unwrap();
    eventually(Duration::from_secs(10), "ready on the new key set", || {
        gw.ready_status() == Some(200)
    });
    assert_eq!(status(&gw, Some(&fresh_rs256())).0, 200);
    // The removed URI is fetched no more (the retry backoff starts at 1 s
    // and doubles: three seconds would show a retry).
    let attempts = fetches(&gw, &dead, "connect");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fetches(&gw, &dead, "connect"), attempts);
}

#[test]
fn refetching_an_unchanged_key_set_keeps_cached_tokens_cached() {
    let server = JwksServer::start(Behavior::Serve(rsa_only_jwks()), false);
    let gw = gateway_for(&server.url(), "", "", true);
    let validations = |result: &str| {
        gw.metric(&format!(
            "claimgate_jwt_validations_total{{issuer=\"{TEST_ISSUER}\",result=\"{result}\"}}"
        ))
    };
    let token = fresh_rs256();
    assert_eq!(status(&gw, Some(&token)).0, 200);
    assert_eq!(status(&gw, Some(&token)).0, 200);
    assert_eq!(validations("cached"), 1.0);

    // An unknown kid makes the gateway fetch the set again: the same set.
    let fetched = server.hits();
    let unknown = rs256_with_header(
        &json!({"alg": "RS256", "kid": "not-there"}),
        &claims(json!({})).to_string(),
    );
    assert_eq!(status(&gw, Some(&unknown)).0, 401);
    assert_eq!(server.hits(), fetched + 1);

    // The token it had verified is still a cache hit, not verified again.
    assert_eq!(status(&gw, Some(&token)).0, 200);
    assert_eq!(validations("cached"), 2.0);
    assert_eq!(validations("valid"), 1.0);
}
