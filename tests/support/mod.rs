//! Test support: run the real `claimgate` binary on ephemeral ports, an
//! in-test origin/JWKS server, token minting with the committed test keys.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};

pub use claimgate::origin::Origin;

pub mod jwks_server;
pub mod raw_origin;

pub const ISTIO_ISSUER: &str = "testing@secure.istio.io";
pub const TEST_ISSUER: &str = "https://issuer.claimgate.test";

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

pub fn read_fixture(path: &str) -> String {
    std::fs::read_to_string(fixture(path)).expect("fixture exists")
}

/// A port that was free a moment ago.
///
/// Ports come from 16384-32767, below the kernel's ephemeral range
/// (32768-60999 on Linux), so a socket another test binds to port 0 (an
/// origin, an outgoing connection) can never take one between this call
/// and the gateway's bind. Within a test binary a counter hands each port
/// out once; test binaries run one after another, each from its own offset.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 16_384;
    const SPAN: u32 = 16_384;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "ran out of test ports");
        let port = (LOW + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ----------------------------------------------------------------- origins

/// Starts an echo origin named `name` on an ephemeral port.
pub fn echo_origin(name: &str) -> SocketAddr {
    claimgate::origin::spawn(
        "127.0.0.1:0",
        Origin {
            name: name.into(),
            jwks: None,
        },
    )
    .unwrap()
}

/// Polls `check` every 25 ms until it holds; panics after `limit`.
pub fn eventually(limit: Duration, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Starts a JWKS server (also an echo origin) serving `jwks` at `/jwks.json`.
pub fn jwks_server(jwks: &str) -> SocketAddr {
    let origin = Origin {
        name: "jwks".into(),
        jwks: Some(jwks.as_bytes().to_vec().into()),
    };
    claimgate::origin::spawn("127.0.0.1:0", origin).unwrap()
}

// ------------------------------------------------------------------ tokens

struct TestKeys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    rng: SystemRandom,
}

fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rng = SystemRandom::new();
        let rsa = std::fs::read(fixture("keys/rsa-2048.pk8")).unwrap();
        let ec = std::fs::read(fixture("keys/ec-p256.pk8")).unwrap();
        TestKeys {
            rsa: RsaKeyPair::from_pkcs8(&rsa).unwrap(),
            ec: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &ec, &rng).unwrap(),
            rng,
        }
    })
}

pub const RSA_KID: &str = "test-rsa";
pub const EC_KID: &str = "test-ec";

/// The public halves of the test keys as a JWKS.
pub fn test_jwks() -> String {
    let k = keys();
    let rsa = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.rsa.public());
    let point = ring::signature::KeyPair::public_key(&k.ec)
        .as_ref()
        .to_vec();
    json!({"keys": [
        {"kty": "RSA", "kid": RSA_KID, "alg": "RS256", "use": "sig",
         "n": URL_SAFE_NO_PAD.encode(&rsa.n), "e": URL_SAFE_NO_PAD.encode(&rsa.e)},
        {"kty": "EC", "kid": EC_KID, "crv": "P-256", "use": "sig",
         "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])},
    ]})
    .to_string()
}

fn signing_input(alg: &str, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// An RS256 token over `claims`, signed with the test RSA key.
pub fn rs256(claims: Value) -> String {
    sign_rs256(signing_input("RS256", RSA_KID, &claims))
}

/// An RS256 token over exactly this payload text (duplicate members and all).
pub fn rs256_raw(payload: &str) -> String {
    rs256_with_header(
        &json!({"alg": "RS256", "kid": RSA_KID, "typ": "JWT"}),
        payload,
    )
}

/// An RS256 signature (test RSA key) over this header and payload text.
pub fn rs256_with_header(header: &Value, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    sign_rs256(input)
}

fn sign_rs256(input: String) -> String {
    let k = keys();
    let mut sig = vec![0; k.rsa.public().modulus_len()];
    k.rsa
        .sign(&RSA_PKCS1_SHA256, &k.rng, input.as_bytes(), &mut sig)
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An ES256 token over `claims`, signed with the test EC key.
pub fn es256(claims: Value) -> String {
    let k = keys();
    let input = signing_input("ES256", EC_KID, &claims);
    let sig = k.ec.sign(&k.rng, input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Claims of a valid test token: issuer, subject, an hour to live, plus `extra`.
pub fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": TEST_ISSUER, "sub": "user-1", "iat": now(), "exp": now() + 3600});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

// ------------------------------------------------------------ config text

/// The Gateway of Istio's httpbin sample, on `port` of 127.0.0.1.
pub fn gateway_yaml(port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: httpbin-gateway
  namespace: foo
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: {port}
      name: http
      protocol: HTTP
    bind: 127.0.0.1
    hosts:
    - "*"
"#
    )
}

/// A VirtualService `foo/claims` on the httpbin Gateway: requests whose
/// token has `groups: group1` go to `host`; nothing else is routed.
pub fn group1_routes_to(host: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: claims, namespace: foo}}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - match:
    - headers:
        "@request.auth.claims.groups": {{exact: group1}}
    route: [{{destination: {{host: {host}}}}}]
"#
    )
}

/// A VirtualService `foo/all` on the httpbin Gateway sending every request
/// to `host`.
pub fn routes_everything_to(host: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: all, namespace: foo}}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - route: [{{destination: {{host: {host}}}}}]
"#
    )
}

/// A STATIC ServiceEntry for `host` in namespace `foo`, port 8000, at `addr`.
pub fn service_entry_yaml(name: &str, host: &str, addr: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: foo
spec:
  hosts:
  - {host}
  ports:
  - number: 8000
    name: http
    protocol: HTTP
    targetPort: {port}
  resolution: STATIC
  endpoints:
  - address: {ip}
"#,
        port = addr.port(),
        ip = addr.ip(),
    )
}

/// A ServiceEntry `name` (port 8000) whose endpoints are `addrs`, each
/// with its own port.
pub fn service_entry_endpoints(name: &str, addrs: &[SocketAddr]) -> String {
    let endpoints: String = addrs
        .iter()
        .map(|a| {
            format!(
                "  - address: {}\n    ports: {{http: {}}}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: foo}}\n\
         spec:\n  hosts: [{name}.foo.svc.cluster.local]\n  ports: [{{number: 8000, name: http, protocol: HTTP}}]\n\
         \x20 resolution: STATIC\n  endpoints:\n{endpoints}"
    )
}

/// The Settings document of a test gateway; `extra` adds `spec` lines.
pub fn settings_yaml(admin: u16, extra: &str) -> String {
    // A long refresh by default, so tests count fetches exactly; a test may set its own.
    let refresh = if extra.contains("jwksRefreshInterval") {
        ""
    } else {
        "  jwksRefreshInterval: 1m\n"
    };
    format!(
        "apiVersion: claimgate/v1\nkind: Settings\nmetadata:\n  name: settings\nspec:\n  admin: 127.0.0.1:{admin}\n{refresh}{extra}"
    )
}

/// A RequestAuthentication for the test issuer with keys from `jwks_uri`.
pub fn test_request_authentication(jwks_uri: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: test-jwt
  namespace: istio-system
spec:
  jwtRules:
  - issuer: "{TEST_ISSUER}"
    jwksUri: "{jwks_uri}"
{extra}"#
    )
}

// ------------------------------------------------------------- the binary

pub fn claimgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_claimgate"))
}

/// Runs `claimgate check` on `config`: (exit code, stdout, stderr).
/// Runs `claimgate explain --config CONFIG ARGS`: (exit code, stdout, stderr).
pub fn explain<S: AsRef<std::ffi::OsStr>>(
    config: &Path,
    args: &[S],
) -> (Option<i32>, String, String) {
    let out = claimgate()
        .arg("explain")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn check(config: &Path) -> (Option<i32>, String, String) {
    let out = claimgate()
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The task's RequestAuthentication, text unchanged but for `jwksUri`.
pub fn task_request_authentication(jwks_uri: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: ingress-jwt
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "{jwks_uri}"
"#
    )
}

/// The task's VirtualService (Istio's "JWT claim based routing"), unchanged;
/// `more_routes` appends `http` entries (each starting with `  - `).
pub fn task_virtual_service(more_routes: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
  namespace: foo
spec:
  hosts:
  - "*"
  gateways:
  - httpbin-gateway
  http:
  - match:
    - uri:
        prefix: /headers
      headers:
        "@request.auth.claims.groups":
          exact: group1
    route:
    - destination:
        port:
          number: 8000
        host: httpbin
{more_routes}"#
    )
}

/// A running `claimgate run`, killed on drop.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub admin: u16,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `files` (name, YAML) plus a Settings document into a fresh
    /// folder, runs the gateway on it and waits until it is ready.
    pub fn start<N: AsRef<str>>(port: u16, files: &[(N, String)]) -> Gateway {
        Gateway::start_with_settings(port, files, "")
    }

    /// `start`, with extra `Settings.spec` lines (indented two spaces).
    pub fn start_with_settings<N: AsRef<str>>(
        port: u16,
        files: &[(N, String)],
        settings: &str,
    ) -> Gateway {
        Gateway::spawn(port, files, settings, &[]).answering("/ready")
    }

    /// Starts without waiting for `/ready` (key sets may be unreachable):
    /// waits only for the listener and `/healthz`.
    pub fn start_unready<N: AsRef<str>>(
        port: u16,
        files: &[(N, String)],
        settings: &str,
    ) -> Gateway {
        Gateway::spawn(port, files, settings, &[]).answering("/healthz")
    }

    /// `start`, with `NOTIFY_SOCKET` set as systemd sets it.
    pub fn start_notifying<N: AsRef<str>>(
        port: u16,
        files: &[(N, String)],
        notify_socket: &Path,
    ) -> Gateway {
        let env = [("NOTIFY_SOCKET", notify_socket.as_os_str())];
        Gateway::spawn(port, files, "", &env).answering("/ready")
    }

    /// Waits until the admin `path` answers 200 and the listener accepts.
    fn answering(mut self, path: &str) -> Gateway {
        self.wait_until(|g| {
            raw_get(g.admin, path).map(|r| r.status) == Some(200)
                && TcpStream::connect(("127.0.0.1", g.port)).is_ok()
        });
        self
    }

    fn spawn<N: AsRef<str>>(
        port: u16,
        files: &[(N, String)],
        settings: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Gateway {
        let admin = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        for (name, text) in files {
            std::fs::write(config.join(name.as_ref()), text).unwrap();
        }
        std::fs::write(
            config.join("zz-settings.yaml"),
            settings_yaml(admin, settings),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let child = claimgate()
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Gateway {
            child,
            port,
            admin,
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    fn wait_until(&mut self, ready: impl Fn(&Gateway) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("claimgate exited with {status}:\n{}", self.log());
            }
            if ready(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "claimgate not ready in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The value of one sample in `/metrics`, given as written there up to
    /// the value, e.g. `claimgate_jwks_keys{uri="…"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let body = raw_get(self.admin, "/metrics")
            .map(|r| r.body)
            .unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
    }

    /// `GET /ready` on the admin listener.
    pub fn ready_status(&self) -> Option<u16> {
        raw_get(self.admin, "/ready").map(|r| r.status)
    }

    /// The folder the gateway reads its configuration from.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Sends a signal (`HUP`, `TERM`, …) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Starts `claimgate run --upgrade` on the same configuration; its log
    /// goes to `upgrade_log()`.
    pub fn spawn_upgrade(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("upgrade.log")).unwrap();
        claimgate()
            .arg("run")
            .arg("--config")
            .arg(self.config_dir())
            .arg("--upgrade")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn upgrade_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("upgrade.log")).unwrap_or_default()
    }

    /// Kills the process without draining, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ client

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The name of the echo origin that answered ("" when not an echo).
    pub fn origin(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["origin"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The echo origin's JSON.
    pub fn echo(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not an echo: {self:?}"))
    }
}

/// Sends a request exactly as written (any header names a client likes) on a
/// fresh connection and reads the response. `None` if the connection fails.
pub fn raw_request(port: u16, request: &str) -> Option<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `GET path` with extra header lines (`"Name: value"`), `Connection: close`.
pub fn get(port: u16, path: &str, headers: &[&str]) -> Reply {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    raw_request(port, &request).unwrap_or_else(|| panic!("no response for GET {path}"))
}

/// One keep-alive HTTP/1.1 connection, as a client library keeps one.
pub struct Client {
    reader: std::io::BufReader<TcpStream>,
    /// The server said `Connection: close`: the next request needs a new
    /// connection.
    pub closed: bool,
    /// The last request went out on a connection that had already served
    /// one, and the server had closed it cleanly (FIN) before a single byte
    /// of the answer: the idle keep-alive close of RFC 9112 §9.3.1.
    pub stale: bool,
    served: usize,
    /// What went wrong with the last request.
    pub error: String,
}

impl Client {
    pub fn connect(port: u16) -> Option<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        Some(Client {
            reader: std::io::BufReader::new(stream),
            closed: false,
            stale: false,
            served: 0,
            error: String::new(),
        })
    }

    /// `GET path` with extra header lines; `None` on any failure.
    pub fn get(&mut self, path: &str, headers: &[&str]) -> Option<Reply> {
        use std::io::BufRead;
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
        for h in headers {
            request.push_str(h);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        self.stale = false;
        let sent = self.reader.get_mut().write_all(request.as_bytes());
        let mut line = String::new();
        let read = self.reader.read_line(&mut line);
        if self.served > 0 && matches!(read, Ok(0)) {
            self.stale = true;
            self.error = "closed while idle".into();
            return None;
        }
        if let Err(e) = &sent {
            self.error = format!("write: {e}");
        }
        sent.ok()?;
        match &read {
            Ok(0) => self.error = format!("EOF after {} answers", self.served),
            Err(e) => self.error = format!("read: {e} after {} answers", self.served),
            Ok(_) => {}
        }
        read.ok()?;
        let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
        let mut length = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header).ok()?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().ok()?;
                }
                if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                    self.closed = true;
                }
                headers.push((k.to_string(), v.to_string()));
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).ok()?;
        self.served += 1;
        Some(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A steady stream of `GET path` until stopped: two clients on keep-alive
/// connections and two that open a connection per request. Anything but a
/// 200 is a failure, and so is a connection that breaks without a response,
/// even a reused one closed before the request got there (`Client::stale`):
/// a keep-alive client reconnects only when the server said
/// `Connection: close`.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, path: &str, header: &str) -> Load {
        use std::sync::atomic::Ordering;
        let load = Load {
            stop: Default::default(),
            sent: Default::default(),
            failures: Default::default(),
            workers: Vec::new(),
        };
        let mut workers = Vec::new();
        for keep_alive in [true, true, false, false] {
            let (stop, sent, failures) =
                (load.stop.clone(), load.sent.clone(), load.failures.clone());
            let (path, header) = (path.to_string(), header.to_string());
            workers.push(std::thread::spawn(move || {
                let mut client: Option<Client> = None;
                while !stop.load(Ordering::Relaxed) {
                    if !keep_alive || client.as_ref().is_none_or(|c| c.closed) {
                        client = Client::connect(port);
                    }
                    let headers: Vec<&str> = [header.as_str()]
                        .into_iter()
                        .filter(|h| !h.is_empty())
                        .collect();
                    let answer = client.as_mut().and_then(|c| c.get(&path, &headers));
                    sent.fetch_add(1, Ordering::Relaxed);
                    match answer {
                        Some(reply) if reply.status == 200 => {}
                        other => {
                            let what = match (other, &client) {
                                (Some(r), _) => format!("{} {}", r.status, r.body),
                                (None, None) => "cannot connect".to_string(),
                                (None, Some(c)) => format!("no response: {}", c.error),
                            };
                            failures.lock().unwrap().push(what);
                            client = None;
                        }
                    }
                }
            }));
        }
        Load { workers, ..load }
    }

    pub fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the clients: (requests sent, failures).
    pub fn stop(self) -> (usize, Vec<String>) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.join().unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

pub fn raw_get(port: u16, path: &str) -> Option<Reply> {
    raw_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}
