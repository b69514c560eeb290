//! Fast, non-cryptographic random numbers for sampling, jitter and request
//! ids: one xorshift64* generator per thread, seeded from std's randomly
//! keyed hasher. Nothing secret is ever derived from these.

use std::cell::Cell;
use std::hash::BuildHasher;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let random = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    // xorshift must not start at 0.
    random | 1
}

/// A random `u64`.
pub fn u64() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A random number below `n` (0 when `n` is 0).
pub fn below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // Lemire's multiply-shift: no modulo bias worth speaking of at these sizes.
    ((u128::from(u64()) * u128::from(n)) >> 64) as u64
}

/// A random (version 4, RFC 9562) UUID in its text form, as Envoy writes
/// `x-request-id`. Written by hand: `format!` costs the proxy path ten
/// times as much.
pub fn uuid() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = (u64() & !0xF000) | 0x4000; // version 4
    let lo = (u64() & !(0b11 << 62)) | (0b10 << 62); // RFC 9562 variant
    let bits = (u128::from(hi) << 64) | u128::from(lo);
    let mut text = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            text.push('-');
        }
        let nibble = (bits >> (124 - 4 * i)) & 0xF;
        text.push(char::from(HEX[nibble as usize]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_below_and_covers_the_range() {
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let n = below(10) as usize;
            assert!(n < 10);
            seen[n] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(below(0), 0);
    }

    #[test]
    fn uuids_are_version_4_and_differ() {
        let a = uuid();
        let b = uuid();
        assert_ne!(a, b);
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{a}");
        assert!(
            matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
            "{a}"
        );
        assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
    }
}
