//! JWT validation: parse -> choose key -> verify -> check claims, in the
//! spirit of Envoy's jwt_verify_lib. `now` is always a parameter.

pub mod authn;
mod error;
mod keys;
mod token;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use authn::{Authenticated, Authenticator, KeySlot, Provider, TokenLocation};
pub use error::JwtError;
pub use keys::{Algorithm, Curve, Jwk, JwksError, KeyMaterial, KeySet};
pub use token::{parse, Claims, UnverifiedToken};

/// What a rule requires of a token once its issuer is known.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Accepted `aud` values, any-of. Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (default 60).
    pub clock_skew: u64,
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            audiences: Vec::new(),
            clock_skew: 60,
        }
    }
}

/// A verified token's subject and claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub claims: Arc<Map<String, Value>>,
}

impl Identity {
    /// `iss/sub`, Istio's request principal.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }
}

/// Checks an already-parsed token whose issuer picked `validation` and
/// `keys` (`None`: the key set has not been fetched yet). The order of the
/// checks is Envoy's, so a token answers with the same message there and here.
pub fn validate(
    token: UnverifiedToken<'_>,
    keys: Option<&KeySet>,
    validation: &Validation,
    now: u64,
) -> Result<Identity, JwtError> {
    let claims = token.claims;
    if let Some(exp) = claims.exp {
        if now > exp.saturating_add(validation.clock_skew) {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = claims.nbf {
        if now.saturating_add(validation.clock_skew) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if !validation.audiences.is_empty()
        && !claims.aud.iter().any(|a| validation.audiences.contains(a))
    {
        return Err(JwtError::AudienceNotAllowed);
    }
    let keys = keys.ok_or(JwtError::JwksFetchFail)?;
    keys.verify(
        token.alg,
        token.kid.as_deref(),
        token.signing_input,
        &token.signature,
    )?;
    Ok(Identity {
        issuer: claims.iss.unwrap_or_default(),
        subject: claims.sub.unwrap_or_default(),
        claims: Arc::new(claims.all),
    })
}
