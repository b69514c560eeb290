//! Assembling the process: one proxy service per listening address, the
//! admin listener and the background services, on one Pingora server.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::compile::{compile, settings, Shared};
use crate::config::{Config, ConfigErrors};
use crate::jwks::JwksRefresher;
use crate::proxy::Gateway;
use crate::reload::Reloader;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot start the server: {0}")]
    Server(String),
}

/// Compiles `config` and serves it until the process is told to stop.
/// With `path`, the configuration reloads on SIGHUP and when it changes.
pub fn run(config: Config, path: Option<std::path::PathBuf>) -> Result<(), StartError> {
    let settings = settings(&config)?;
    let shared = Arc::new(Shared::new(&settings).map_err(|e| {
        let at = config.settings.as_ref().map(|s| s.source.clone());
        ConfigErrors(vec![crate::config::ConfigError {
            source: at,
            path: "spec.jwksCaFile".into(),
            message: e,
        }])
    })?);
    let snapshot = compile(&config, &shared)?;
    let listeners = snapshot.listener_addrs();
    let state = Arc::new(ArcSwap::from_pointee(snapshot));

    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(5),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    for addr in &listeners {
        let gateway = Gateway::new(addr.clone(), state.clone());
        let mut service = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            gateway,
            &format!("listener {addr}"),
        );
        service.add_tcp(addr);
        server.add_service(service);
    }

    let mut admin = Service::new(
        "admin".to_string(),
        Admin::new(shared.jwks.clone(), shared.tokens.clone()),
    );
    admin.add_tcp(&settings.admin.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

    server.add_service(background_service(
        "jwks refresh",
        JwksRefresher::new(shared.jwks.clone()),
    ));

    if let Some(path) = path {
        let reloader = Reloader::new(path, shared.clone(), state.clone(), settings.clone());
        server.add_service(background_service("config reload", reloader));
    }

    tracing::info!(listeners = ?listeners, admin = %settings.admin, "claimgate serving");
    server.run_forever()
}
