//! ServiceEntry `resolution: DNS`: endpoints named by host name, resolved
//! in the background; a name that does not resolve answers 503 and harms
//! nothing else.

mod support;

use std::path::Path;

use support::*;

/// An echo origin reachable at `localhost:<port>` whatever `localhost`
/// resolves to here (127.0.0.1, and ::1 where there is IPv6).
fn localhost_origin(name: &str) -> u16 {
    let v4 = echo_origin(name);
    let origin = Origin {
        name: name.into(),
        jwks: None,
    };
    let _ = claimgate::origin::spawn(&format!("[::1]:{}", v4.port()), origin);
    v4.port()
}

fn dns_entry(name: &str, host: &str, endpoints: &str, port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: foo}}
spec:
  hosts: [{host}]
  ports: [{{number: 8000, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: DNS
{endpoints}"#
    )
}

const ROUTES: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: foo}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - match: [{uri: {prefix: /by-endpoint}}]
    route: [{destination: {host: by-endpoint.example}}]
  - match: [{uri: {prefix: /by-host}}]
    route: [{destination: {host: localhost}}]
  - match: [{uri: {prefix: /nowhere}}]
    route: [{destination: {host: nowhere.example}}]
"#;

#[test]
fn names_resolve_in_the_background_and_a_dead_name_harms_nothing_else() {
    let port = free_port();
    let a = localhost_origin("by-endpoint");
    let b = localhost_origin("by-host");
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        (
            "a.yaml",
            dns_entry(
                "a",
                "by-endpoint.example",
                "  endpoints: [{address: localhost}]\n",
                a,
            ),
        ),
        // No endpoints: the host itself is resolved.
        ("b.yaml", dns_entry("b", "localhost", "", b)),
        (
            "c.yaml",
            dns_entry(
                "c",
                "nowhere.example",
                "  endpoints: [{address: claimgate-test.invalid}]\n",
                b,
            ),
        ),
        ("routes.yaml", ROUTES.to_string()),
    ];
    let gw = Gateway::start(port, &files);
    for _ in 0..4 {
        assert_eq!(
            get(port, "/by-endpoint", &[]).echo()["origin"],
            "by-endpoint"
        );
        assert_eq!(get(port, "/by-host", &[]).echo()["origin"], "by-host");
    }
    let nowhere = get(port, "/nowhere", &[]);
    assert_eq!(nowhere.status, 503, "{nowhere:?}");
    assert_eq!(nowhere.body, "no healthy upstream");
    assert_eq!(
        gw.metric("claimgate_upstream_endpoints{cluster=\"outbound|8000||nowhere.example\"}"),
        0.0
    );
    assert!(
        gw.metric("claimgate_upstream_endpoints{cluster=\"outbound|8000||by-endpoint.example\"}")
            >= 1.0
    );
    let dump = raw_get(gw.admin, "/config_dump").unwrap().body;
    assert!(dump.contains("localhost:"), "{dump}");
}

#[test]
fn check_refuses_what_dns_cannot_resolve() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), gateway_yaml(8080)).unwrap();
    std::fs::write(
        dir.path().join("se.yaml"),
        dns_entry("w", "\"*.example.com\"", "", 80)
            + "---\n"
            + &dns_entry(
                "x",
                "x.example",
                "  endpoints: [{address: \"not a name\"}]\n",
                80,
            ),
    )
    .unwrap();
    let (code, _, err) = check(Path::new(dir.path()));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("spec.hosts[0]") && err.contains("cannot be resolved by DNS"),
        "{err}"
    );
    assert!(
        err.contains("spec.endpoints[0].address")
            && err.contains("neither an IP address nor a host name"),
        "{err}"
    );
}
