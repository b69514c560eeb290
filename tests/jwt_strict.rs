//! Strict JWT validation through the running gateway: each hostile or
//! malformed token gets the status and the Envoy body a client relies on;
//! several rules, token locations and output headers behave as configured.

mod support;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use support::*;

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// A key set with the test keys plus a second RSA key (Istio's), so that a
/// token without `kid` has two RSA candidates.
fn two_rsa_keys_jwks() -> String {
    let mut keys: Value = serde_json::from_str(&test_jwks()).unwrap();
    let istio: Value = serde_json::from_str(&read_fixture("istio/jwks.json")).unwrap();
    let list = keys["keys"].as_array_mut().unwrap();
    list.insert(0, istio["keys"][0].clone());
    keys.to_string()
}

const ROUTES: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: strict, namespace: foo}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - name: admins
    match:
    - uri: {prefix: /admin}
      headers:
        "@request.auth.claims.admin": {exact: "true"}
        "@request.auth.claims.level": {exact: "42"}
    route: [{destination: {host: echo, port: {number: 8000}}}]
  - name: readers
    match:
    - uri: {prefix: /read}
      headers:
        "@request.auth.claims.scope": {exact: read}
    route: [{destination: {host: echo, port: {number: 8000}}}]
  - name: roles
    match:
    - uri: {prefix: /roles}
      headers:
        "@request.auth.claims.roles": {exact: editor}
    route: [{destination: {host: echo, port: {number: 8000}}}]
  - name: open
    match:
    - uri: {prefix: /echo}
    route: [{destination: {host: echo, port: {number: 8000}}}]
"#;

/// Two RequestAuthentications: the test issuer (audience `api`, outputs,
/// space-delimited `roles`) and a second issuer reading a cookie and a
/// custom header.
fn strict_gateway(settings: &str) -> Gateway {
    let jwks = jwks_server(&two_rsa_keys_jwks());
    let uri = format!("http://{jwks}/jwks.json");
    let port = free_port();
    let rule = "    audiences: [api, other-api]\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - {header: x-user, claim: sub}\n    - {header: x-team, claim: team.name}\n    - {header: x-level, claim: level}\n    spaceDelimitedClaims: [roles]\n";
    let second = format!(
        r#"apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {{name: second, namespace: foo}}
spec:
  jwtRules:
  - issuer: https://second.claimgate.test
    jwksUri: "{uri}"
    fromCookies: [session]
    fromHeaders:
    - {{name: x-token, prefix: "Token "}}
"#
    );
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        ("authn.yaml", test_request_authentication(&uri, rule)),
        ("second.yaml", second),
        ("routes.yaml", ROUTES.to_string()),
        (
            "echo.yaml",
            service_entry_yaml("echo", "echo.foo.svc.cluster.local", echo_origin("echo")),
        ),
    ];
    Gateway::start_with_settings(port, &files, settings)
}

fn api_claims(extra: Value) -> Value {
    let mut c = claims(json!({"aud": "api"}));
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

/// Status and body for a token sent as `Authorization: Bearer`.
fn answer(gw: &Gateway, path: &str, token: &str) -> (u16, String) {
    let r = get(gw.port, path, &[&bearer(token)]);
    (r.status, r.body)
}

fn reject(status: u16, body: &str) -> (u16, String) {
    (status, body.to_string())
}

#[test]
fn alg_none_in_any_spelling_is_refused() {
    let gw = strict_gateway("");
    let payload = b64(&api_claims(json!({})).to_string());
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{payload}.",
            b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#))
        );
        assert_eq!(
            answer(&gw, "/echo", &token),
            reject(401, "Jwt header [alg] is not supported"),
            "{alg}"
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_algorithm_confusion() {
    let gw = strict_gateway("");
    let jwks: Value = serde_json::from_str(&test_jwks()).unwrap();
    // The classic attack: the RSA public key's published bytes as an HMAC secret.
    let secret = jwks["keys"][0]["n"].as_str().unwrap().as_bytes().to_vec();
    for kid in [Some(RSA_KID), None] {
        let header = match kid {
            Some(kid) => format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#),
            None => r#"{"alg":"HS256"}"#.to_string(),
        };
        let input = format!(
            "{}.{}",
            b64(&header),
            b64(&api_claims(json!({})).to_string())
        );
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(
            answer(&gw, "/echo", &token),
            reject(401, "Jwks doesn't have key to match kid or alg from Jwt")
        );
    }
}

#[test]
fn an_ecdsa_signature_of_zeros_is_refused() {
    let gw = strict_gateway("");
    let token = es256(api_claims(json!({})));
    let (input, _) = token.rsplit_once('.').unwrap();
    let zeros = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_eq!(
        answer(&gw, "/echo", &zeros),
        reject(401, "Jwt verification fails")
    );
}

#[test]
fn key_choice_by_kid_and_without_kid() {
    let gw = strict_gateway("");
    let payload = api_claims(json!({})).to_string();
    // No kid, two RSA keys in the set: the one that verifies is found.
    let no_kid = rs256_with_header(&json!({"alg": "RS256"}), &payload);
    assert_eq!(answer(&gw, "/echo", &no_kid).0, 200);
    // A kid that is not in the set (a correct signature by a key we do not know of).
    let unknown = rs256_with_header(&json!({"alg": "RS256", "kid": "rotated-away"}), &payload);
    assert_eq!(
        answer(&gw, "/echo", &unknown),
        reject(401, "Jwks doesn't have key to match kid or alg from Jwt")
    );
}

#[test]
fn exp_and_nbf_are_checked_with_the_configured_skew() {
    let gw = strict_gateway("  clockSkewSeconds: 30\n");
    let at = |extra: Value| answer(&gw, "/echo", &rs256(api_claims(extra)));
    // Margins of 5 s keep a slow machine from turning a second boundary into a flake;
    // the exact boundaries (skew +- 1 s) are unit-tested with `now` as a parameter.
    assert_eq!(
        at(json!({"exp": now() - 35})),
        reject(401, "Jwt is expired")
    );
    assert_eq!(at(json!({"exp": now() - 25})).0, 200);
    assert_eq!(
        at(json!({"nbf": now() + 35})),
        reject(401, "Jwt not yet valid")
    );
    assert_eq!(at(json!({"nbf": now() + 25})).0, 200);
}

#[test]
fn malformed_tokens_get_envoys_words() {
    let gw = strict_gateway("  maxTokenBytes: 65536\n");
    let good = rs256(api_claims(json!({})));
    let (header, rest) = good.split_once('.').unwrap();

    let padded = format!(
        "{}.{rest}",
        STANDARD.encode(URL_SAFE_NO_PAD.decode(header).unwrap()) + "=="
    );
    assert_eq!(
        answer(&gw, "/echo", &padded),
        reject(401, "Jwt header is an invalid Base64url encoded")
    );

    let dup = rs256_raw(
        r#"{"iss":"https://issuer.claimgate.test","iss":"https://evil.test","aud":"api"}"#,
    );
    assert_eq!(
        answer(&gw, "/echo", &dup),
        reject(401, "Jwt payload is an invalid JSON")
    );

    let nested = rs256_raw(&format!(
        r#"{{"iss":"x","a":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    ));
    assert_eq!(
        answer(&gw, "/echo", &nested),
        reject(401, "Jwt payload is an invalid JSON")
    );

    let crit = format!(
        "{}.{rest}",
        b64(r#"{"alg":"RS256","kid":"test-rsa","crit":["exp"]}"#)
    );
    assert_eq!(
        answer(&gw, "/echo", &crit),
        reject(
            401,
            "Jwt header [crit] names an extension that is not supported"
        )
    );

    let two_dots = format!("{good}.x");
    assert_eq!(
        answer(&gw, "/echo", &two_dots),
        reject(
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
        )
    );
}

#[test]
fn a_huge_token_is_refused_without_being_parsed() {
    let gw = strict_gateway("");
    // Over the 8 KiB default: refused before any decoding.
    let big = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256"}"#),
        "A".repeat(9 * 1024)
    );
    assert_eq!(
        answer(&gw, "/echo", &big),
        reject(401, "Jwt is larger than the maximum size")
    );
    // A 1 MiB token exceeds what the HTTP layer reads in a header at all.
    let huge = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), "A".repeat(1 << 20));
    let r = raw_request(gw.port, &format!("GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {huge}\r\nConnection: close\r\n\r\n"));
    let status = r.map(|r| r.status);
    assert!(matches!(status, None | Some(400) | Some(431)), "{status:?}");
    // The gateway is still serving.
    assert_eq!(answer(&gw, "/echo", &rs256(api_claims(json!({})))).0, 200);
}

#[test]
fn audiences_are_any_of_and_a_mismatch_is_403() {
    let gw = strict_gateway("");
    assert_eq!(
        answer(
            &gw,
            "/echo",
            &rs256(api_claims(json!({"aud": ["x", "other-api"]})))
        )
        .0,
        200
    );
    assert_eq!(
        answer(&gw, "/echo", &rs256(api_claims(json!({"aud": ["x", "y"]})))),
        reject(403, "Audiences in Jwt are not allowed")
    );
    assert_eq!(
        answer(&gw, "/echo", &rs256(claims(json!({})))),
        reject(403, "Audiences in Jwt are not allowed")
    );
}

#[test]
fn bool_number_and_space_delimited_claims_route() {
    let gw = strict_gateway("");
    let status = |path: &str, extra: Value| answer(&gw, path, &rs256(api_claims(extra))).0;
    assert_eq!(status("/admin", json!({"admin": true, "level": 42})), 200);
    assert_eq!(
        status("/admin", json!({"admin": "true", "level": "42"})),
        200
    );
    assert_eq!(status("/admin", json!({"admin": false, "level": 42})), 404);
    assert_eq!(status("/read", json!({"scope": "write read"})), 200);
    assert_eq!(status("/read", json!({"scope": "write"})), 404);
    assert_eq!(status("/roles", json!({"roles": "viewer editor"})), 200);
    assert_eq!(status("/roles", json!({"roles": "viewer"})), 404);
}

#[test]
fn output_headers_carry_verified_data_and_never_a_clients_copy() {
    let gw = strict_gateway("");
    let c = api_claims(json!({"team": {"name": "edge"}, "level": 7}));
    let token = rs256(c.clone());
    let r = get(
        gw.port,
        "/echo",
        &[&bearer(&token), "x-user: forged", "x-jwt-payload: forged"],
    );
    assert_eq!(r.status, 200);
    let h = &r.echo()["headers"];
    assert_eq!(h["x-user"], "user-1");
    assert_eq!(h["x-team"], "edge");
    assert_eq!(h["x-level"], "7");
    assert_eq!(h["x-jwt-payload"], token.split('.').nth(1).unwrap());
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(h["x-jwt-payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload, c);

    // Without a token, a client's own copies are removed all the same.
    let r = get(
        gw.port,
        "/echo",
        &["x-user: forged", "x-team: forged", "x-jwt-payload: forged"],
    );
    let h = &r.echo()["headers"];
    assert!(
        h.get("x-user").is_none() && h.get("x-team").is_none() && h.get("x-jwt-payload").is_none(),
        "{h}"
    );
}

#[test]
fn each_issuer_is_read_where_its_rule_says() {
    let gw = strict_gateway("");
    let second = rs256(claims(json!({"iss": "https://second.claimgate.test"})));
    // The second issuer's cookie and custom header (exact prefix) work...
    let r = get(
        gw.port,
        "/echo",
        &[&format!("Cookie: a=1; session={second}; b=2")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echo()["headers"]["cookie"], "a=1; b=2");
    assert_eq!(
        get(gw.port, "/echo", &[&format!("x-token: Token {second}")]).status,
        200
    );
    // ...a wrong prefix is no token at all...
    let r = get(gw.port, "/echo", &[&format!("x-token: token {second}")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo()["headers"]["x-token"], format!("token {second}"));
    // ...and a token in a location its issuer's rule does not read is refused.
    let first_in_cookie = rs256(api_claims(json!({})));
    let r = get(
        gw.port,
        "/echo",
        &[&format!("Cookie: session={first_in_cookie}")],
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Jwt issuer is not configured")
    );
    let r = get(gw.port, "/echo", &[&bearer(&second)]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Jwt issuer is not configured")
    );
}
