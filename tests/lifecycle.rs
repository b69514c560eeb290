//! Life on an edge host: SIGTERM drains what was accepted and exits 0, and
//! a binary upgrade (`run --upgrade` + SIGQUIT, or SIGUSR2) takes the
//! listening sockets over while requests flow, losing none.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

fn catch_all(target: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: all, namespace: foo}}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - route: [{{destination: {{host: {target}}}}}]
"#
    )
}

#[test]
fn sigterm_finishes_every_accepted_request_and_exits_0() {
    let port = free_port();
    let origin = echo_origin("slow");
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        (
            "origin.yaml",
            service_entry_yaml("slow", "slow.foo.svc.cluster.local", origin),
        ),
        ("routes.yaml", catch_all("slow.foo.svc.cluster.local")),
    ];
    let mut gw = Gateway::start_with_settings(port, &files, "  drainPeriod: 3s\n");

    // A keep-alive connection that is idle when the signal comes.
    let mut idle = Client::connect(port).unwrap();
    assert_eq!(idle.get("/x", &[]).unwrap().status, 200);

    // Twenty requests in flight, each taking 1.5 s at the origin.
    let in_flight: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(port)?;
                client.get("/delay/1.5", &[]).map(|r| (r.status, r.body))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    gw.signal("TERM");

    // Every request that was accepted completes, with the upstream's answer.
    for request in in_flight {
        let (status, body) = request
            .join()
            .unwrap()
            .expect("a request in flight was lost");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"origin\":\"slow\""), "{body}");
    }
    // The idle keep-alive connection was closed cleanly (FIN, no partial
    // answer), so a client sends its next request again on a new one.
    assert!(idle.get("/x", &[]).is_none());
    assert!(idle.stale, "the idle connection was not closed cleanly");

    // No new connection is accepted once draining.
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting while draining"
    );

    // Exit 0 within the drain period (3 s) and the runtime shutdown (2 s).
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("still running 10 s after SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", gw.log());
    let took = signalled.elapsed();
    assert!(
        took <= Duration::from_secs(6),
        "exit took {took:?} after SIGTERM"
    );
}

/// Kills, when dropped, every process started by an upgrade of the
/// gateway on `config`: a failed assertion must not leave one running.
struct KillUpgrades(String);

impl Drop for KillUpgrades {
    fn drop(&mut self) {
        for pid in pids_running(&self.0) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("--upgrade") {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// The sockets and a request stream shared by the two upgrade tests.
struct Upgrade {
    gw: Gateway,
    socket: std::path::PathBuf,
    load: Load,
    _sockets: tempfile::TempDir,
}

/// A gateway validating tokens against a remote key set, under load.
fn start_under_load() -> Upgrade {
    let jwks = jwks_server(&test_jwks());
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("upgrade.sock");
    let port = free_port();
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        (
            "authn.yaml",
            test_request_authentication(&format!("http://{jwks}/jwks.json"), ""),
        ),
        (
            "origin.yaml",
            service_entry_yaml("alpha", "alpha.foo.svc.cluster.local", echo_origin("alpha")),
        ),
        (
            "routes.yaml",
            group1_routes_to("alpha.foo.svc.cluster.local"),
        ),
    ];
    let settings = format!("  drainPeriod: 1s\n  upgradeSocket: {}\n", socket.display());
    let gw = Gateway::start_with_settings(port, &files, &settings);
    let token = rs256(claims(json!({"groups": ["group1"]})));
    let load = Load::start(port, "/anything", &bearer(&token));
    std::thread::sleep(Duration::from_millis(300));
    Upgrade {
        gw,
        socket,
        load,
        _sockets: sockets,
    }
}

impl Upgrade {
    /// The old process exits 0; the stream goes on against the new one for
    /// a second; not one request failed. Returns the old process's log.
    fn old_exits_and_nothing_is_lost(mut self) -> String {
        let status = self
            .gw
            .wait_exit(Duration::from_secs(20))
            .expect("the old process did not exit");
        assert!(status.success(), "old process: {status}\n{}", self.gw.log());
        let before = self.load.sent();
        std::thread::sleep(Duration::from_secs(1));
        let (sent, failures) = self.load.stop();
        assert!(
            sent - before > 100,
            "only {} requests in the second after the old process left",
            sent - before
        );
        assert!(
            failures.is_empty(),
            "{} of {sent} requests failed: {:?}\nold:\n{}\nnew:\n{}",
            failures.len(),
            &failures[..failures.len().min(5)],
            self.gw.log(),
            self.gw.upgrade_log()
        );
        // The admin listener moved too: the new process answers it.
        assert_eq!(self.gw.ready_status(), Some(200));
        self.gw.log()
    }
}

#[test]
fn run_upgrade_and_sigquit_take_the_sockets_over_losing_nothing() {
    let up = start_under_load();
    let _cleanup = KillUpgrades(up.gw.config_dir().display().to_string());
    let mut new = up.gw.spawn_upgrade();
    eventually(
        Duration::from_secs(30),
        "the new process asks for the sockets",
        || up.socket.exists(),
    );
    up.gw.signal("QUIT");
    let log = up.old_exits_and_nothing_is_lost();
    assert!(new.try_wait().unwrap().is_none(), "the new process exited");
    assert!(log.contains("listener sockets sent"), "{log}");
    let _ = new.kill();
    let _ = new.wait();
}

/// The processes whose command line mentions `needle`.
fn pids_running(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[test]
fn sigusr2_upgrades_in_place_losing_nothing() {
    let up = start_under_load();
    let config = up.gw.config_dir().display().to_string();
    let _cleanup = KillUpgrades(config.clone());
    let old = up.gw.pid();
    up.gw.signal("USR2");
    eventually(
        Duration::from_secs(30),
        "the old process hands over",
        || up.gw.log().contains("handing the sockets over"),
    );
    let gw_log = up.old_exits_and_nothing_is_lost();
    let new: Vec<u32> = pids_running(&config)
        .into_iter()
        .filter(|pid| *pid != old)
        .collect();
    assert_eq!(new.len(), 1, "{gw_log}");
}

#[test]
fn systemd_hears_ready_once_the_listener_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let port = free_port();
    let files = vec![
        ("gateway.yaml", gateway_yaml(port)),
        (
            "origin.yaml",
            service_entry_yaml("alpha", "alpha.foo.svc.cluster.local", echo_origin("alpha")),
        ),
        ("routes.yaml", catch_all("alpha.foo.svc.cluster.local")),
    ];
    let gw = Gateway::start_notifying(port, &files, &socket);
    let mut buf = [0u8; 256];
    let n = systemd.recv(&mut buf).expect("no notification");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.starts_with("READY=1\n"), "{message}");
    assert!(
        message.contains(&format!("MAINPID={}\n", gw.pid())),
        "{message}"
    );
    // By then the listener answers.
    assert_eq!(get(port, "/x", &[]).status, 200);
}
