//! Hot reload under load: 50 rewrites of the route table while requests
//! flow on keep-alive and new connections lose nothing, each new table is
//! in force within a second, and an invalid config changes nothing.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// Requests whose token has `groups: group1` go to `target`.
fn routes(target: &str) -> String {
    group1_routes_to(&format!("{target}.foo.svc.cluster.local"))
}

/// Writes `text` as `name` in `dir` the way editors and config tools do:
/// to a temporary file, then renamed over the old one.
fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// (status, origin that answered) of a GET with the token on `client`.
fn ask(client: &mut Client, token: &str) -> Option<(u16, String)> {
    let reply = client.get("/anything", &[&bearer(token)])?;
    let origin = serde_json::from_str::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["origin"].as_str().map(str::to_string))
        .unwrap_or_default();
    Some((reply.status, origin))
}

#[test]
fn fifty_reloads_under_load_lose_no_request() {
    let jwks = jwks_server(&test_jwks());
    let port = free_port();
    let files = vec![
        ("gateway.yaml".to_string(), gateway_yaml(port)),
        (
            "authn.yaml".to_string(),
            test_request_authentication(&format!("http://{jwks}/jwks.json"), ""),
        ),
        (
            "alpha.yaml".to_string(),
            service_entry_yaml("alpha", "alpha.foo.svc.cluster.local", echo_origin("alpha")),
        ),
        (
            "beta.yaml".to_string(),
            service_entry_yaml("beta", "beta.foo.svc.cluster.local", echo_origin("beta")),
        ),
        ("routes.yaml".to_string(), routes("alpha")),
    ];
    let gw = Gateway::start(port, &files);
    let dir = gw.config_dir();
    let token = rs256(claims(json!({"groups": ["group1"]})));

    // The load: two keep-alive clients and two that open a connection per request.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let latest = Arc::new(Mutex::new(String::new()));
    let mut workers = Vec::new();
    for keep_alive in [true, true, false, false] {
        let (stop, failures, sent, latest, token) = (
            stop.clone(),
            failures.clone(),
            sent.clone(),
            latest.clone(),
            token.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() || !keep_alive {
                    client = Client::connect(port);
                }
                let answer = client.as_mut().and_then(|c| ask(c, &token));
                sent.fetch_add(1, Ordering::Relaxed);
                match answer {
                    Some((200, origin)) => *latest.lock().unwrap() = origin,
                    other => {
                        failures.lock().unwrap().push(format!("{other:?}"));
                        client = None;
                    }
                }
            }
        }));
    }

    let answered_by = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if let Some((200, origin)) = Client::connect(port).and_then(|mut c| ask(&mut c, &token))
            {
                if origin == want {
                    return true;
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut slow = Vec::new();
    for i in 0..50 {
        let target = if i % 2 == 0 { "beta" } else { "alpha" };
        replace(&dir, "routes.yaml", &routes(target));
        let written = Instant::now();
        // Within a second of the reload taking effect: reloads are polled every
        // 250 ms and settle for 200 ms, so allow that plus the second.
        let deadline = written + Duration::from_millis(1_500);
        while Instant::now() < deadline && !answered_by(target) {}
        if !answered_by(target) {
            slow.push(i);
        }
        if i == 25 {
            // A broken config mid-way: nothing changes, the error is counted.
            let errors = gw.metric("claimgate_config_reloads_total{result=\"error\"}");
            replace(&dir, "routes.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: claims}\nspec: {hosts: [\"*\"], gateways: [httpbin-gateway], http: [{bogus: 1}]}\n");
            eventually(Duration::from_secs(5), "the error counted", || {
                gw.metric("claimgate_config_reloads_total{result=\"error\"}") > errors
            });
            assert!(answered_by(target), "a broken config changed the routes");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        sent.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)]
    );
    assert!(
        slow.is_empty(),
        "reloads {slow:?} were not in force within a second"
    );
    assert!(
        sent.load(Ordering::Relaxed) > 1000,
        "only {} requests sent",
        sent.load(Ordering::Relaxed)
    );
    assert!(gw.metric("claimgate_config_reloads_total{result=\"ok\"}") >= 50.0);
    assert_eq!(
        gw.metric("claimgate_config_generation"),
        gw.metric("claimgate_config_reloads_total{result=\"ok\"}") + 1.0
    );
}

#[test]
fn sighup_reloads_and_a_listener_change_is_pending() {
    let port = free_port();
    let files = vec![
        ("gateway.yaml".to_string(), gateway_yaml(port)),
        (
            "alpha.yaml".to_string(),
            service_entry_yaml("alpha", "alpha.foo.svc.cluster.local", echo_origin("alpha")),
        ),
        (
            "beta.yaml".to_string(),
            service_entry_yaml("beta", "beta.foo.svc.cluster.local", echo_origin("beta")),
        ),
        (
            "routes.yaml".to_string(),
            routes("alpha").replace(
                "- headers:\n        \"@request.auth.claims.groups\": {exact: group1}",
                "- uri: {prefix: /}",
            ),
        ),
    ];
    let gw = Gateway::start(port, &files);
    let origin = || {
        get(gw.port, "/x", &[]).echo()["origin"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(origin(), "alpha");

    // A new listener cannot be bound by a reload: it is reported as pending,
    // and the rest of the change applies.
    let other_port = free_port();
    let dir = gw.config_dir();
    let gateway = gateway_yaml(port) + &format!("  - port: {{number: {other_port}, name: http2, protocol: HTTP}}\n    bind: 127.0.0.1\n    hosts: [\"*\"]\n");
    std::fs::write(dir.join("gateway.yaml"), gateway).unwrap();
    std::fs::write(
        dir.join("routes.yaml"),
        files[3].1.replace("host: alpha", "host: beta"),
    )
    .unwrap();
    gw.signal("HUP");
    eventually(Duration::from_secs(5), "reloaded on SIGHUP", || {
        origin() == "beta"
    });
    assert_eq!(gw.metric("claimgate_config_pending_restart"), 1.0);
    assert!(std::net::TcpStream::connect(("127.0.0.1", other_port)).is_err());
    let log = gw.log();
    assert!(log.contains("pending until the next restart"), "{log}");
    assert!(log.contains("SIGHUP"), "{log}");
}
