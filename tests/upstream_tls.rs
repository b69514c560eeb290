//! DestinationRule `trafficPolicy.tls`: TLS from the gateway to the
//! upstream. The upstream is a TLS front made here (tokio-rustls, in front
//! of an echo origin) that records each handshake it completes: the SNI it
//! got and whether a client certificate came with it. Proven: SIMPLE with a
//! CA and `sni`, the request's host as the name without `sni`, a CA that did
//! not sign the upstream's certificate or a name it does not carry (503
//! with the TLS error, the origin never reached), `insecureSkipVerify`,
//! MUTUAL (file paths and `credentialName`), TLS failures counted for
//! outlier detection, and what `check` refuses.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

/// One handshake a front completed (and forwarded to its origin).
#[derive(Debug, Clone, PartialEq)]
struct Handshake {
    sni: Option<String>,
    client_certificate: bool,
}

/// A TLS server in front of an echo origin.
struct Front {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Handshake>>>,
}

impl Front {
    /// Serves `cert`/`key` (fixtures under tls/); with `client_ca`, a
    /// client certificate signed by it is required.
    fn start(cert: &str, key: &str, client_ca: Option<&str>, origin: SocketAddr) -> Front {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let pem = |name: &str| fixture("tls").join(name);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pem(cert))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(pem(key)).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(pem(ca)).unwrap() {
                    roots.add(c.unwrap()).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(certs, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        // Lives as long as the test process.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, record) = (acceptor.clone(), record.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let (_, conn) = tls.get_ref();
                        record.lock().unwrap().push(Handshake {
                            sni: conn.server_name().map(str::to_string),
                            client_certificate: conn.peer_certificates().is_some(),
                        });
                        if let Ok(mut plain) = TcpStream::connect(origin).await {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        }
                    });
                }
            });
        });
        Front { addr, seen }
    }

    /// The handshakes completed so far.
    fn seen(&self) -> Vec<Handshake> {
        self.seen.lock().unwrap().clone()
    }
}

/// `server.pem` (`localhost`, `127.0.0.1`, signed by `ca.pem`) in front of
/// an echo origin named `name`.
fn localhost_front(name: &str) -> Front {
    Front::start("server.pem", "server.key", None, echo_origin(name))
}

fn tls_path(name: &str) -> String {
    fixture("tls").join(name).display().to_string()
}

/// A ServiceEntry `name` at `addrs` and its DestinationRule with these
/// `trafficPolicy` lines (indented four spaces).
fn upstream(name: &str, addrs: &[SocketAddr], policy: &str) -> String {
    format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  host: {name}\n  trafficPolicy:\n{policy}",
        service_entry_endpoints(name, addrs)
    )
}

/// `tls` lines of a trafficPolicy.
fn tls(lines: &[&str]) -> String {
    let mut out = "    tls:\n".to_string();
    for line in lines {
        out.push_str("      ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Routes `/<name>` to the upstream `name`, for each name.
fn routes(names: &[&str]) -> String {
    let routes: String = names
        .iter()
        .map(|n| {
            format!("  - match: [{{uri: {{prefix: /{n}}}}}]\n    route: [{{destination: {{host: {n}}}}}]\n")
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: all, namespace: foo}}\nspec:\n  hosts: [\"*\"]\n  gateways: [httpbin-gateway]\n  http:\n{routes}"
    )
}

/// A gateway on a free port with these upstreams (name, YAML).
fn gateway_with(upstreams: &[(&str, String)], settings: &str) -> Gateway {
    let port = free_port();
    let names: Vec<&str> = upstreams.iter().map(|(n, _)| *n).collect();
    let mut files = vec![
        ("gateway.yaml".to_string(), gateway_yaml(port)),
        ("routes.yaml".to_string(), routes(&names)),
    ];
    for (name, yaml) in upstreams {
        files.push((format!("{name}.yaml"), yaml.clone()));
    }
    Gateway::start_with_settings(port, &files, settings)
}

/// `GET path` with this `Host` header.
fn get_as(port: u16, host: &str, path: &str) -> Reply {
    raw_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .unwrap_or_else(|| panic!("no response for {host} {path}"))
}

const TLS_ERROR: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: ";

/// A 503 with Envoy's TLS error and `detail` in the body.
fn assert_tls_error(reply: &Reply, detail: &str) {
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.starts_with(TLS_ERROR), "{reply:?}");
    assert!(reply.body.contains(detail), "{detail:?} not in {reply:?}");
}

#[test]
fn simple_with_the_ca_and_sni_reaches_the_origin_over_tls() {
    let front = localhost_front("backend");
    let policy = tls(&[
        "mode: SIMPLE",
        &format!("caCertificates: {}", tls_path("ca.pem")),
        "sni: localhost",
    ]);
    let gw = gateway_with(
        &[("backend", upstream("backend", &[front.addr], &policy))],
        "",
    );
    let reply = get(gw.port, "/backend/headers", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.origin(), "backend");
    assert_eq!(reply.echo()["uri"], "/backend/headers");
    assert_eq!(
        front.seen(),
        [Handshake {
            sni: Some("localhost".into()),
            client_certificate: false
        }]
    );
}

#[test]
fn a_ca_that_did_not_sign_the_certificate_answers_503_and_never_reaches_the_origin() {
    let front = localhost_front("backend");
    let ca = |file: &str| {
        tls(&[
            "mode: SIMPLE",
            &format!("caCertificates: {}", tls_path(file)),
            "sni: localhost",
        ])
    };
    // Three clusters on the same address and SNI: `good` trusts the CA that
    // signed the front's certificate, `other` another CA, and `system` the
    // system's roots (no caCertificates), which do not hold the test CA.
    let gw = gateway_with(
        &[
            ("good", upstream("good", &[front.addr], &ca("ca.pem"))),
            ("other", upstream("other", &[front.addr], &ca("sni/ca.pem"))),
            (
                "system",
                upstream(
                    "system",
                    &[front.addr],
                    &tls(&["mode: SIMPLE", "sni: localhost"]),
                ),
            ),
        ],
        "",
    );
    // A connection `good` verified and pooled is never lent to the others.
    assert_eq!(get(gw.port, "/good", &[]).status, 200);
    let handshakes = front.seen().len();
    for path in ["/other", "/system", "/other"] {
        assert_tls_error(
            &get(gw.port, path, &[]),
            "CERTIFICATE_VERIFY_FAILED: the certificate is not signed by a trusted CA",
        );
    }
    assert_eq!(
        front.seen().len(),
        handshakes,
        "a refused upstream got the request"
    );
    assert_eq!(get(gw.port, "/good", &[]).status, 200);
    assert!(gw.metric("claimgate_rejections_total{reason=\"upstream_connect_failure\"}") >= 3.0);
}

#[test]
fn a_name_the_certificate_does_not_carry_fails_unless_verification_is_skipped() {
    let front = localhost_front("backend");
    let gw = gateway_with(
        &[
            (
                "strict",
                upstream(
                    "strict",
                    &[front.addr],
                    &tls(&[
                        "mode: SIMPLE",
                        &format!("caCertificates: {}", tls_path("ca.pem")),
                        "sni: a.example.test",
                    ]),
                ),
            ),
            (
                "skip",
                upstream(
                    "skip",
                    &[front.addr],
                    &tls(&[
                        "mode: SIMPLE",
                        "sni: a.example.test",
                        "insecureSkipVerify: true",
                    ]),
                ),
            ),
        ],
        "",
    );
    assert_tls_error(
        &get(gw.port, "/strict", &[]),
        "CERTIFICATE_VERIFY_FAILED: the certificate is not valid for the server name",
    );
    assert!(front.seen().is_empty());
    // Neither the (unknown) CA nor the name is checked; the name is sent.
    let reply = get(gw.port, "/skip", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.origin(), "backend");
    assert_eq!(front.seen()[0].sni.as_deref(), Some("a.example.test"));
}

#[test]
fn without_sni_the_request_host_is_the_name_sent_and_verified() {
    let front = localhost_front("backend");
    let policy = tls(&[
        "mode: SIMPLE",
        &format!("caCertificates: {}", tls_path("ca.pem")),
    ]);
    let gw = gateway_with(&[("auto", upstream("auto", &[front.addr], &policy))], "");
    let reply = get_as(gw.port, &format!("localhost:{}", gw.port), "/auto");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(front.seen()[0].sni.as_deref(), Some("localhost"));
    // An IP address: no SNI is sent, and the certificate's IP name verifies.
    let reply = get_as(gw.port, "127.0.0.1", "/auto");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(front.seen()[1].sni, None);
    // A host the certificate does not name.
    assert_tls_error(
        &get_as(gw.port, "other.example.test", "/auto"),
        "CERTIFICATE_VERIFY_FAILED: the certificate is not valid for the server name",
    );
    // A host that cannot be a TLS name is refused before connecting.
    assert_tls_error(&get_as(gw.port, "bad_host!", "/auto"), "no server name");
    assert_eq!(front.seen().len(), 2);
}

#[test]
fn mutual_presents_the_client_certificate_the_upstream_requires() {
    let front = Front::start(
        "server.pem",
        "server.key",
        Some("client/ca.pem"),
        echo_origin("backend"),
    );
    let ca = format!("caCertificates: {}", tls_path("ca.pem"));
    let files = tls(&[
        "mode: MUTUAL",
        &ca,
        &format!("clientCertificate: {}", tls_path("client/client.pem")),
        &format!("privateKey: {}", tls_path("client/client.key")),
        "sni: localhost",
    ]);
    // Istio's secret layout: tls.crt, tls.key and ca.crt.
    let credential = tls(&[
        "mode: MUTUAL",
        "credentialName: upstream-client",
        "sni: localhost",
    ]);
    let simple = tls(&["mode: SIMPLE", &ca, "sni: localhost"]);
    let gw = gateway_with(
        &[
            ("files", upstream("files", &[front.addr], &files)),
            (
                "credential",
                upstream("credential", &[front.addr], &credential),
            ),
            ("simple", upstream("simple", &[front.addr], &simple)),
        ],
        &format!("  credentialsDir: {}\n", tls_path("credentials")),
    );
    for path in ["/files", "/credential"] {
        let reply = get(gw.port, path, &[]);
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(reply.origin(), "backend");
    }
    assert!(front.seen().iter().all(|h| h.client_certificate));
    assert_eq!(front.seen().len(), 2);
    // Without a client certificate the upstream refuses the handshake.
    // (With TLS 1.3 the refusal comes as an alert after the client's side
    // of the handshake, when the response is read.)
    assert_tls_error(
        &get(gw.port, "/simple", &[]),
        "the upstream refused the handshake",
    );
    assert_eq!(front.seen().len(), 2);
}

#[test]
fn a_tls_failure_is_a_gateway_error_for_outlier_detection_and_retried_elsewhere() {
    let good = localhost_front("good");
    // Valid for localhost too, but signed by the other test CA.
    let bad = Front::start(
        "sni/default.pem",
        "sni/default.key",
        None,
        echo_origin("bad"),
    );
    let policy = tls(&[
        "mode: SIMPLE",
        &format!("caCertificates: {}", tls_path("ca.pem")),
        "sni: localhost",
    ]) + "    outlierDetection: {consecutiveGatewayErrors: 1, consecutive5xxErrors: 0, baseEjectionTime: 1m, maxEjectionPercent: 100}\n";
    let gw = gateway_with(
        &[("pool", upstream("pool", &[good.addr, bad.addr], &policy))],
        "",
    );
    // Istio's default retry policy retries a connect failure, which a
    // failed handshake is: every client gets the good endpoint's answer.
    for _ in 0..4 {
        let reply = get(gw.port, "/pool", &[]);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.origin(), "good");
    }
    assert!(bad.seen().is_empty());
    assert_eq!(
        gw.metric("claimgate_upstream_endpoints_healthy{cluster=\"outbound|8000||pool.foo.svc.cluster.local\"}"),
        1.0,
        "the endpoint that failed the handshake is not ejected"
    );
}

#[test]
fn a_ca_file_changed_in_place_reloads_and_pooled_connections_are_not_reused() {
    let front = localhost_front("backend");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::copy(fixture("tls/ca.pem"), &ca).unwrap();
    let policy = tls(&[
        "mode: SIMPLE",
        &format!("caCertificates: {}", ca.display()),
        "sni: localhost",
    ]);
    let gw = gateway_with(
        &[("backend", upstream("backend", &[front.addr], &policy))],
        "",
    );
    assert_eq!(get(gw.port, "/backend", &[]).status, 200);
    // Replaced by a CA that did not sign the front's certificate: the
    // connection verified under the old one (pooled) is not used again.
    std::fs::copy(fixture("tls/sni/ca.pem"), &ca).unwrap();
    eventually(Duration::from_secs(10), "the new CA in force", || {
        get(gw.port, "/backend", &[]).status == 503
    });
    assert_tls_error(
        &get(gw.port, "/backend", &[]),
        "the certificate is not signed by a trusted CA",
    );
    std::fs::copy(fixture("tls/ca.pem"), &ca).unwrap();
    eventually(Duration::from_secs(10), "the first CA back", || {
        get(gw.port, "/backend", &[]).status == 200
    });
}

#[test]
fn check_refuses_what_upstream_tls_cannot_honour_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    let ca = format!("caCertificates: {}", tls_path("ca.pem"));
    let cases = [
        (
            "istio",
            tls(&["mode: ISTIO_MUTUAL"]),
            "spec.trafficPolicy.tls.mode",
            "no mesh here",
        ),
        (
            "missing",
            tls(&["mode: SIMPLE", "caCertificates: /nonexistent/ca.pem"]),
            "spec.trafficPolicy.tls.caCertificates",
            "cannot read /nonexistent/ca.pem",
        ),
        (
            "nokey",
            tls(&[
                "mode: MUTUAL",
                &ca,
                &format!("clientCertificate: {}", tls_path("client/client.pem")),
            ]),
            "spec.trafficPolicy.tls.privateKey",
            "required with clientCertificate",
        ),
        (
            "sans",
            tls(&["mode: SIMPLE", &ca, "subjectAltNames: [localhost]"]),
            "spec.trafficPolicy.tls.subjectAltNames",
            "not supported",
        ),
        (
            "crl",
            tls(&["mode: SIMPLE", &ca, "caCrl: /etc/crl.pem"]),
            "spec.trafficPolicy.tls.caCrl",
            "not supported",
        ),
    ];
    let mut names = Vec::new();
    for (name, policy, _, _) in &cases {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            upstream(name, &[addr], policy),
        )
        .unwrap();
        names.push(*name);
    }
    std::fs::write(dir.path().join("gateway.yaml"), gateway_yaml(8080)).unwrap();
    std::fs::write(dir.path().join("routes.yaml"), routes(&names)).unwrap();
    let (code, _, err) = check(Path::new(dir.path()));
    assert_eq!(code, Some(1), "{err}");
    for (name, _, path, message) in cases {
        let file = format!("{name}.yaml: document 2: {path}: ");
        assert!(
            err.lines()
                .any(|l| l.contains(&file) && l.contains(message)),
            "{file}…{message} missing in:\n{err}"
        );
    }
}

#[test]
fn an_http_health_check_on_a_tls_cluster_checks_over_tls_with_its_name() {
    let front = localhost_front("backend");
    let policy = tls(&[
        "mode: SIMPLE",
        &format!("caCertificates: {}", tls_path("ca.pem")),
        "sni: localhost",
    ]);
    let settings = "  healthChecks:\n  - host: backend\n    namespace: foo\n    interval: 100ms\n    unhealthyThreshold: 1\n    http: {path: /healthz}\n";
    let gw = gateway_with(
        &[("backend", upstream("backend", &[front.addr], &policy))],
        settings,
    );
    // Checked in plain HTTP, the front would refuse every check and the
    // endpoint would be out after the first one.
    eventually(Duration::from_secs(5), "three checks over TLS", || {
        front.seen().len() >= 3
    });
    assert!(
        front
            .seen()
            .iter()
            .all(|h| h.sni.as_deref() == Some("localhost")),
        "{:?}",
        front.seen()
    );
    assert_eq!(
        gw.metric("claimgate_upstream_endpoints_healthy{cluster=\"outbound|8000||backend.foo.svc.cluster.local\"}"),
        1.0
    );
    assert_eq!(get(gw.port, "/backend/x", &[]).status, 200);
}
