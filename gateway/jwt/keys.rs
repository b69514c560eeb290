//! JSON Web Key Sets, parsed once into key material ring verifies with, and
//! the per-algorithm signature check.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ring::{hmac, signature};
use serde::Deserialize;

use super::JwtError;

/// JWS algorithms we verify. `none` has no variant: it can never be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Algorithm {
    pub fn from_name(name: &str) -> Option<Algorithm> {
        use Algorithm::*;
        Some(match name {
            "RS256" => RS256,
            "RS384" => RS384,
            "RS512" => RS512,
            "PS256" => PS256,
            "PS384" => PS384,
            "PS512" => PS512,
            "ES256" => ES256,
            "ES384" => ES384,
            "ES512" => ES512,
            "EdDSA" => EdDSA,
            "HS256" => HS256,
            "HS384" => HS384,
            "HS512" => HS512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use Algorithm::*;
        match self {
            RS256 => "RS256",
            RS384 => "RS384",
            RS512 => "RS512",
            PS256 => "PS256",
            PS384 => "PS384",
            PS512 => "PS512",
            ES256 => "ES256",
            ES384 => "ES384",
            ES512 => "ES512",
            EdDSA => "EdDSA",
            HS256 => "HS256",
            HS384 => "HS384",
            HS512 => "HS512",
        }
    }
}

/// Public key material, by key type.
#[derive(Clone)]
pub enum KeyMaterial {
    /// RSA modulus and exponent, big-endian, leading zeros stripped.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed point (`0x04 || x || y`) on P-256 or P-384, checked
    /// to be on its curve when the key set was parsed.
    Ec { curve: Curve, point: Vec<u8> },
    /// A P-521 key. ring has no P-521, so RustCrypto's `p521` verifies it,
    /// behind the same interface.
    EcP521(Box<p521::ecdsa::VerifyingKey>),
    /// An Ed25519 public key.
    Ed25519 { x: Vec<u8> },
    /// A shared HMAC secret (only from inline `jwks`).
    Oct { k: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print an HMAC secret.
        match self {
            KeyMaterial::Rsa { n, .. } => write!(f, "Rsa({} bits)", n.len() * 8),
            KeyMaterial::Ec { curve, .. } => write!(f, "Ec({curve:?})"),
            KeyMaterial::EcP521(_) => f.write_str("Ec(P521)"),
            KeyMaterial::Ed25519 { .. } => f.write_str("Ed25519"),
            KeyMaterial::Oct { .. } => f.write_str("Oct(redacted)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`, when it names one: the token's must be the same.
    pub alg: Option<Algorithm>,
    pub material: KeyMaterial,
}

impl Jwk {
    /// Whether a token signed with `alg` may be checked against this key:
    /// the algorithm family must fit the key type (no algorithm confusion),
    /// and the key's own `alg`, if any, must be exactly `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        let family = matches!(
            (&self.material, alg),
            (
                KeyMaterial::Rsa { .. },
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512
            ) | (
                KeyMaterial::Ec {
                    curve: Curve::P256,
                    ..
                },
                ES256
            ) | (
                KeyMaterial::Ec {
                    curve: Curve::P384,
                    ..
                },
                ES384
            ) | (KeyMaterial::EcP521(_), ES512)
                | (KeyMaterial::Ed25519 { .. }, EdDSA)
                | (KeyMaterial::Oct { .. }, HS256 | HS384 | HS512)
        );
        family && self.alg.is_none_or(|own| own == alg)
    }

    /// Checks `signature` over `message`. The caller has checked `fits`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        use Algorithm::*;
        match &self.material {
            KeyMaterial::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            KeyMaterial::Ec { curve, point } => {
                let algorithm: &dyn signature::VerificationAlgorithm = match curve {
                    Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                };
                signature::UnparsedPublicKey::new(algorithm, point)
                    .verify(message, sig)
                    .is_ok()
            }
            KeyMaterial::EcP521(key) => {
                use p521::ecdsa::signature::Verifier;
                p521::ecdsa::Signature::from_slice(sig)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            KeyMaterial::Ed25519 { x } => signature::UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            KeyMaterial::Oct { k } => {
                let algorithm = match alg {
                    HS256 => hmac::HMAC_SHA256,
                    HS384 => hmac::HMAC_SHA384,
                    HS512 => hmac::HMAC_SHA512,
                    _ => return false,
                };
                hmac::verify(&hmac::Key::new(algorithm, k), message, sig).is_ok()
            }
        }
    }
}

/// The usable keys of one JWKS.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

/// How many keys a token without `kid` is tried against.
const MAX_KEYS_WITHOUT_KID: usize = 8;

impl KeySet {
    /// Parses a JWKS document. Keys that are not for signatures, or that do
    /// not parse, are skipped with a warning naming their `kid`; a set with
    /// no usable key at all is an error.
    pub fn from_json(text: &[u8]) -> Result<KeySet, JwksError> {
        #[derive(Deserialize)]
        struct Raw {
            keys: Option<Vec<serde_json::Value>>,
        }
        let raw: Raw = serde_json::from_slice(text).map_err(|_| JwksError::InvalidJson)?;
        let Some(raw_keys) = raw.keys else {
            return Err(JwksError::NoKeys);
        };
        let mut keys = Vec::with_capacity(raw_keys.len());
        for value in raw_keys {
            match parse_jwk(&value) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(why) => {
                    let kid = value
                        .get("kid")
                        .and_then(|k| k.as_str())
                        .unwrap_or("<none>");
                    tracing::warn!(kid, why, "skipping a JWKS key that does not parse");
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoValidKeys);
        }
        Ok(KeySet { keys })
    }

    /// The keys `verify` tries for a token signed with `alg` naming `kid`:
    /// the key with that `kid`, or with none, up to 8 keys that fit `alg`.
    pub fn candidates<'k>(
        &'k self,
        alg: Algorithm,
        kid: Option<&'k str>,
    ) -> impl Iterator<Item = &'k Jwk> + 'k {
        self.keys
            .iter()
            .filter(move |k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid))
            .take(MAX_KEYS_WITHOUT_KID)
    }

    /// Verifies `signature` over `message` made with `alg` by the key named
    /// `kid` (or, with no `kid`, by any fitting key).
    pub fn verify(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), JwtError> {
        let mut candidates = self.candidates(alg, kid).peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::KidAlgMismatch);
        }
        if candidates.any(|k| k.verify(alg, message, signature)) {
            Ok(())
        } else {
            Err(JwtError::VerificationFail)
        }
    }
}

/// Why a whole key set was refused (Envoy's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("Jwks is an invalid JSON")]
    InvalidJson,
    #[error("Jwks does not have [keys] field")]
    NoKeys,
    #[error("Jwks doesn't have any valid public key")]
    NoValidKeys,
}

/// Base64url as key sets are found in the wild: padding optional.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn field<'a>(key: &'a serde_json::Value, name: &str) -> Result<&'a str, String> {
    match key.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(format!("[{name}] is not a string")),
        None => Err(format!("[{name}] is missing")),
    }
}

fn bytes(key: &serde_json::Value, name: &str) -> Result<Vec<u8>, String> {
    LENIENT_B64
        .decode(field(key, name)?)
        .map_err(|_| format!("[{name}] is not base64url"))
}

/// `Ok(None)`: a well-formed key that is not for signatures.
fn parse_jwk(key: &serde_json::Value) -> Result<Option<Jwk>, String> {
    if let Some(use_) = key.get("use") {
        if use_.as_str() != Some("sig") {
            return Ok(None);
        }
    }
    let kid = match key.get("kid") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("[kid] is not a string".into()),
    };
    let alg = match key.get("alg") {
        None => None,
        Some(serde_json::Value::String(s)) => {
            Some(Algorithm::from_name(s).ok_or_else(|| format!("[alg] `{s}` is not supported"))?)
        }
        Some(_) => return Err("[alg] is not a string".into()),
    };
    let material = match field(key, "kty")? {
        "RSA" => {
            let n = strip_zeros(bytes(key, "n")?);
            let e = strip_zeros(bytes(key, "e")?);
            if n.len() < 256 {
                return Err(format!("RSA modulus of {} bits is under 2048", n.len() * 8));
            }
            KeyMaterial::Rsa { n, e }
        }
        "EC" => {
            let (x, y) = (bytes(key, "x")?, bytes(key, "y")?);
            let crv = field(key, "crv")?;
            let size = match crv {
                "P-256" => 32,
                "P-384" => 48,
                "P-521" => 66,
                other => return Err(format!("EC curve `{other}` is not supported")),
            };
            if x.len() != size || y.len() != size {
                return Err("EC [x] or [y] has the wrong length".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let on_curve = match crv {
                "P-256" => p256::PublicKey::from_sec1_bytes(&point).is_ok(),
                "P-384" => p384::PublicKey::from_sec1_bytes(&point).is_ok(),
                _ => {
                    let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|_| "EC point is not on P-521".to_string())?;
                    return finish(kid, alg, KeyMaterial::EcP521(Box::new(key)));
                }
            };
            if !on_curve {
                return Err(format!("EC point is not on {crv}"));
            }
            let curve = if size == 32 { Curve::P256 } else { Curve::P384 };
            KeyMaterial::Ec { curve, point }
        }
        "OKP" => {
            if field(key, "crv")? != "Ed25519" {
                return Err("OKP curve is not Ed25519".into());
            }
            let x = bytes(key, "x")?;
            if x.len() != 32 {
                return Err("OKP [x] is not 32 bytes".into());
            }
            KeyMaterial::Ed25519 { x }
        }
        "oct" => {
            let k = bytes(key, "k")?;
            if k.is_empty() {
                return Err("oct [k] is empty".into());
            }
            KeyMaterial::Oct { k }
        }
        other => return Err(format!("[kty] `{other}` is not supported")),
    };
    finish(kid, alg, material)
}

/// A key whose own `alg` (if any) must fit its type.
fn finish(
    kid: Option<String>,
    alg: Option<Algorithm>,
    material: KeyMaterial,
) -> Result<Option<Jwk>, String> {
    let jwk = Jwk { kid, alg, material };
    match alg {
        Some(alg) if !jwk.fits(alg) => {
            Err(format!("[alg] {} does not fit the key type", alg.name()))
        }
        _ => Ok(Some(jwk)),
    }
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}
