//! Hot reload: on SIGHUP, or when the config path changes (polled, and
//! debounced so that an editor's save-rename-write is one reload), load and
//! compile a whole new snapshot off the hot path and swap it in with one
//! `ArcSwap` store. A request in flight keeps the snapshot it started with.
//! An invalid config changes nothing: the error is logged and counted.
//!
//! What a reload cannot change (listeners bound at start, process settings)
//! is reported as pending until the next restart; removed listeners keep
//! serving their last routes until then.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::compile::{compile, settings, Settings, Shared};
use crate::config::{self, ConfigErrors};
use crate::snapshot::Snapshot;

/// How often the config path is looked at, and how long it must stay
/// unchanged before it is loaded.
const POLL: Duration = Duration::from_millis(250);
const SETTLE: Duration = Duration::from_millis(200);

pub struct Reloader {
    path: PathBuf,
    shared: Arc<Shared>,
    state: Arc<ArcSwap<Snapshot>>,
    /// Settings and listeners in force since start.
    started_settings: Settings,
    started_listeners: Vec<String>,
    generation: AtomicU64,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        shared: Arc<Shared>,
        state: Arc<ArcSwap<Snapshot>>,
        started: Settings,
    ) -> Reloader {
        let started_listeners = state.load().listener_addrs();
        Reloader {
            path,
            shared,
            state,
            started_settings: started,
            started_listeners,
            generation: AtomicU64::new(1),
        }
    }

    /// The config files, and the certificate and key files the
    /// configuration in force reads.
    fn fingerprint(&self) -> u64 {
        fingerprint(&self.path) ^ self.state.load().tls.fingerprint()
    }

    /// Loads, compiles and swaps in the config; on error nothing changes.
    pub fn reload(&self, trigger: &str) -> Result<u64, ConfigErrors> {
        let metrics = crate::metrics::get();
        let result = self.build();
        match result {
            Ok(mut snapshot) => {
                let generation = self.generation.load(Ordering::SeqCst) + 1;
                snapshot.provenance.generation = generation;
                self.state.store(Arc::new(snapshot));
                self.generation.store(generation, Ordering::SeqCst);
                metrics.config_reloads.with_label_values(&["ok"]).inc();
                metrics
                    .config_generation
                    .set(i64::try_from(generation).unwrap_or(i64::MAX));
                metrics.config_last_success.set(unix_now());
                tracing::info!(trigger, generation, "configuration reloaded");
                Ok(generation)
            }
            Err(errors) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                for error in &errors.0 {
                    tracing::error!(trigger, %error, "configuration not reloaded; the previous one stays in force");
                }
                Err(errors)
            }
        }
    }

    fn build(&self) -> Result<Snapshot, ConfigErrors> {
        let config = config::load(&self.path)?;
        let settings = settings(&config)?;
        let mut snapshot = compile(&config, &self.shared)?;
        let mut pending = Vec::new();

        let now = snapshot.listener_addrs();
        let added: Vec<&String> = now
            .iter()
            .filter(|a| !self.started_listeners.contains(a))
            .collect();
        let removed: Vec<&String> = self
            .started_listeners
            .iter()
            .filter(|a| !now.contains(a))
            .collect();
        if !added.is_empty() {
            pending.push(format!("new listeners {added:?} (not bound until restart)"));
        }
        if !removed.is_empty() {
            pending.push(format!(
                "removed listeners {removed:?} (serving their last routes until restart)"
            ));
            let current = self.state.load();
            for addr in removed {
                if let Some(table) = current.listeners.get(addr) {
                    snapshot.listeners.insert(addr.clone(), table.clone());
                }
            }
        }
        pending.extend(crate::tls::carry_over(
            &self.state.load(),
            &mut snapshot,
            &self.started_listeners,
        ));
        let old = &self.started_settings;
        let restart_only = [
            ("admin", old.admin != settings.admin),
            ("threads", old.threads != settings.threads),
            (
                "jwtCacheSize",
                old.jwt_cache_size != settings.jwt_cache_size,
            ),
            (
                "jwksRefreshInterval",
                old.jwks.refresh != settings.jwks.refresh,
            ),
            (
                "jwksRefetchCooldown",
                old.jwks.refetch_cooldown != settings.jwks.refetch_cooldown,
            ),
            (
                "jwksCacheDir",
                old.jwks.cache_dir != settings.jwks.cache_dir,
            ),
            ("jwksCaFile", old.jwks.ca_file != settings.jwks.ca_file),
            ("drainPeriod", old.drain_seconds != settings.drain_seconds),
            ("accessLog", old.access_log != settings.access_log),
            ("dnsRefreshRate", old.dns_refresh != settings.dns_refresh),
            (
                "upgradeSocket",
                old.upgrade_socket != settings.upgrade_socket,
            ),
        ];
        for (field, changed) in restart_only {
            if changed {
                pending.push(format!("Settings.{field} (takes effect at restart)"));
            }
        }
        for change in &pending {
            tracing::warn!(change = %change, "pending until the next restart");
        }
        crate::metrics::get()
            .config_pending_restart
            .set(i64::from(!pending.is_empty()));
        snapshot.provenance.pending_restart = pending;
        Ok(snapshot)
    }
}

/// A cheap fingerprint of every config file: names, sizes, times, contents.
fn fingerprint(path: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    let mut files: Vec<PathBuf> = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default(),
        Ok(_) => vec![path.to_path_buf()],
        Err(_) => Vec::new(),
    };
    files.sort();
    for file in files {
        file.hash(&mut hasher);
        if let Ok(bytes) = std::fs::read(&file) {
            bytes.hash(&mut hasher);
        }
    }
    hasher.finish()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::error!(%error, "cannot handle SIGHUP; reload by editing the config");
                None
            }
        };
        let mut seen = self.fingerprint();
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => {
                    let _ = self.reload("SIGHUP");
                    seen = self.fingerprint();
                }
                _ = tick.tick() => {
                    let now = self.fingerprint();
                    if now != seen {
                        // Let a save-rename-write settle into one change.
                        tokio::time::sleep(SETTLE).await;
                        let settled = self.fingerprint();
                        if settled == now {
                            seen = settled;
                            let _ = self.reload("file change");
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
