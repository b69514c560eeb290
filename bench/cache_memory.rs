//! Memory of the verified-token cache: validates N tokens, caches them,
//! and reports the process's resident memory before and after, per token.
//!
//!     cargo run --release --example bench-tokens -- jwks /tmp/jwks.json
//!     cargo run --release --example bench-tokens -- ES256 100000 /tmp/tokens
//!     cargo run --release --example cache-memory -- /tmp/jwks.json /tmp/tokens
//!
//! `bench/run.sh` measures the whole gateway under load; this isolates the
//! cache, so a change to what an entry holds shows in bytes per token.

use std::sync::Arc;

use claimgate::jwt::{parse, validate, KeySet, TokenCache, Validation};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [jwks, tokens, ..] = args.as_slice() else {
        eprintln!("usage: cache-memory JWKS TOKENS");
        std::process::exit(2);
    };
    let keys =
        Arc::new(KeySet::from_json(&std::fs::read(jwks).expect("the JWKS")).expect("a JWKS"));
    let text = std::fs::read_to_string(tokens).expect("the tokens");
    let tokens: Vec<&str> = text.lines().collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cache = TokenCache::new(tokens.len());
    let validation = Validation::default();

    let before = rss_kib();
    let mut cached = 0usize;
    for token in &tokens {
        let Ok(parsed) = parse(token) else { continue };
        if let Ok(verified) = validate(parsed, Some(&keys), &validation, now) {
            cache.insert(token, Arc::new(verified));
            cached += 1;
        }
    }
    let after = rss_kib();
    let per_token = (after.saturating_sub(before) * 1024) / cached.max(1) as u64;
    println!(
        "tokens {} cached {} entries {} | RSS before {} MiB after {} MiB | {} bytes per cached token (token text {} bytes)",
        tokens.len(),
        cached,
        cache.len(),
        before / 1024,
        after / 1024,
        per_token,
        tokens.first().map_or(0, |t| t.len()),
    );
}
