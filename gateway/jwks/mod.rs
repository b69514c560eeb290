//! Remote key sets (`jwksUri`): one source per distinct URI, shared by every
//! rule that names it, fetched at start and refreshed in the background.
//! Requests only ever `load()` the last good set; they never wait on a fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::Notify;

use crate::jwt::authn::KeySlot;
use crate::jwt::KeySet;

/// Largest key set body we accept.
const MAX_BODY: usize = 1 << 20;
/// First retry after a failed fetch; doubles up to the refresh interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// One `jwksUri` and the slot its keys are published in.
#[derive(Debug)]
pub struct KeySource {
    pub uri: String,
    pub slot: KeySlot,
    pub timeout: Duration,
}

impl KeySource {
    pub fn is_loaded(&self) -> bool {
        self.slot.load().is_some()
    }
}

/// Every remote key source of the process, by URI. It outlives a single
/// compiled snapshot, so that a recompile keeps the keys it already has.
#[derive(Debug, Default)]
pub struct JwksRegistry {
    sources: Mutex<HashMap<String, Arc<KeySource>>>,
    added: Notify,
}

impl JwksRegistry {
    /// The source for `uri`, created on first use.
    pub fn source(&self, uri: &str, timeout: Duration) -> Arc<KeySource> {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = sources.get(uri) {
            return source.clone();
        }
        let source = Arc::new(KeySource {
            uri: uri.to_string(),
            slot: KeySlot::default(),
            timeout,
        });
        sources.insert(uri.to_string(), source.clone());
        self.added.notify_one();
        source
    }

    pub fn sources(&self) -> Vec<Arc<KeySource>> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.values().cloned().collect()
    }

    /// Whether every key set has been fetched at least once.
    pub fn all_loaded(&self) -> bool {
        self.sources().iter().all(|s| s.is_loaded())
    }
}

/// Why a fetch left the previous key set in force.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("body is over {MAX_BODY} bytes")]
    TooLarge,
    #[error("{0}")]
    Keys(#[from] crate::jwt::JwksError),
}

/// Fetches one key set.
pub async fn fetch(client: &reqwest::Client, source: &KeySource) -> Result<KeySet, FetchError> {
    let request = client.get(&source.uri).timeout(source.timeout).send();
    let mut response = request
        .await
        .map_err(|e| FetchError::Request(without_url(e)))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Request(without_url(e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(KeySet::from_json(&body)?)
}

fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "error"
    };
    let mut text = e.without_url().to_string();
    if text.is_empty() {
        text = kind.to_string();
    }
    text
}

/// The background service that keeps every source fresh.
pub struct JwksRefresher {
    registry: Arc<JwksRegistry>,
    interval: Duration,
    client: reqwest::Client,
}

impl JwksRefresher {
    pub fn new(registry: Arc<JwksRegistry>, interval: Duration) -> JwksRefresher {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        JwksRefresher {
            registry,
            interval,
            client,
        }
    }

    /// Fetches `source` now and again every interval; a failure keeps the
    /// last good set and retries sooner, with exponential backoff.
    async fn keep_fresh(client: reqwest::Client, source: Arc<KeySource>, interval: Duration) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let wait = match fetch(&client, &source).await {
                Ok(keys) => {
                    tracing::info!(uri = %source.uri, keys = keys.keys.len(), "fetched JWKS");
                    source.slot.store(Some(Arc::new(keys)));
                    backoff = FIRST_BACKOFF;
                    interval
                }
                Err(error) => {
                    tracing::warn!(uri = %source.uri, %error, retry_in = ?backoff,
                        stale = source.is_loaded(), "JWKS fetch failed; keeping the last good key set");
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
impl BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            for source in self.registry.sources() {
                if !running.contains_key(&source.uri) {
                    let task = tokio::spawn(Self::keep_fresh(
                        self.client.clone(),
                        source.clone(),
                        self.interval,
                    ));
                    running.insert(source.uri.clone(), task);
                }
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
