//! Criterion micro benchmarks of the JWT hot path:
//! - `verify/*`: the signature check alone, per algorithm (published RFC vectors);
//! - `authenticate/{uncached,cached}/*`: a request's whole authentication
//!   (find token, parse, verify, claims checks) without and with the cache;
//! - `claims/*`: a claim-path lookup as a route condition does it;
//! - `route_select/*`: the first matching route among 1, 100, 1000.
//!
//! Run: `cargo bench --bench jwt`. Figures go to bench/RESULTS.md.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};

use claimgate::jwt::authn::{Outputs, DEFAULT_MAX_TOKEN_BYTES};
use claimgate::jwt::claims::{ClaimPath, ClaimView};
use claimgate::jwt::{
    Algorithm, Authenticator, KeySet, KeySlot, Provider, TokenCache, TokenLocation, Validation,
};
use claimgate::routing::{
    Action, Condition, HostTable, MatchRule, RequestView, Route, StringMatcher,
};

fn fixture(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn verify_signatures(c: &mut Criterion) {
    let vectors: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixture("rfc/vectors.json")).unwrap()).unwrap();
    let mut group = c.benchmark_group("verify");
    for v in &vectors {
        let name = v["name"].as_str().unwrap();
        let keys = KeySet::from_json(json!({"keys": [v["jwk"]]}).to_string().as_bytes()).unwrap();
        let jws = v["jws"].as_str().unwrap();
        let (input, sig) = jws.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let alg = Algorithm::from_name(v["alg"].as_str().unwrap()).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                keys.verify(alg, None, black_box(input.as_bytes()), black_box(&sig))
                    .unwrap()
            })
        });
    }
    group.finish();
}

struct Signer {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    fn new() -> Signer {
        let rng = SystemRandom::new();
        let rsa =
            RsaKeyPair::from_pkcs8(&std::fs::read(fixture("keys/rsa-2048.pk8")).unwrap()).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &std::fs::read(fixture("keys/ec-p256.pk8")).unwrap(),
            &rng,
        )
        .unwrap();
        Signer { rsa, ec, rng }
    }

    fn jwks(&self) -> String {
        let rsa = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        let point = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": b64(&rsa.n), "e": b64(&rsa.e)},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        ]})
        .to_string()
    }

    fn token(&self, alg: &str, claims: &Value) -> String {
        let kid = if alg == "RS256" { "rsa" } else { "ec" };
        let input = format!(
            "{}.{}",
            b64(json!({"alg": alg, "kid": kid}).to_string()),
            b64(claims.to_string())
        );
        let sig = if alg == "RS256" {
            let mut sig = vec![0; self.rsa.public().modulus_len()];
            self.rsa
                .sign(&RSA_PKCS1_SHA256, &self.rng, input.as_bytes(), &mut sig)
                .unwrap();
            sig
        } else {
            self.ec
                .sign(&self.rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec()
        };
        format!("{input}.{}", b64(sig))
    }
}

fn authenticator(jwks: &str, cache_size: usize) -> Authenticator {
    let keys: KeySlot = Arc::default();
    keys.store(Some(Arc::new(KeySet::from_json(jwks.as_bytes()).unwrap())));
    let provider = Provider {
        issuer: "https://issuer.bench".into(),
        validation: Validation::default(),
        keys,
        locations: TokenLocation::defaults(),
        forward_original_token: false,
        outputs: Outputs::default(),
        space_delimited: vec![],
        refetch: None,
    };
    Authenticator::new(
        vec![provider],
        Arc::new(TokenCache::new(cache_size)),
        DEFAULT_MAX_TOKEN_BYTES,
    )
}

fn authenticate(c: &mut Criterion) {
    let signer = Signer::new();
    let jwks = signer.jwks();
    let claims = json!({
        "iss": "https://issuer.bench", "sub": "user-1", "exp": 4_000_000_000u64,
        "groups": ["group1", "group2"], "scope": "read write", "team": {"name": "edge"}
    });
    let now = 1_800_000_000;
    for alg in ["RS256", "ES256"] {
        let token = signer.token(alg, &claims);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );

        let uncached = authenticator(&jwks, 0);
        c.bench_function(&format!("authenticate/uncached/{alg}"), |b| {
            b.iter(|| {
                uncached
                    .authenticate(black_box(&headers), None, now)
                    .unwrap()
                    .unwrap()
            })
        });
        let cached = authenticator(&jwks, 10_000);
        cached.authenticate(&headers, None, now).unwrap();
        c.bench_function(&format!("authenticate/cached/{alg}"), |b| {
            b.iter(|| {
                cached
                    .authenticate(black_box(&headers), None, now)
                    .unwrap()
                    .unwrap()
            })
        });
    }
}

fn claim_lookup(c: &mut Criterion) {
    let claims = json!({"groups": ["a", "b", "c", "group1"], "team": {"name": "edge"}, "scope": "read write admin"});
    let claims = &claimgate::jwt::ClaimSet::from(claims.as_object().unwrap().clone());
    let view = ClaimView {
        claims,
        space_delimited: &[],
    };
    let list = ClaimPath::from_header_name("@request.auth.claims.groups")
        .unwrap()
        .unwrap();
    let nested = ClaimPath::from_header_name("@request.auth.claims.team.name")
        .unwrap()
        .unwrap();
    let spaced = ClaimPath::from_header_name("@request.auth.claims.scope")
        .unwrap()
        .unwrap();
    c.bench_function("claims/list_last_element", |b| {
        b.iter(|| list.any_value(black_box(view), |v| v == "group1"))
    });
    c.bench_function("claims/nested", |b| {
        b.iter(|| nested.any_value(black_box(view), |v| v == "edge"))
    });
    c.bench_function("claims/space_delimited", |b| {
        b.iter(|| spaced.any_value(black_box(view), |v| v == "admin"))
    });
}

/// `n` routes on `*`, each `prefix: /svc-<i>` and a `groups` claim; the
/// request matches the last one (the worst case of first-match).
fn route_select(c: &mut Criterion) {
    let claims = json!({"groups": ["group1"]});
    let claims = &claimgate::jwt::ClaimSet::from(claims.as_object().unwrap().clone());
    let headers = HeaderMap::new();
    for n in [1usize, 100, 1000] {
        let mut table = HostTable::default();
        table.add(
            "*",
            (0..n).map(|i| {
                Arc::new(Route {
                    name: format!("route-{i}").into(),
                    entry: None,
                    matches: vec![MatchRule {
                        name: None,
                        span: claimgate::routing::UriSpan::Prefix(6),
                        conditions: vec![
                            Condition::Uri {
                                matcher: StringMatcher::Prefix(format!("/svc-{i}/")),
                                ignore_case: false,
                            },
                            Condition::Claim(
                                ClaimPath::from_header_name("@request.auth.claims.groups")
                                    .unwrap()
                                    .unwrap(),
                                StringMatcher::Exact("group1".into()),
                            ),
                        ],
                    }],
                    action: Action::to_cluster(
                        0,
                        claimgate::metrics::RouteMetrics::new(&format!("route-{i}"), "c"),
                    ),
                    metrics: claimgate::metrics::RouteMetrics::new(&format!("route-{i}"), "-"),
                    response_headers: Default::default(),
                    cors: None,
                })
            }),
        );
        let path = format!("/svc-{}/items?x=1", n - 1);
        c.bench_function(&format!("route_select/{n}"), |b| {
            b.iter(|| {
                let req = RequestView {
                    scheme: "http",
                    port: 80,
                    method: "GET",
                    path: black_box(&path),
                    authority: "api.example.com",
                    headers: &headers,
                    claims: Some(ClaimView {
                        claims,
                        space_delimited: &[],
                    }),
                };
                table.select(&req).map(|(r, _)| r.name.len())
            })
        });
    }
}

criterion_group!(
    benches,
    verify_signatures,
    authenticate,
    claim_lookup,
    route_select
);
criterion_main!(benches);
