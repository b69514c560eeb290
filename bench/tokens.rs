//! Mints benchmark tokens with the committed test keys, one per line.
//!
//!     cargo run --release --example bench-tokens -- ALG COUNT OUT [invalid]
//!     cargo run --release --example bench-tokens -- jwks OUT
//!
//! ALG is RS256 or ES256. Every token is distinct (a `jti`), carries
//! `groups: ["group1", "group2"]`, issuer `https://bench.claimgate.test`
//! and expires in 24 h; `invalid` flips a bit of each signature.

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::json;

const ISSUER: &str = "https://bench.claimgate.test";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rng = SystemRandom::new();
    let rsa = RsaKeyPair::from_pkcs8(&fixture("rsa-2048.pk8")).expect("the RSA test key");
    let ec = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &fixture("ec-p256.pk8"),
        &rng,
    )
    .expect("the EC test key");
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);

    if args.first().map(String::as_str) == Some("jwks") {
        let components = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(rsa.public());
        let point = ec.public_key().as_ref();
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "bench-rsa", "alg": "RS256", "use": "sig", "n": b64(&components.n), "e": b64(&components.e)},
            {"kty": "EC", "kid": "bench-ec", "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        ]});
        std::fs::write(&args[1], jwks.to_string()).expect("write the JWKS");
        return;
    }

    let [alg, count, out, rest @ ..] = args.as_slice() else {
        eprintln!("usage: bench-tokens (RS256|ES256) COUNT OUT [invalid] | bench-tokens jwks OUT");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let invalid = rest.first().map(String::as_str) == Some("invalid");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
        + 86_400;
    let kid = if alg == "RS256" {
        "bench-rsa"
    } else {
        "bench-ec"
    };
    let header = b64(json!({"alg": alg, "kid": kid, "typ": "JWT"})
        .to_string()
        .as_bytes());
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).expect("create OUT"));
    for i in 0..count {
        let claims = json!({"iss": ISSUER, "sub": format!("user-{}", i % 1000), "jti": i, "exp": exp,
                            "groups": ["group1", "group2"]});
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let mut sig = match alg.as_str() {
            "RS256" => {
                let mut sig = vec![0; rsa.public().modulus_len()];
                rsa.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .expect("sign");
                sig
            }
            "ES256" => ec
                .sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            other => panic!("unsupported algorithm {other}"),
        };
        if invalid {
            sig[7] ^= 0x01;
        }
        writeln!(file, "{input}.{}", b64(&sig)).expect("write a token");
    }
}
