//! `decide` on a compiled configuration: what is judged is what is sent.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use pingora::http::RequestHeader;

use super::*;
use crate::compile::{compile, Shared};

const LISTENER: &str = "127.0.0.1:8080";
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

/// A listener on 8080 serving `*` to one destination, the rule for
/// `issuer` (its key set never fetched: no token is sent) writing
/// `x-jwt-role`, a DENY on `/admin` and `/admin/*`, and `settings`.
fn snapshot(settings: &str) -> Snapshot {
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: g, namespace: istio-system}}
spec:
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: o, namespace: istio-system}}
spec:
  hosts: [o.internal]
  ports: [{{number: 80, name: http}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: v, namespace: istio-system}}
spec:
  hosts: ["*"]
  gateways: [g]
  http:
  - name: admins
    match: [{{headers: {{x-jwt-role: {{exact: admin}}}}}}]
    route: [{{destination: {{host: o.internal}}}}]
  - name: paths
    match: [{{uri: {{prefix: /public}}}}]
    route: [{{destination: {{host: o.internal}}}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: r, namespace: istio-system}}
spec:
  jwtRules:
  - issuer: https://issuer.test
    jwksUri: http://127.0.0.1:9/jwks.json
    outputClaimToHeaders: [{{header: x-jwt-role, claim: role}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: istio-system}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/admin", "/admin/*"]}}}}]}}]
---
apiVersion: claimgate/v1
kind: Settings
metadata: {{name: s}}
spec:
  admin: 127.0.0.1:0
{settings}
"#
    );
    let config = crate::config::parse_str(Path::new("test.yaml"), &yaml).expect("parses");
    compile(&config, &Shared::default()).expect("compiles")
}

fn request(raw_target: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut head = RequestHeader::build("GET", raw_target.as_bytes(), None).expect("a target");
    for (name, value) in headers {
        head.append_header(name.to_string(), *value)
            .expect("a header");
    }
    head
}

fn decide_now(snap: &Snapshot, head: &mut RequestHeader) -> Judged {
    let conn = Connection {
        listener: LISTENER,
        port: 8080,
        scheme: "http",
        peer: Some(PEER),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(decide(snap, &conn, head, 0, Keys::AsLoaded, &mut NoTrace))
}

fn status(judged: &Judged) -> u16 {
    match &judged.verdict {
        Verdict::Reject(r) => r.status(),
        Verdict::Forward { .. } => 200,
        other => panic!("unexpected verdict {other:?}"),
    }
}

fn header<'h>(head: &'h RequestHeader, name: &str) -> Vec<&'h str> {
    head.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("<bytes>"))
        .collect()
}

#[test]
fn every_spelling_of_a_denied_path_is_denied_and_left_normalized() {
    let snap = snapshot("");
    for target in [
        "/admin",
        "/x/../admin",
        "/./admin",
        "/%2e/admin",
        "/%61dmin",
        "/public/%2E%2e/admin",
        "/admin/./x",
        "\\admin",
    ] {
        let mut head = request(target, &[("host", "h")]);
        let judged = decide_now(&snap, &mut head);
        if target == "\\admin" {
            assert_eq!(status(&judged), 400, "{target}");
            continue;
        }
        assert_eq!(status(&judged), 403, "{target}");
        assert!(
            head.uri.path().starts_with("/admin"),
            "{target}: {}",
            head.uri
        );
    }
}

#[test]
fn the_normalized_target_is_what_is_forwarded_with_the_query_as_sent() {
    let snap = snapshot("");
    let mut head = request("/public/a/../b/./c?q=%2e&x=/../y", &[("host", "h")]);
    let judged = decide_now(&snap, &mut head);
    assert_eq!(status(&judged), 200);
    assert_eq!(head.raw_path(), b"/public/b/c?q=%2e&x=/../y");
}

#[test]
fn slashes_are_merged_and_decoded_only_at_the_levels_that_say_so() {
    for (level, denied) in [
        ("BASE", false),
        ("MERGE_SLASHES", false),
        ("DECODE_AND_MERGE_SLASHES", true),
    ] {
        let snap = snapshot(&format!("  pathNormalization: {level}"));
        let mut head = request("/x/..%2fadmin", &[("host", "h")]);
        let judged = decide_now(&snap, &mut head);
        let expected = if denied { 403 } else { 404 };
        assert_eq!(status(&judged), expected, "{level}");
    }
    let snap = snapshot("  pathNormalization: MERGE_SLASHES");
    assert_eq!(
        status(&decide_now(
            &snap,
            &mut request("//admin", &[("host", "h")])
        )),
        403
    );
    let snap = snapshot("");
    assert_eq!(
        status(&decide_now(
            &snap,
            &mut request("//admin", &[("host", "h")])
        )),
        404
    );
}

#[test]
fn a_forged_claim_header_never_reaches_a_route() {
    let snap = snapshot("");
    let mut head = request(
        "/x",
        &[
            ("host", "h"),
            ("X-JWT-Role", "admin"),
            ("x-jwt-role", "admin"),
        ],
    );
    let judged = decide_now(&snap, &mut head);
    // Without the client's copies only the catch-less `paths` route is
    // left, and it does not match `/x`.
    assert_eq!(status(&judged), 404);
    assert!(header(&head, "x-jwt-role").is_empty());
}

#[test]
fn bad_targets_and_missing_hosts_are_refused() {
    let snap = snapshot("");
    for (target, headers, expected) in [
        ("admin", vec![("host", "h")], 400),
        ("./admin", vec![("host", "h")], 400),
        ("*", vec![("host", "h")], 400),
        ("/a%00", vec![("host", "h")], 400),
        ("/public", vec![], 400),
    ] {
        let mut head = request(target, &headers);
        assert_eq!(status(&decide_now(&snap, &mut head)), expected, "{target}");
    }
    let mut options = request("*", &[("host", "h")]);
    options.set_method(http::Method::OPTIONS);
    assert_eq!(status(&decide_now(&snap, &mut options)), 404);
    let mut lower = request("/public", &[("host", "h")]);
    lower.set_method(http::Method::from_bytes(b"get").expect("a token"));
    assert_eq!(status(&decide_now(&snap, &mut lower)), 400);
}

#[test]
fn an_absolute_target_gives_its_host_and_goes_upstream_in_origin_form() {
    let snap = snapshot("");
    let mut head = request("http://Shop.Example:8080/public/x?y=1", &[]);
    let judged = decide_now(&snap, &mut head);
    assert_eq!(status(&judged), 200);
    assert_eq!(header(&head, "host"), ["Shop.Example:8080"]);
    assert_eq!(request_host(&head), "shop.example");
    assert_eq!(head.raw_path(), b"/public/x?y=1");
}

#[test]
fn forwarding_headers_are_the_edges() {
    let snap = snapshot("");
    let mut head = request(
        "/public",
        &[
            ("host", "h"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-envoy-retry-on", "5xx"),
            ("X-Envoy-Internal", "true"),
            ("x-request-id", "client-chosen"),
        ],
    );
    let judged = decide_now(&snap, &mut head);
    assert_eq!(status(&judged), 200);
    assert_eq!(header(&head, "x-forwarded-for"), ["203.0.113.9, 192.0.2.7"]);
    assert_eq!(header(&head, "x-forwarded-proto"), ["http"]);
    assert!(header(&head, "x-envoy-retry-on").is_empty());
    assert!(header(&head, "x-envoy-internal").is_empty());
    assert!(header(&head, "x-envoy-external-address").is_empty());
    let id = header(&head, "x-request-id");
    assert_eq!(id.len(), 1);
    assert_ne!(id[0], "client-chosen");
    assert_eq!(judged.remote_ip, Some(PEER));

    // One trusted proxy: the client is its XFF entry; a client's id is kept
    // when told so.
    let snap = snapshot("  trustedProxies: 1\n  preserveExternalRequestId: true");
    let mut trusted = request(
        "/public",
        &[
            ("host", "h"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "abc"),
        ],
    );
    let judged = decide_now(&snap, &mut trusted);
    assert_eq!(judged.remote_ip, "203.0.113.9".parse().ok());
    assert_eq!(header(&trusted, "x-request-id"), ["abc"]);
}

#[test]
fn heads_over_the_limits_are_refused() {
    let snap = snapshot("  maxRequestHeadersKb: 1\n  maxHeadersCount: 3");
    let big = "a".repeat(1100);
    let mut head1 = request("/public", &[("host", "h"), ("x-big", &big)]);
    assert_eq!(status(&decide_now(&snap, &mut head1)), 431);
    let mut head2 = request(
        "/public",
        &[("host", "h"), ("a", "1"), ("b", "2"), ("c", "3")],
    );
    assert_eq!(status(&decide_now(&snap, &mut head2)), 431);
    let mut head3 = request("/public", &[("host", "h"), ("a", "1"), ("b", "2")]);
    assert_eq!(status(&decide_now(&snap, &mut head3)), 200);
}

#[test]
fn addresses_are_written_as_std_writes_them() {
    for ip in [
        "0.0.0.0",
        "9.10.99.100",
        "255.255.255.255",
        "192.0.2.7",
        "::1",
        "2001:db8::7",
    ] {
        let ip: IpAddr = ip.parse().expect("an address");
        let mut text = String::new();
        push_ip(&mut text, ip);
        assert_eq!(text, ip.to_string());
    }
}
