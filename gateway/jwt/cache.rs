//! The verified-token cache: a hit skips the base64 decode, the JSON parse
//! and the signature check. Keyed by the whole token (the map compares keys
//! in full, a hash alone never decides), bounded in entries, holding only
//! tokens that verified. An entry is only used while its token is within
//! `exp`/`nbf` and its issuer's key set is the one that verified it.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::VerifiedToken;

pub struct TokenCache {
    /// `None` when the cache is disabled (capacity 0).
    entries: Option<Cache<Box<str>, Arc<VerifiedToken>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenCache({} entries)", self.len())
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables it.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        self.entries.as_ref()?.get(token)
    }

    pub fn insert(&self, token: &str, verified: Arc<VerifiedToken>) {
        if let Some(entries) = &self.entries {
            entries.insert(token.into(), verified);
        }
    }

    pub fn remove(&self, token: &str) {
        if let Some(entries) = &self.entries {
            entries.remove(token);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new(10_000)
    }
}
