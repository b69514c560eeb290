//! Any bytes as an `Authorization: Bearer` token, through the whole
//! authentication path (locations, size limit, parse, issuer, claims checks,
//! key choice, verify, cache): it must never panic, and a token it accepts
//! must carry a signature that one of the keys verifies.
#![no_main]

use std::sync::{Arc, OnceLock};

use claimgate::jwt::authn::{Outputs, DEFAULT_MAX_TOKEN_BYTES};
use claimgate::jwt::{Authenticator, KeySet, KeySlot, Provider, TokenCache, TokenLocation, Validation};
use libfuzzer_sys::fuzz_target;

/// A key set with one key of every type (RFC 7515 A.1 oct, A.2 RSA, A.3 P-256, A.4 P-521, RFC 8037 Ed25519).
const JWKS: &str = r#"{"keys":[
 {"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow","kid":"hs"},
 {"kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB","kid":"rs"},
 {"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"es"},
 {"kty":"EC","crv":"P-521","x":"AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk","y":"ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2","kid":"es512"},
 {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}
]}"#;

fn key_set() -> Arc<KeySet> {
    static K: OnceLock<Arc<KeySet>> = OnceLock::new();
    K.get_or_init(|| Arc::new(KeySet::from_json(JWKS.as_bytes()).expect("the fuzz key set parses")))
        .clone()
}

fn authenticator() -> &'static Authenticator {
    static A: OnceLock<Authenticator> = OnceLock::new();
    A.get_or_init(|| {
        let keys: KeySlot = Arc::default();
        keys.store(Some(key_set()));
        let provider = Provider {
            issuer: "joe".into(),
            validation: Validation::default(),
            keys,
            locations: TokenLocation::defaults(),
            forward_original_token: false,
            outputs: Outputs::default(),
            space_delimited: vec!["roles".into()],
            refetch: None,
        };
        Authenticator::new(vec![provider], Arc::new(TokenCache::new(64)), DEFAULT_MAX_TOKEN_BYTES)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The parser on its own.
    let _ = claimgate::jwt::parse(text);
    // And the whole request path, when the bytes can be a header value.
    let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {text}")) else { return };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    if let Ok(Some(_)) = authenticator().authenticate(&headers, None, 1_300_819_000) {
        let token = claimgate::jwt::parse(text.trim()).expect("an accepted token parses");
        let verified = key_set().verify(token.alg, token.kid.as_deref(), token.signing_input, &token.signature);
        assert!(verified.is_ok(), "accepted a token no key verifies");
    }
});
