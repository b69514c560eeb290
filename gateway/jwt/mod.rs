//! JWT validation: parse -> choose key -> verify -> check claims, in the
//! spirit of Envoy's jwt_verify_lib. `now` is always a parameter.

pub mod authn;
mod cache;
pub mod claims;
mod error;
mod json;
mod keys;
mod token;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use claims::ClaimSet;

pub use authn::{Authenticated, Authenticator, KeySlot, Provider, TokenLocation};
pub use cache::TokenCache;
pub use error::JwtError;
pub use keys::{Algorithm, Curve, Jwk, JwksError, KeyMaterial, KeySet};
pub use token::{parse, Claims, UnverifiedToken};

/// What a rule requires of a token once its issuer is known.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl Validation {
    /// The time and audience checks, in Envoy's order. Cheap: a cached
    /// token runs them again on every use, against the current rule.
    pub fn check(
        &self,
        exp: Option<u64>,
        nbf: Option<u64>,
        aud: &[String],
        now: u64,
    ) -> Result<(), JwtError> {
        if exp.is_some_and(|exp| now > exp.saturating_add(self.clock_skew)) {
            return Err(JwtError::Expired);
        }
        if nbf.is_some_and(|nbf| now.saturating_add(self.clock_skew) < nbf) {
            return Err(JwtError::NotYetValid);
        }
        if !self.audiences.is_empty() && !aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(JwtError::AudienceNotAllowed);
        }
        Ok(())
    }
}

/// A token whose signature has been verified: what the cache holds and what
/// routes and policies read. Claims stay in the JSON form they were parsed
/// into, so matchers never parse again. Kept small: the cache holds many.
#[derive(Debug)]
pub struct VerifiedToken {
    /// `iss/sub` (Istio's request principal); `iss` is its first `issuer_len` bytes.
    principal: String,
    issuer_len: usize,
    pub claims: ClaimSet,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub aud: Vec<String>,
    /// The key set that verified it: when the issuer's set changes, the
    /// cached verification no longer counts.
    pub keys: Arc<KeySet>,
}

impl VerifiedToken {
    pub fn new(
        issuer: &str,
        subject: &str,
        claims: Map<String, Value>,
        keys: Arc<KeySet>,
    ) -> VerifiedToken {
        VerifiedToken {
            principal: format!("{issuer}/{subject}"),
            issuer_len: issuer.len(),
            claims: claims.into(),
            exp: None,
            nbf: None,
            aud: Vec::new(),
            keys,
        }
    }

    /// `iss/sub`, Istio's request principal.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    pub fn issuer(&self) -> &str {
        &self.principal[..self.issuer_len]
    }

    pub fn subject(&self) -> &str {
        &self.principal[self.issuer_len + 1..]
    }
}

/// Checks an already-parsed token whose issuer picked `validation` and
/// `keys` (`None`: the key set has not been fetched yet). The order of the
/// checks is Envoy's, so a token answers with the same message there and here.
pub fn validate(
    token: UnverifiedToken<'_>,
    keys: Option<&Arc<KeySet>>,
    validation: &Validation,
    now: u64,
) -> Result<VerifiedToken, JwtError> {
    let claims = token.claims;
    validation.check(claims.exp, claims.nbf, &claims.aud, now)?;
    let keys = keys.ok_or(JwtError::JwksFetchFail)?;
    keys.verify(
        token.alg,
        token.kid.as_deref(),
        token.signing_input,
        &token.signature,
    )?;
    let issuer = claims.iss.as_deref().unwrap_or_default();
    let subject = claims.sub.as_deref().unwrap_or_default();
    let mut verified = VerifiedToken::new(issuer, subject, claims.all, keys.clone());
    verified.exp = claims.exp;
    verified.nbf = claims.nbf;
    verified.aud = claims.aud;
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_not_before_honour_the_skew_exactly() {
        let v = Validation {
            audiences: vec![],
            clock_skew: 60,
        };
        let exp = Some(1_000);
        assert_eq!(v.check(exp, None, &[], 1_060), Ok(()));
        assert_eq!(v.check(exp, None, &[], 1_061), Err(JwtError::Expired));
        assert_eq!(v.check(exp, None, &[], 1_059), Ok(()));
        let nbf = Some(1_000);
        assert_eq!(v.check(None, nbf, &[], 940), Ok(()));
        assert_eq!(v.check(None, nbf, &[], 939), Err(JwtError::NotYetValid));
        assert_eq!(v.check(None, nbf, &[], 941), Ok(()));
    }

    #[test]
    fn audiences_are_any_of_and_unchecked_when_empty() {
        let v = Validation {
            audiences: vec!["a".into(), "b".into()],
            clock_skew: 0,
        };
        assert_eq!(v.check(None, None, &["x".into(), "b".into()], 0), Ok(()));
        assert_eq!(
            v.check(None, None, &["x".into()], 0),
            Err(JwtError::AudienceNotAllowed)
        );
        assert_eq!(
            v.check(None, None, &[], 0),
            Err(JwtError::AudienceNotAllowed)
        );
        assert_eq!(Validation::default().check(None, None, &[], 0), Ok(()));
    }
}
