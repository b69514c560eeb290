//! TLS on the listener: certificates chosen by SNI on one port, over
//! HTTP/1.1 and h2 (curl, a real client), httpsRedirect, certificates
//! swapped by a reload while a connection stays open, and a reload with a
//! bad key that keeps the old certificate.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio_rustls::rustls;

fn tls_fixture(name: &str) -> String {
    fixture("tls").join(name).display().to_string()
}

fn server(name: &str, port: u16, hosts: &str, tls: &str) -> String {
    format!(
        "  - port: {{number: {port}, name: {name}, protocol: HTTPS}}\n    bind: 127.0.0.1\n    hosts: {hosts}\n    tls:\n{tls}"
    )
}

fn file_pair(cert: &str, key: &str) -> String {
    format!(
        "      mode: SIMPLE\n      serverCertificate: {}\n      privateKey: {}\n",
        tls_fixture(cert),
        tls_fixture(key)
    )
}

fn gateway(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: httpbin-gateway, namespace: foo}}\nspec:\n  servers:\n{servers}"
    )
}

/// Every host of the gateway goes to `origin`.
fn routes(origin: std::net::SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        (
            "routes.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: all, namespace: foo}\nspec:\n  hosts: [\"*\"]\n  gateways: [httpbin-gateway]\n  http:\n  - route: [{destination: {host: origin.foo.svc.cluster.local}}]\n".to_string(),
        ),
        (
            "origin.yaml",
            service_entry_yaml("origin", "origin.foo.svc.cluster.local", origin),
        ),
    ]
}

/// curl `https://{name}:{port}/headers` with `version` (`--http1.1`,
/// `--http2`): (status and HTTP version as curl prints them, curl's
/// verbose output, which names the certificate's subject).
fn curl(version: &str, name: &str, port: u16, ca: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-v", version, "--max-time", "10", "--cacert", ca])
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
        .arg(format!("https://{name}:{port}/headers"))
        .output()
        .expect("curl is installed");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_sni_names_on_one_port_get_their_certificates_over_http1_and_h2() {
    let port = free_port();
    let servers = [
        server(
            "https-a",
            port,
            "[a.example.test]",
            &file_pair("sni/a.pem", "sni/a.key"),
        ),
        server(
            "https-b",
            port,
            "[b.example.test, \"*.b.example.test\"]",
            "      mode: SIMPLE\n      credentialName: b-example\n",
        ),
        server(
            "https-default",
            port,
            "[\"*\"]",
            &file_pair("sni/default.pem", "sni/default.key"),
        ),
    ]
    .concat();
    let mut files = routes(echo_origin("origin"));
    files.push(("gateway.yaml", gateway(&servers)));
    let settings = format!("  credentialsDir: {}\n", tls_fixture("credentials"));
    let _gw = Gateway::start_with_settings(port, &files, &settings);
    let ca = tls_fixture("sni/ca.pem");

    for version in ["--http1.1", "--http2"] {
        let expected = if version == "--http2" {
            "200 2"
        } else {
            "200 1.1"
        };
        for (name, subject) in [
            ("a.example.test", "CN=a.example.test"),
            ("b.example.test", "CN=b.example.test"),
            ("x.b.example.test", "CN=b.example.test"),
            // No server lists it: the `*` server's certificate.
            ("localhost", "CN=default.example.test"),
        ] {
            let (status, verbose) = curl(version, name, port, &ca);
            assert_eq!(status, expected, "{version} {name}: {verbose}");
            assert!(
                verbose.contains(&format!("subject: {subject}")),
                "{version} {name}: {verbose}"
            );
        }
    }
    // An IP address sends no SNI: the default certificate (valid for 127.0.0.1).
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--cacert", &ca, "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version}"])
        .arg(format!("https://127.0.0.1:{port}/headers"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2");
}

#[test]
fn https_redirect_answers_301_to_the_https_url() {
    let port = free_port();
    let servers = format!(
        "  - port: {{number: {port}, name: http, protocol: HTTP}}\n    bind: 127.0.0.1\n    hosts: [a.example.test, \"*.b.example.test\"]\n    tls: {{httpsRedirect: true}}\n\
         \x20 - port: {{number: {port}, name: http-plain, protocol: HTTP}}\n    bind: 127.0.0.1\n    hosts: [plain.example.test]\n"
    );
    let mut files = routes(echo_origin("origin"));
    files.push(("gateway.yaml", gateway(&servers)));
    let _gw = Gateway::start(port, &files);

    let ask = |host: &str| {
        raw_request(
            port,
            &format!("GET /path/x?y=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .unwrap()
    };
    let reply = ask("a.example.test");
    assert_eq!(reply.status, 301, "{reply:?}");
    assert_eq!(
        reply.header("location"),
        Some("https://a.example.test/path/x?y=1")
    );
    // As Envoy: the Host header as sent, port included.
    let reply = ask("X.B.example.test:8080");
    assert_eq!(reply.status, 301, "{reply:?}");
    assert_eq!(
        reply.header("location"),
        Some("https://X.B.example.test:8080/path/x?y=1")
    );
    // A server of the same port without httpsRedirect is served.
    let reply = ask("plain.example.test");
    assert_eq!(reply.status, 200, "{reply:?}");
}

// ---------------------------------------------------------------- reload

/// A TLS client that trusts both test CAs, kept open across requests.
struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsClient {
    fn connect(port: u16) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        for ca in ["ca.pem", "sni/ca.pem"] {
            let pem = std::fs::read(fixture("tls").join(ca)).unwrap();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        TlsClient {
            stream: rustls::StreamOwned::new(conn, tcp),
        }
    }

    /// One keep-alive GET: its status.
    fn get(&mut self) -> u16 {
        self.stream
            .write_all(b"GET /headers HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("a content-length");
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).unwrap();
        head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// The DER of the certificate the server presented.
    fn certificate(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }
}

fn der(pem_file: &str) -> Vec<u8> {
    let pem = std::fs::read(fixture("tls").join(pem_file)).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    der
}

fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn a_reload_swaps_the_certificate_keeps_open_connections_and_refuses_a_bad_key() {
    let port = free_port();
    let with =
        |cert: &str, key: &str| gateway(&server("https", port, "[\"*\"]", &file_pair(cert, key)));
    let mut files = routes(echo_origin("origin"));
    files.push(("gateway.yaml", with("server.pem", "server.key")));
    let gw = Gateway::start(port, &files);

    let mut open = TlsClient::connect(port);
    assert_eq!(open.get(), 200);
    assert_eq!(open.certificate(), der("server.pem"));

    replace(
        &gw.config_dir(),
        "gateway.yaml",
        &with("sni/default.pem", "sni/default.key"),
    );
    eventually(Duration::from_secs(5), "the new certificate", || {
        let mut fresh = TlsClient::connect(port);
        fresh.get() == 200 && fresh.certificate() == der("sni/default.pem")
    });
    // The connection opened before the reload goes on, on its certificate.
    assert_eq!(open.get(), 200);
    assert_eq!(open.certificate(), der("server.pem"));

    // A key that does not match: the reload fails, the certificate stays.
    let errors = gw.metric("claimgate_config_reloads_total{result=\"error\"}");
    replace(
        &gw.config_dir(),
        "gateway.yaml",
        &with("sni/default.pem", "sni/a.key"),
    );
    eventually(Duration::from_secs(5), "the reload error", || {
        gw.metric("claimgate_config_reloads_total{result=\"error\"}") > errors
    });
    assert!(gw.log().contains("does not match"), "{}", gw.log());
    let mut fresh = TlsClient::connect(port);
    assert_eq!(fresh.get(), 200);
    assert_eq!(fresh.certificate(), der("sni/default.pem"));
}

#[test]
fn check_refuses_other_tls_modes_and_bad_certificates_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        server(
            "a",
            8443,
            "[a.example.test]",
            "      mode: MUTUAL\n      credentialName: x\n",
        ),
        server("b", 8443, "[b.example.test]", "      mode: PASSTHROUGH\n"),
        server(
            "c",
            8443,
            "[c.example.test]",
            &file_pair("sni/a.pem", "sni/b.key"),
        ),
        server(
            "d",
            8443,
            "[d.example.test]",
            &file_pair("sni/missing.pem", "sni/a.key"),
        ),
        server(
            "e",
            8443,
            "[e.example.test]",
            &file_pair("sni/a.key", "sni/a.key"),
        ),
    ]
    .concat();
    std::fs::write(dir.path().join("gateway.yaml"), gateway(&servers)).unwrap();
    let (code, stdout, stderr) = check(dir.path());
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, Some(1), "{all}");
    for expected in [
        "spec.servers[0].tls.mode",
        "`MUTUAL` is not supported",
        "spec.servers[1].tls.mode",
        "`PASSTHROUGH` is not supported",
        "spec.servers[2].tls.privateKey",
        "does not match",
        "spec.servers[3].tls.serverCertificate",
        "cannot read",
        "spec.servers[4].tls.serverCertificate",
        "no CERTIFICATE",
    ] {
        assert!(all.contains(expected), "{expected}: {all}");
    }
}

#[test]
fn a_certificate_file_rewritten_in_place_is_read_again() {
    let port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::copy(fixture("tls/server.pem"), &cert).unwrap();
    std::fs::copy(fixture("tls/server.key"), &key).unwrap();
    let tls = format!(
        "      mode: SIMPLE\n      serverCertificate: {}\n      privateKey: {}\n",
        cert.display(),
        key.display()
    );
    let mut files = routes(echo_origin("origin"));
    files.push((
        "gateway.yaml",
        gateway(&server("https", port, "[\"*\"]", &tls)),
    ));
    let gw = Gateway::start(port, &files);
    let mut open = TlsClient::connect(port);
    assert_eq!(open.get(), 200);
    assert_eq!(open.certificate(), der("server.pem"));

    // The config does not change; the files do (as certbot renews them).
    std::fs::copy(fixture("tls/sni/default.key"), &key).unwrap();
    std::fs::copy(fixture("tls/sni/default.pem"), &cert).unwrap();
    eventually(Duration::from_secs(5), "the renewed certificate", || {
        let mut fresh = TlsClient::connect(port);
        fresh.get() == 200 && fresh.certificate() == der("sni/default.pem")
    });
    assert_eq!(open.get(), 200);
    assert!(gw.metric("claimgate_config_reloads_total{result=\"ok\"}") >= 1.0);
}

#[test]
fn a_scheme_match_sees_https_on_a_tls_listener() {
    let port = free_port();
    let servers = server(
        "https",
        port,
        "[\"*\"]",
        &file_pair("sni/default.pem", "sni/default.key"),
    );
    let files = vec![
        ("gateway.yaml", gateway(&servers)),
        (
            "origin.yaml",
            service_entry_yaml("origin", "origin.foo.svc.cluster.local", echo_origin("secure")),
        ),
        (
            "routes.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: all, namespace: foo}\nspec:\n  hosts: [\"*\"]\n  gateways: [httpbin-gateway]\n  http:\n  - match: [{scheme: {exact: https}}]\n    route: [{destination: {host: origin.foo.svc.cluster.local}}]\n".to_string(),
        ),
    ];
    let _gw = Gateway::start(port, &files);
    let ca = tls_fixture("sni/ca.pem");
    for version in ["--http1.1", "--http2"] {
        let (status, verbose) = curl(version, "localhost", port, &ca);
        assert!(status.starts_with("200 "), "{version}: {status} {verbose}");
    }
}
