//! Remote key sets (`jwksUri`): one source per distinct URI, shared by every
//! rule that names it. Fetched at start and refreshed in the background;
//! a failed fetch keeps the last good set (stale-if-error) and retries with
//! backoff; an unknown `kid` triggers one single-flight refetch per
//! cooldown; each good set can be persisted and read back at start.
//! Requests only ever `load()` the last good set.

mod persist;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use prometheus::IntCounter;
use tokio::sync::Notify;

use crate::jwt::authn::{KeyRefetch, KeySlot};
use crate::jwt::{JwksError, KeySet};

/// Largest key set body we accept.
const MAX_BODY: usize = 1 << 20;
/// First retry after a failed fetch; doubles up to the refresh interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// How remote key sets are kept.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub refresh: Duration,
    pub refetch_cooldown: Duration,
    pub cache_dir: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            refresh: Duration::from_secs(600),
            refetch_cooldown: Duration::from_secs(10),
            cache_dir: None,
            ca_file: None,
        }
    }
}

/// Why a fetch left the previous key set in force.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("body is over {MAX_BODY} bytes")]
    TooLarge,
    #[error("{0}")]
    Keys(#[from] JwksError),
}

impl FetchError {
    /// The bounded `result` label of `claimgate_jwks_fetches_total`.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Timeout => "timeout",
            FetchError::Connect(_) => "connect",
            FetchError::Request(_) => "error",
            FetchError::Status(_) => "http_status",
            FetchError::TooLarge => "too_large",
            FetchError::Keys(JwksError::InvalidJson) => "invalid_json",
            FetchError::Keys(JwksError::NoKeys) => "no_keys",
            FetchError::Keys(JwksError::NoValidKeys) => "no_valid_keys",
        }
    }

    fn from_reqwest(e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            FetchError::Timeout
        } else if e.is_connect() {
            FetchError::Connect(e.without_url().to_string())
        } else {
            FetchError::Request(e.without_url().to_string())
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Unix time of the set in force (fetched, or persisted and loaded).
    last_success: Option<f64>,
    /// When an unknown `kid` last caused a refetch.
    last_refetch: Option<Instant>,
    /// SHA-256 of the fetched body in force.
    digest: Option<[u8; 32]>,
}

/// One `jwksUri` and the slot its keys are published in.
pub struct KeySource {
    pub uri: String,
    pub slot: KeySlot,
    pub timeout: Duration,
    client: reqwest::Client,
    cooldown: Duration,
    cache_dir: Option<PathBuf>,
    state: Mutex<State>,
    /// Bumped on every new set: tells a refetch waiter that someone else's
    /// fetch already brought one.
    generation: AtomicU64,
    /// Single flight for unknown-`kid` refetches.
    refetching: tokio::sync::Mutex<()>,
    refetches: IntCounter,
    /// Fetches finished, good or bad: the start-up warm-up waits for one.
    attempts: AtomicU64,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource").field("uri", &self.uri).finish()
    }
}

impl KeySource {
    pub fn is_loaded(&self) -> bool {
        self.slot.load().is_some()
    }

    /// Seconds since the set in force was fetched; `None` before any.
    pub fn age(&self) -> Option<f64> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last_success.map(|t| (unix_now() - t).max(0.0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The set in force was fetched again, unchanged.
    fn confirm(&self, fetched_at: f64) {
        crate::metrics::get()
            .jwks_last_success
            .with_label_values(&[&self.uri])
            .set(fetched_at);
        self.lock().last_success = Some(fetched_at);
    }

    fn install(&self, keys: KeySet, fetched_at: f64) {
        let metrics = crate::metrics::get();
        metrics
            .jwks_keys
            .with_label_values(&[&self.uri])
            .set(keys.keys.len() as i64);
        metrics
            .jwks_last_success
            .with_label_values(&[&self.uri])
            .set(fetched_at);
        self.slot.store(Some(Arc::new(keys)));
        self.generation.fetch_add(1, Ordering::Release);
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_success = Some(fetched_at);
    }

    /// Fetches the set once; a good one replaces the set in force (and is
    /// persisted), a bad one leaves it, logged and counted either way.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let result = self.fetch().await;
        self.attempts.fetch_add(1, Ordering::Release);
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        crate::metrics::get()
            .jwks_fetches
            .with_label_values(&[&self.uri, label])
            .inc();
        match result {
            Ok((keys, body)) => {
                let count = keys.keys.len();
                let now = unix_now();
                let digest = sha256(&body);
                if self.is_loaded() && self.lock().digest == Some(digest) {
                    // The same set again: keep the one in force, so tokens
                    // it verified stay cached (a flood of unknown kids
                    // would otherwise make every cached token verify again
                    // once per cooldown).
                    self.confirm(now);
                    tracing::debug!(uri = %self.uri, keys = count, "fetched JWKS, unchanged");
                } else {
                    self.install(keys, now);
                    self.lock().digest = Some(digest);
                    tracing::info!(uri = %self.uri, keys = count, "fetched JWKS");
                }
                if let Some(dir) = &self.cache_dir {
                    if let Err(error) = persist::save(dir, &self.uri, &body, now) {
                        tracing::warn!(uri = %self.uri, %error, "cannot persist the key set");
                    }
                }
                Ok(count)
            }
            Err(error) => {
                tracing::warn!(uri = %self.uri, %error, result = label, stale = self.is_loaded(),
                    "JWKS fetch failed; keeping the last good key set");
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Vec<u8>), FetchError> {
        let mut response = self
            .client
            .get(&self.uri)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(FetchError::from_reqwest)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(FetchError::from_reqwest)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((KeySet::from_json(&body)?, body))
    }

    /// Loads the persisted set, if there is a good one.
    fn load_persisted(&self) {
        let Some(dir) = &self.cache_dir else {
            return;
        };
        match persist::load(dir, &self.uri) {
            Ok(Some((keys, fetched_at))) => {
                tracing::info!(uri = %self.uri, keys = keys.keys.len(), "loaded the persisted key set");
                self.install(keys, fetched_at);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(uri = %self.uri, %error, "ignoring a corrupt persisted key set")
            }
        }
    }

    /// Fetches again now, in the background loop's stead, with backoff.
    async fn keep_fresh(self: Arc<Self>, interval: Duration) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let wait = match self.refresh().await {
                Ok(_) => {
                    backoff = FIRST_BACKOFF;
                    interval
                }
                Err(_) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(interval);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl KeyRefetch for KeySource {
    /// A token named a `kid` the set lacks: fetch again, at most once per
    /// cooldown, with every concurrent caller waiting on the one fetch.
    /// `true` when a newer set is now in force.
    async fn refetch_unknown_kid(&self) -> bool {
        let seen = self.generation.load(Ordering::Acquire);
        let _flight = self.refetching.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state
                .last_refetch
                .is_some_and(|t| t.elapsed() < self.cooldown)
            {
                return false;
            }
            state.last_refetch = Some(Instant::now());
        }
        self.refetches.inc();
        self.refresh().await.is_ok()
    }
}

/// Every remote key source of the process, by URI. It outlives a single
/// compiled snapshot, so that a recompile keeps the keys it already has.
pub struct JwksRegistry {
    config: JwksConfig,
    client: reqwest::Client,
    sources: Mutex<HashMap<String, Arc<KeySource>>>,
    /// Sources were added or removed.
    added: Notify,
}

impl std::fmt::Debug for JwksRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksRegistry")
            .field("config", &self.config)
            .finish()
    }
}

impl Default for JwksRegistry {
    /// Default settings; for `check`, tests and tools that never fetch.
    fn default() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        JwksRegistry::with_client(JwksConfig::default(), client)
    }
}

impl JwksRegistry {
    /// Fails when the CA file cannot be read.
    pub fn new(config: JwksConfig) -> Result<JwksRegistry, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("claimgate/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no certificate", path.display()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(JwksRegistry::with_client(config, client))
    }

    fn with_client(config: JwksConfig, client: reqwest::Client) -> JwksRegistry {
        JwksRegistry {
            config,
            client,
            sources: Mutex::default(),
            added: Notify::new(),
        }
    }

    /// The source for `uri`, created on first use (and loaded from the
    /// persisted copy, when there is one).
    pub fn source(&self, uri: &str, timeout: Duration) -> Arc<KeySource> {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = sources.get(uri) {
            return source.clone();
        }
        let source = Arc::new(KeySource {
            uri: uri.to_string(),
            slot: KeySlot::default(),
            timeout,
            client: self.client.clone(),
            cooldown: self.config.refetch_cooldown,
            cache_dir: self.config.cache_dir.clone(),
            state: Mutex::default(),
            generation: AtomicU64::new(0),
            refetching: tokio::sync::Mutex::new(()),
            refetches: crate::metrics::get()
                .jwks_refetches
                .with_label_values(&[uri]),
            attempts: AtomicU64::new(0),
        });
        source.load_persisted();
        sources.insert(uri.to_string(), source.clone());
        self.added.notify_one();
        source
    }

    /// Drops every source whose URI is not in `uris`: its refresh stops
    /// and its per-URI gauges go away.
    pub fn retain(&self, uris: &std::collections::HashSet<String>) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let removed: Vec<String> = sources
            .keys()
            .filter(|uri| !uris.contains(*uri))
            .cloned()
            .collect();
        if removed.is_empty() {
            return;
        }
        let metrics = crate::metrics::get();
        for uri in &removed {
            sources.remove(uri);
            let _ = metrics.jwks_keys.remove_label_values(&[uri]);
            let _ = metrics.jwks_last_success.remove_label_values(&[uri]);
            let _ = metrics.jwks_age.remove_label_values(&[uri]);
            tracing::info!(%uri, "no rule names this jwksUri any more: no longer fetched");
        }
        drop(sources);
        self.added.notify_one();
    }

    pub fn sources(&self) -> Vec<Arc<KeySource>> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.values().cloned().collect()
    }

    /// Sets the scrape-time gauges.
    pub fn update_metrics(&self) {
        let metrics = crate::metrics::get();
        for source in self.sources() {
            if let Some(age) = source.age() {
                metrics.jwks_age.with_label_values(&[&source.uri]).set(age);
            }
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The background service that keeps every source fresh: one task per
/// source, so that one slow or failing URI never delays the others.
pub struct JwksRefresher {
    registry: Arc<JwksRegistry>,
}

impl JwksRefresher {
    pub fn new(registry: Arc<JwksRegistry>) -> JwksRefresher {
        JwksRefresher { registry }
    }
}

impl JwksRefresher {
    /// Waits until every source is loaded or its first fetch has finished
    /// (good or bad), for at most the longest fetch timeout and a second.
    /// Like Envoy's `fast_listener: false`: the listeners open with keys in
    /// hand, and an upgrade takes the sockets over only then, while the
    /// old process keeps serving.
    async fn warm_up(&self) {
        let sources = self.registry.sources();
        let limit =
            sources.iter().map(|s| s.timeout).max().unwrap_or_default() + Duration::from_secs(1);
        let settled = || {
            sources
                .iter()
                .all(|s| s.is_loaded() || s.attempts.load(Ordering::Acquire) > 0)
        };
        let deadline = tokio::time::Instant::now() + limit;
        while !settled() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waiting: Vec<&str> = sources
            .iter()
            .filter(|s| !s.is_loaded())
            .map(|s| s.uri.as_str())
            .collect();
        if !waiting.is_empty() {
            tracing::warn!(?waiting, "opening the listeners without these key sets; tokens they sign get 401 until a fetch succeeds");
        }
    }
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let interval = self.registry.config.refresh;
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut ready = Some(ready);
        loop {
            let sources = self.registry.sources();
            running.retain(|uri, task| {
                let kept = sources.iter().any(|s| &s.uri == uri);
                if !kept {
                    task.abort();
                }
                kept
            });
            for source in sources {
                if !running.contains_key(&source.uri) {
                    let uri = source.uri.clone();
                    running.insert(uri, tokio::spawn(source.keep_fresh(interval)));
                }
            }
            if let Some(ready) = ready.take() {
                self.warm_up().await;
                ready.notify_ready();
            }
            tokio::select! {
                _ = self.registry.added.notified() => {}
                _ = shutdown.changed() => break,
            }
        }
        for task in running.into_values() {
            task.abort();
        }
    }
}
