//! Published JWS vectors (RFC 7515 A.1-A.4, RFC 7520 4.1-4.4, RFC 8037 A.4)
//! against keys given as JWKS, and a signature-fuzz helper: every bit flip
//! and every truncation of a valid token's segments is rejected.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use claimgate::jwt::{self, Algorithm, JwtError, KeySet, Validation};
use serde_json::{json, Value};

struct Vector {
    name: String,
    jwk: Value,
    keys: KeySet,
    jws: String,
}

fn vectors() -> Vec<Vector> {
    let all: Vec<Value> = serde_json::from_str(&support::read_fixture("rfc/vectors.json")).unwrap();
    all.into_iter()
        .map(|v| {
            let jwks = json!({ "keys": [v["jwk"].clone()] }).to_string();
            Vector {
                name: v["name"].as_str().unwrap().to_string(),
                jwk: v["jwk"].clone(),
                keys: KeySet::from_json(jwks.as_bytes())
                    .unwrap_or_else(|e| panic!("{}: {e}", v["name"])),
                jws: v["jws"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// Signature-level check of a compact JWS whose payload need not be JSON:
/// `Ok` only when the header names an algorithm and the signature verifies.
fn verify_signature(keys: &KeySet, jws: &str) -> Result<(), String> {
    let (input, sig) = jws.rsplit_once('.').ok_or("no signature")?;
    let (header, _) = input.split_once('.').ok_or("no payload")?;
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| "header base64")?;
    let header: Value = serde_json::from_slice(&header).map_err(|_| "header json")?;
    let alg = header["alg"]
        .as_str()
        .and_then(Algorithm::from_name)
        .ok_or("alg")?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| "signature base64")?;
    keys.verify(alg, header["kid"].as_str(), input.as_bytes(), &sig)
        .map_err(|e| e.to_string())
}

#[test]
fn every_published_vector_verifies() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 9);
    for v in &vectors {
        assert_eq!(verify_signature(&v.keys, &v.jws), Ok(()), "{}", v.name);
    }
}

#[test]
fn the_rfc7515_jwts_validate_through_the_full_pipeline() {
    // A.1-A.3 carry {"iss":"joe","exp":1300819380,...}: valid just before exp.
    for v in vectors()
        .iter()
        .filter(|v| v.name.starts_with("rfc7515-a") && !v.name.contains("a4"))
    {
        let token = jwt::parse(&v.jws).unwrap();
        let verified = jwt::validate(
            token,
            Some(&std::sync::Arc::new(v.keys.clone())),
            &Validation::default(),
            1_300_819_000,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(verified.issuer(), "joe");
        assert_eq!(
            verified.claims.get("http://example.com/is_root"),
            Some(&serde_json::Value::Bool(true))
        );
        // And expired once past exp + skew.
        let token = jwt::parse(&v.jws).unwrap();
        let late = jwt::validate(
            token,
            Some(&std::sync::Arc::new(v.keys.clone())),
            &Validation::default(),
            1_300_819_441,
        );
        assert_eq!(late.unwrap_err(), JwtError::Expired, "{}", v.name);
    }
}

#[test]
fn no_vector_verifies_with_another_vectors_key() {
    let vectors = vectors();
    for v in &vectors {
        for other in vectors.iter().filter(|o| o.jwk != v.jwk) {
            assert!(
                verify_signature(&other.keys, &v.jws).is_err(),
                "{} verified with {}'s key",
                v.name,
                other.name
            );
        }
    }
}

/// Flips every bit of every segment and truncates the signature to every
/// shorter length: all of it must be rejected.
fn assert_every_mutation_rejected(name: &str, keys: &KeySet, jws: &str) {
    let segments: Vec<&str> = jws.split('.').collect();
    assert_eq!(segments.len(), 3);
    for (index, segment) in segments.iter().enumerate() {
        let bytes = URL_SAFE_NO_PAD.decode(segment).unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut mutated = bytes.clone();
            mutated[bit / 8] ^= 1 << (bit % 8);
            let mut parts = segments.clone();
            let encoded = URL_SAFE_NO_PAD.encode(&mutated);
            parts[index] = &encoded;
            let candidate = parts.join(".");
            assert!(
                verify_signature(keys, &candidate).is_err(),
                "{name}: segment {index} bit {bit} accepted"
            );
        }
    }
    let sig = URL_SAFE_NO_PAD.decode(segments[2]).unwrap();
    for len in 0..sig.len() {
        let candidate = format!(
            "{}.{}.{}",
            segments[0],
            segments[1],
            URL_SAFE_NO_PAD.encode(&sig[..len])
        );
        assert!(
            verify_signature(keys, &candidate).is_err(),
            "{name}: signature truncated to {len} accepted"
        );
    }
}

#[test]
fn every_bit_flip_and_truncation_of_a_vector_is_rejected() {
    for v in vectors() {
        assert_every_mutation_rejected(&v.name, &v.keys, &v.jws);
    }
}

#[test]
fn every_bit_flip_and_truncation_of_our_tokens_is_rejected() {
    let keys = KeySet::from_json(support::test_jwks().as_bytes()).unwrap();
    let claims = support::claims(json!({"groups": ["group1"]}));
    assert_every_mutation_rejected("rs256", &keys, &support::rs256(claims.clone()));
    assert_every_mutation_rejected("es256", &keys, &support::es256(claims));
}
