//! Assembling the process: one proxy service per listening address, the
//! admin listener and the background services, on one Pingora server.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::sync::broadcast::error::RecvError;

use crate::access_log::{AccessLog, ReopenOnSignal};
use crate::admin::Admin;
use crate::compile::{compile, settings, Shared};
use crate::config::{Config, ConfigErrors};
use crate::jwks::JwksRefresher;
use crate::lifecycle::{SystemdNotify, UpgradeOnSignal};
use crate::proxy::{Counted, Gateway};
use crate::reload::Reloader;
use crate::upstream::{DnsRefresher, HealthChecker};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot start the server: {0}")]
    Server(String),
}

/// How a process starts.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// The config path: reload on SIGHUP and when it changes.
    pub path: Option<PathBuf>,
    /// Take the listening sockets over from a running process (binary
    /// upgrade) instead of binding them.
    pub upgrade: bool,
}

/// Compiles `config` and serves it until the process is told to stop.
pub fn run(config: Config, options: RunOptions) -> Result<(), StartError> {
    let settings = settings(&config)?;
    let shared = Arc::new(Shared::new(&settings).map_err(|e| {
        let at = config.settings.as_ref().map(|s| s.source.clone());
        ConfigErrors(vec![crate::config::ConfigError {
            source: at,
            path: "spec.jwksCaFile".into(),
            message: e,
        }])
    })?);
    let mut snapshot = compile(&config, &shared)?;
    snapshot.provenance.generation = 1;
    start_metrics();
    let listeners = snapshot.listener_addrs();
    let state = Arc::new(ArcSwap::from_pointee(snapshot));
    let admin_addr = settings.admin.to_string();
    if !options.upgrade {
        // Pingora panics on a port it cannot bind; say which, and why.
        for addr in listeners.iter().chain(std::iter::once(&admin_addr)) {
            std::net::TcpListener::bind(addr)
                .map_err(|e| StartError::Server(format!("cannot listen on {addr}: {e}")))?;
        }
    }

    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.drain_seconds),
        graceful_shutdown_timeout_seconds: Some(2),
        upgrade_sock: settings.upgrade_socket.to_string_lossy().into_owned(),
        // Attempts per request: a route's retries, plus the first attempt
        // and pingora's own retries on stale pooled connections.
        max_retries: crate::routing::MAX_RETRIES as usize + 14,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let access_log = AccessLog::start(&settings.access_log).map_err(|e| {
        StartError::Server(format!(
            "cannot open the access log {:?}: {e}",
            settings.access_log
        ))
    })?;
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let handed_over = watch_hand_over(&server);

    // Start order: the key sets and the DNS names first (resolved, or
    // given up on), then the sockets (bound, or taken over from the old
    // process), then the listeners. An upgrade therefore takes the sockets only once it can
    // validate tokens, while the old process goes on serving.
    let keys = server.add_service(background_service(
        "jwks refresh",
        JwksRefresher::new(shared.jwks.clone()),
    ));
    let endpoints = server.add_service(background_service(
        "dns",
        DnsRefresher {
            state: state.clone(),
            every: settings.dns_refresh,
        },
    ));
    // Endpoints start healthy: the checks need not hold the listeners back.
    server.add_service(background_service(
        "health checks",
        HealthChecker {
            state: state.clone(),
        },
    ));
    let sockets = server.bootstrap_as_a_service();
    sockets.add_dependency(&keys);
    sockets.add_dependency(&endpoints);

    let mut serving = Vec::new();
    for addr in &listeners {
        let gateway = Gateway::new(
            addr.clone(),
            state.clone(),
            handed_over.clone(),
            access_log.clone(),
        );
        let proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
        // Read per connection: a reload applies to the connections after it.
        let edge = state.clone();
        let limits = move || {
            let edge = &edge.load().edge;
            crate::proxy::HeadLimits {
                max_head_bytes: edge.max_head_bytes,
                timeout: edge.headers_timeout,
            }
        };
        let mut service = Service::new(format!("listener {addr}"), Counted::new(proxy, limits));
        match crate::tls::listener_settings(addr, &state) {
            Some(tls) => service.add_tls_with_settings(addr, None, tls),
            None => service.add_tcp(addr),
        }
        let handle = server.add_service(service);
        handle.add_dependency(&sockets);
        serving.push(handle);
    }

    let mut admin = Service::new(
        "admin".to_string(),
        Admin::new(shared.jwks.clone(), shared.tokens.clone(), state.clone()),
    );
    admin.add_tcp(&admin_addr);
    admin.threads = Some(1);
    let handle = server.add_service(admin);
    handle.add_dependency(&sockets);
    serving.push(handle);

    let notify = server.add_service(background_service(
        "systemd notify",
        SystemdNotify {
            listeners: listeners.clone(),
        },
    ));
    notify.add_dependencies(&serving);

    if access_log.is_on() {
        server.add_service(background_service(
            "access log reopen",
            ReopenOnSignal(access_log),
        ));
    }

    if let Some(upgrade) = UpgradeOnSignal::new(settings.upgrade_socket.clone()) {
        server.add_service(background_service("upgrade on SIGUSR2", upgrade));
    }

    match options.path {
        Some(path) => {
            let reloader = Reloader::new(path, shared.clone(), state.clone(), settings.clone());
            server.add_service(background_service("config reload", reloader));
        }
        None => {
            server.add_service(background_service("SIGHUP", IgnoreHangup));
        }
    }

    tracing::info!(listeners = ?listeners, admin = %settings.admin, upgrade = options.upgrade, "claimgate starting");
    server.run_forever()
}

/// A flag raised when Pingora starts handing the listening sockets to a
/// new process (SIGQUIT). Pingora keeps serving for five seconds after the
/// hand-over and then closes idle keep-alive connections; a client sending
/// on one at that instant sees a reset. Closing each connection after its
/// next answer instead moves busy clients over in those five seconds.
fn watch_hand_over(server: &Server) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let mut phases = server.watch_execution_phase();
    let raised = flag.clone();
    let watcher = std::thread::Builder::new()
        .name("hand-over watch".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                    raised.store(true, Ordering::Relaxed);
                    tracing::info!("sockets handed over: closing each connection after its answer");
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        });
    if let Err(error) = watcher {
        tracing::warn!(%error, "cannot watch for the socket hand-over");
    }
    flag
}

/// The first load counts as generation 1, and every counter whose label
/// values are known starts at 0, so `increase()` sees its first event.
fn start_metrics() {
    let metrics = crate::metrics::get();
    metrics.config_generation.set(1);
    metrics.config_last_success.set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    for result in ["ok", "error"] {
        metrics.config_reloads.with_label_values(&[result]);
    }
    for reason in crate::proxy::REASONS {
        metrics.rejections.with_label_values(&[reason]);
    }
}

/// Without a config path (the demo) there is nothing to reload; SIGHUP
/// is logged instead of killing the process, as it would by default.
struct IgnoreHangup;

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for IgnoreHangup {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => tracing::warn!("SIGHUP: no configuration path to reload"),
                _ = shutdown.changed() => return,
            }
        }
    }
}
