//! A JWKS server the test controls: what it answers (a key set, an HTTP
//! error, garbage, an oversized body, a slow drip), over HTTP or HTTPS, on
//! a port it can leave and come back to, counting every request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

#[derive(Debug, Clone)]
pub enum Behavior {
    /// 200 with this body.
    Serve(String),
    /// This status, empty body.
    Status(u16),
    /// 200 with bytes that are not JSON.
    Garbage,
    /// 200 with a body over the gateway's 1 MiB limit.
    Oversize,
    /// 200 with this body, one byte every `Duration`.
    Drip(Duration, String),
}

struct Shared {
    behavior: Mutex<Behavior>,
    hits: AtomicUsize,
}

pub struct JwksServer {
    pub addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JwksServer {
    /// Serves on an ephemeral port.
    pub fn start(behavior: Behavior, tls: bool) -> JwksServer {
        JwksServer::start_on(0, behavior, tls)
    }

    /// Serves on `port` (0: any free port).
    pub fn start_on(port: u16, behavior: Behavior, tls: bool) -> JwksServer {
        let shared = Arc::new(Shared {
            behavior: Mutex::new(behavior),
            hits: AtomicUsize::new(0),
        });
        JwksServer::serve(port, shared, tls)
    }

    fn serve(port: u16, shared: Arc<Shared>, tls: bool) -> JwksServer {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the JWKS server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let acceptor = tls.then(tls_acceptor);
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let state = state.clone();
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            match acceptor {
                                Some(acceptor) => {
                                    if let Ok(stream) = acceptor.accept(stream).await {
                                        answer(stream, &state).await;
                                    }
                                }
                                None => answer(stream, &state).await,
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        JwksServer {
            addr,
            tls,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/jwks.json", self.addr)
    }

    pub fn set(&self, behavior: Behavior) {
        *self.shared.behavior.lock().unwrap() = behavior;
    }

    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Closes the port (connections are refused until `restart`).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Listens again on the same port, with the same behavior and counter.
    pub fn restart(&mut self) {
        self.stop();
        let again = JwksServer::serve(self.addr.port(), self.shared.clone(), self.tls);
        *self = again;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(super::fixture("tls/server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(super::fixture("tls/server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: &Shared) {
    // Read the request head; the body (if any) is ignored.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let behavior = state.behavior.lock().unwrap().clone();
    let ok = |len: usize| {
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match behavior {
        Behavior::Serve(body) => {
            let _ = stream
                .write_all(format!("{}{body}", ok(body.len())).as_bytes())
                .await;
        }
        Behavior::Status(code) => {
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 {code} Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
        }
        Behavior::Garbage => {
            let body = "<html>not a key set</html>";
            let _ = stream
                .write_all(format!("{}{body}", ok(body.len())).as_bytes())
                .await;
        }
        Behavior::Oversize => {
            let body = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(2 << 20));
            let _ = stream
                .write_all(format!("{}{body}", ok(body.len())).as_bytes())
                .await;
        }
        Behavior::Drip(every, body) => {
            if stream.write_all(ok(body.len()).as_bytes()).await.is_err() {
                return;
            }
            for byte in body.bytes() {
                tokio::time::sleep(every).await;
                if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}
