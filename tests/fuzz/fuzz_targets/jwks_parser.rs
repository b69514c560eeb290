//! Any bytes as a JWKS document: it must never panic; whatever parses holds
//! only usable keys.
#![no_main]

use claimgate::jwt::KeySet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = KeySet::from_json(data) {
        assert!(!keys.keys.is_empty(), "a parsed key set has at least one key");
        // Exercise every parsed key once.
        for alg in ["RS256", "PS384", "ES256", "ES384", "ES512", "EdDSA", "HS256"] {
            let alg = claimgate::jwt::Algorithm::from_name(alg).unwrap();
            let _ = keys.verify(alg, None, b"message", &[0u8; 64]);
        }
    }
});
