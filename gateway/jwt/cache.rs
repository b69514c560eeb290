//! The verified-token cache: a hit skips the base64 decode, the JSON parse
//! and the signature check. Keyed by the whole token (the map compares keys
//! in full, a hash alone never decides), bounded in entries, holding only
//! tokens that verified. An entry is only used while its token is within
//! `exp`/`nbf` and its issuer's key set is the one that verified it.

use std::sync::Arc;

use prometheus::IntCounter;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, UnitWeighter};

use super::VerifiedToken;

type Entries =
    Cache<Box<str>, Arc<VerifiedToken>, UnitWeighter, DefaultHashBuilder, CountEvictions>;

pub struct TokenCache {
    /// `None` when the cache is disabled (capacity 0).
    entries: Option<Entries>,
    hits: IntCounter,
    misses: IntCounter,
}

/// Counts the tokens evicted to make room.
#[derive(Clone)]
struct CountEvictions(IntCounter);

impl Lifecycle<Box<str>, Arc<VerifiedToken>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: Box<str>, _: Arc<VerifiedToken>) {
        self.0.inc();
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenCache({} entries)", self.len())
    }
}

impl TokenCache {
    /// A cache sized to hold `capacity` tokens; 0 disables it.
    ///
    /// The eviction policy (S3-FIFO) admits a token seen once only to a
    /// small probation queue, which keeps one-off tokens (a flood, a scan)
    /// from evicting the working set. A token comes back into the main queue
    /// when it is seen again while its ghost (a hash) is remembered, so the
    /// ghost list holds as many entries as the cache: a rotation of up to
    /// `capacity` tokens is admitted on its second round even when the cache
    /// is full of others. Entries get a quarter more room than `capacity`,
    /// because shards fill unevenly.
    pub fn new(capacity: usize) -> TokenCache {
        let metrics = crate::metrics::get();
        let slots = capacity + capacity / 4 + 16;
        let options = OptionsBuilder::new()
            .estimated_items_capacity(slots)
            .weight_capacity(slots as u64)
            .ghost_allocation(1.0)
            .build();
        let entries = match options {
            _ if capacity == 0 => None,
            Ok(options) => Some(Cache::with_options(
                options,
                UnitWeighter,
                DefaultHashBuilder::default(),
                CountEvictions(metrics.jwt_cache_evictions.clone()),
            )),
            Err(error) => {
                tracing::error!(%error, capacity, "token cache refused its options; running without it");
                None
            }
        };
        TokenCache {
            entries,
            hits: metrics.jwt_cache_hits.clone(),
            misses: metrics.jwt_cache_misses.clone(),
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        let found = self.entries.as_ref()?.get(token);
        if found.is_some() {
            self.hits.inc();
        } else {
            self.misses.inc();
        }
        found
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

    /// The most entries it holds (the sized-for count plus headroom).
    pub fn capacity(&self) -> u64 {
        self.entries.as_ref().map_or(0, |e| e.capacity())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::KeySet;

    fn token(i: usize) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken::new(
            "i",
            &i.to_string(),
            Default::default(),
            Arc::new(KeySet::default()),
        ))
    }

    #[test]
    fn capacity_tokens_in_rotation_all_hit_once_cached() {
        let cache = TokenCache::new(10_000);
        for _ in 0..3 {
            for i in 0..10_000 {
                let key = format!("token-{i}");
                if cache.get(&key).is_none() {
                    cache.insert(&key, token(i));
                }
            }
        }
        let hits = (0..10_000)
            .filter(|i| cache.get(&format!("token-{i}")).is_some())
            .count();
        assert_eq!(hits, 10_000);
    }

    #[test]
    fn a_new_rotation_is_admitted_even_when_the_cache_is_full_of_others() {
        let cache = TokenCache::new(10_000);
        // Fill the cache with a working set used twice (so it sits in the main queue).
        for _ in 0..2 {
            for i in 0..10_000 {
                let key = format!("old-{i}");
                if cache.get(&key).is_none() {
                    cache.insert(&key, token(i));
                }
            }
        }
        // Then a different 10,000 tokens in rotation, as a client population changes.
        for _ in 0..4 {
            for i in 0..10_000 {
                let key = format!("new-{i}");
                if cache.get(&key).is_none() {
                    cache.insert(&key, token(i));
                }
            }
        }
        let hits = (0..10_000)
            .filter(|i| cache.get(&format!("new-{i}")).is_some())
            .count();
        assert!(hits >= 9_900, "only {hits} of 10,000 hit");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TokenCache::new(1_000);
        for i in 0..50_000 {
            cache.insert(&format!("token-{i}"), token(i));
        }
        assert!(cache.capacity() < 1_400, "capacity {}", cache.capacity());
        assert!(
            cache.len() as u64 <= cache.capacity(),
            "{} entries",
            cache.len()
        );
    }

    #[test]
    fn a_zero_capacity_cache_holds_nothing() {
        let cache = TokenCache::new(0);
        cache.insert("t", token(0));
        assert!(cache.get("t").is_none());
    }
}
