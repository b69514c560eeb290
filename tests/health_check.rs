//! Active health checks (`Settings.healthChecks`): an endpoint failing its
//! HTTP or TCP check is not picked and comes back once it passes again, a
//! cluster with none healthy answers 503 without trying any, the
//! healthy-endpoints gauge follows, a reload that leaves the check alone
//! keeps what the checks found, and `check` refuses a bad entry by its path.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use support::*;

const CLUSTER: &str = "outbound|8000||pool.foo.svc.cluster.local";

/// An origin whose `/healthz` answers 200 or 503 as `set_healthy` says and
/// every other path `{"origin": name}` (counted); `stop` closes its
/// listener, so connections are refused.
struct Flip {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Flip {
    fn start(name: &str) -> Flip {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, st, name) = (
            healthy.clone(),
            served.clone(),
            stop.clone(),
            name.to_string(),
        );
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (h, s, name) = (h.clone(), s.clone(), name.clone());
                        std::thread::spawn(move || answer(stream, &name, &h, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener drops here: the port refuses connections.
        });
        Flip {
            addr,
            healthy,
            served,
            stop,
            thread: Some(thread),
        }
    }

    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Requests answered on paths other than `/healthz`.
    fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Flip {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request on `stream`, answered with `Connection: close`.
fn answer(stream: TcpStream, name: &str, healthy: &AtomicBool, served: &AtomicUsize) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let (status, body) = if path == "/healthz" {
        if healthy.load(Ordering::Relaxed) {
            ("200 OK", "ok".to_string())
        } else {
            ("503 Service Unavailable", "down".to_string())
        }
    } else {
        served.fetch_add(1, Ordering::Relaxed);
        ("200 OK", format!("{{\"origin\":\"{name}\"}}"))
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = reader.get_mut().write_all(response.as_bytes());
}

/// A gateway routing everything to `pool` (the `addrs`), with `check` as
/// the `Settings.healthChecks` entry for it (lines under `- host: pool`).
fn gateway(addrs: &[SocketAddr], check: &str) -> Gateway {
    let port = free_port();
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        ("pool.yaml", service_entry_endpoints("pool", addrs)),
        ("routes.yaml", routes_everything_to("pool")),
    ];
    let settings = format!("  healthChecks:\n  - host: pool\n    namespace: foo\n{check}");
    Gateway::start_with_settings(port, &files, &settings)
}

fn healthy(gw: &Gateway) -> f64 {
    gw.metric(&format!(
        "claimgate_upstream_endpoints_healthy{{cluster=\"{CLUSTER}\"}}"
    ))
}

fn retries(gw: &Gateway) -> f64 {
    gw.metric(&format!(
        "claimgate_upstream_retries_total{{cluster=\"{CLUSTER}\"}}"
    ))
}

/// The origins that answered `n` requests, which must all be 200s.
fn answered_by(gw: &Gateway, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let reply = get(gw.port, "/anything", &[]);
            assert_eq!(reply.status, 200, "{reply:?}");
            reply.origin()
        })
        .collect()
}

const HTTP_CHECK: &str = "    interval: 200ms\n    timeout: 500ms\n    unhealthyThreshold: 2\n    healthyThreshold: 2\n    http: {path: /healthz}\n";

#[test]
fn an_endpoint_failing_its_http_check_gets_no_traffic_until_it_passes_again() {
    let (a, b) = (Flip::start("a"), Flip::start("b"));
    let gw = gateway(&[a.addr, b.addr], HTTP_CHECK);
    assert_eq!(healthy(&gw), 2.0);
    let both = answered_by(&gw, 10);
    assert!(
        both.contains(&"a".into()) && both.contains(&"b".into()),
        "{both:?}"
    );

    b.set_healthy(false);
    eventually(Duration::from_secs(5), "b marked unhealthy", || {
        healthy(&gw) == 1.0
    });
    let served_by_b = b.served();
    let origins = answered_by(&gw, 40);
    assert!(origins.iter().all(|o| o == "a"), "{origins:?}");
    assert_eq!(b.served(), served_by_b, "b got requests while unhealthy");
    let log = gw.log();
    let down = format!("endpoint {} of cluster {CLUSTER} becomes unhealthy", b.addr);
    assert!(log.contains(&down), "no `{down}` in:\n{log}");

    b.set_healthy(true);
    eventually(Duration::from_secs(5), "b healthy again", || {
        healthy(&gw) == 2.0
    });
    let both = answered_by(&gw, 10);
    assert!(both.contains(&"b".into()), "{both:?}");
    let up = format!("endpoint {} of cluster {CLUSTER} becomes healthy", b.addr);
    assert!(gw.log().contains(&up), "no `{up}` in the log");
}

#[test]
fn a_tcp_check_takes_a_dead_endpoint_out_and_no_request_tries_it() {
    let (a, mut b) = (Flip::start("a"), Flip::start("b"));
    let gw = gateway(
        &[a.addr, b.addr],
        "    interval: 200ms\n    unhealthyThreshold: 2\n    tcp: {}\n",
    );
    assert_eq!(healthy(&gw), 2.0);

    b.stop();
    eventually(Duration::from_secs(5), "b marked unhealthy", || {
        healthy(&gw) == 1.0
    });
    // Not even tried: no connect failure to retry.
    let retried = retries(&gw);
    let origins = answered_by(&gw, 40);
    assert!(origins.iter().all(|o| o == "a"), "{origins:?}");
    assert_eq!(retries(&gw), retried, "the dead endpoint was tried");
}

#[test]
fn with_every_endpoint_unhealthy_the_cluster_answers_503_without_trying_one() {
    let (a, b) = (Flip::start("a"), Flip::start("b"));
    let gw = gateway(&[a.addr, b.addr], HTTP_CHECK);
    a.set_healthy(false);
    b.set_healthy(false);
    eventually(Duration::from_secs(5), "both marked unhealthy", || {
        healthy(&gw) == 0.0
    });
    assert_eq!(
        gw.metric(&format!(
            "claimgate_upstream_endpoints{{cluster=\"{CLUSTER}\"}}"
        )),
        2.0
    );
    let served = a.served() + b.served();
    for _ in 0..5 {
        let reply = get(gw.port, "/anything", &[]);
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body, "no healthy upstream");
    }
    assert_eq!(a.served() + b.served(), served, "an endpoint was tried");

    a.set_healthy(true);
    eventually(Duration::from_secs(5), "a back", || healthy(&gw) == 1.0);
    assert!(answered_by(&gw, 5).iter().all(|o| o == "a"));
}

#[test]
fn a_reload_that_keeps_the_check_keeps_what_it_found() {
    let (a, mut b) = (Flip::start("a"), Flip::start("b"));
    // No http or tcp: a TCP check. Three failures in a row at 300 ms: a
    // cluster that forgot would count b healthy for over half a second.
    let gw = gateway(
        &[a.addr, b.addr],
        "    interval: 300ms\n    unhealthyThreshold: 3\n",
    );
    b.stop();
    eventually(Duration::from_secs(5), "b marked unhealthy", || {
        healthy(&gw) == 1.0
    });

    let routes = routes_everything_to("pool").replace("- route:", "- name: everything\n    route:");
    std::fs::write(gw.config_dir().join("routes.yaml"), routes).unwrap();
    gw.signal("HUP");
    eventually(Duration::from_secs(5), "the reload", || {
        gw.metric("claimgate_config_generation") == 2.0
    });
    assert_eq!(healthy(&gw), 1.0, "the reload forgot that b is down");
    let retried = retries(&gw);
    let origins = answered_by(&gw, 20);
    assert!(origins.iter().all(|o| o == "a"), "{origins:?}");
    assert_eq!(retries(&gw), retried, "the dead endpoint was tried");
}

#[test]
fn check_refuses_bad_health_check_fields_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let write = |settings: &str| {
        std::fs::write(dir.path().join("gateway.yaml"), gateway_yaml(8080)).unwrap();
        std::fs::write(
            dir.path().join("pool.yaml"),
            service_entry_endpoints("pool", &["127.0.0.1:9000".parse().unwrap()]),
        )
        .unwrap();
        std::fs::write(dir.path().join("routes.yaml"), routes_everything_to("pool")).unwrap();
        std::fs::write(
            dir.path().join("settings.yaml"),
            settings_yaml(15000, settings),
        )
        .unwrap();
        check(Path::new(dir.path()))
    };

    // The fields of each entry.
    let (code, _, err) = write(
        "  healthChecks:\n\
         \x20 - {host: pool, namespace: foo, interval: soon}\n\
         \x20 - {host: pool, namespace: foo, interval: 0s, unhealthyThreshold: 0}\n\
         \x20 - {host: pool, namespace: foo, http: {path: healthz}, tcp: {}}\n\
         \x20 - {host: pool, namespace: foo, http: {path: /h, expectedStatuses: [{start: 300, end: 200}]}}\n",
    );
    assert_eq!(code, Some(1), "{err}");
    for path in [
        "spec.healthChecks[0].interval: `soon`",
        "spec.healthChecks[1].interval: must be more than zero",
        "spec.healthChecks[1].unhealthyThreshold: must be at least 1",
        "spec.healthChecks[2]: http and tcp exclude each other",
        "spec.healthChecks[2].http.path: `healthz` is not a path",
        "spec.healthChecks[3].http.expectedStatuses[0]",
    ] {
        assert!(err.contains(path), "`{path}` missing in:\n{err}");
    }

    // What they name.
    let (code, _, err) = write(
        "  healthChecks:\n\
         \x20 - {host: nowhere, namespace: foo}\n\
         \x20 - {host: pool.foo.svc.cluster.local, port: 9}\n\
         \x20 - {host: pool, namespace: foo, tcp: {}}\n\
         \x20 - {host: pool.foo.svc.cluster.local, port: 8000}\n",
    );
    assert_eq!(code, Some(1), "{err}");
    for path in [
        "spec.healthChecks[0].host: no ServiceEntry defines host `nowhere.foo.svc.cluster.local`",
        "spec.healthChecks[1].port: ServiceEntry",
        "spec.healthChecks[3]: port 8000 of `pool.foo.svc.cluster.local` is already checked by spec.healthChecks[2]",
    ] {
        assert!(err.contains(path), "`{path}` missing in:\n{err}");
    }

    // A valid one passes.
    let (code, _, err) = write(
        "  healthChecks:\n  - {host: pool, namespace: foo, http: {path: /healthz, expectedStatuses: [{start: 200, end: 300}]}}\n",
    );
    assert_eq!(code, Some(0), "{err}");
}
