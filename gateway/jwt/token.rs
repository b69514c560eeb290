//! Parsing a compact JWS (`header.payload.signature`) without trusting it.
//!
//! Parsing is strict: exactly three segments, unpadded base64url with no other
//! alphabet, JSON objects, and registered claims of the right JSON type. The
//! result is *unverified*; only `verify` turns it into an identity.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::{Algorithm, JwtError};

/// A token split and decoded, signature not yet checked.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    /// The payload segment, still base64url.
    pub payload_b64: &'a str,
    pub signature: Vec<u8>,
    pub claims: Claims,
}

/// The payload: the registered claims we check, already typed, and every
/// claim as JSON for routing and policies.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub aud: Vec<String>,
    pub all: Map<String, Value>,
}

pub fn parse(token: &str) -> Result<UnverifiedToken<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };
    let signing_input = &token.as_bytes()[..header.len() + 1 + payload.len()];
    let payload_b64 = payload;

    let header = decode_object(header, JwtError::HeaderBadBase64, JwtError::HeaderBadJson)?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => {
            Algorithm::from_name(alg).ok_or(JwtError::HeaderNotImplementedAlg)?
        }
        _ => return Err(JwtError::HeaderBadAlg),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtError::HeaderBadKid),
    };
    // No extension is understood, so any `crit` must be refused (RFC 7515 4.1.11).
    if header.contains_key("crit") {
        return Err(JwtError::HeaderCritUnsupported);
    }

    let all = decode_object(
        payload,
        JwtError::PayloadBadBase64,
        JwtError::PayloadBadJson,
    )?;
    let claims = Claims {
        iss: string_claim(&all, "iss", JwtError::PayloadIssNotString)?,
        sub: string_claim(&all, "sub", JwtError::PayloadSubNotString)?,
        exp: time_claim(&all, "exp", JwtError::PayloadExpNotInteger)?,
        nbf: time_claim(&all, "nbf", JwtError::PayloadNbfNotInteger)?,
        aud: audiences(&all)?,
        all,
    };
    time_claim(&claims.all, "iat", JwtError::PayloadIatNotInteger)?;

    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::SignatureBadBase64)?;
    Ok(UnverifiedToken {
        alg,
        kid,
        signing_input,
        payload_b64,
        signature,
        claims,
    })
}

fn decode_object(
    segment: &str,
    bad_base64: JwtError,
    bad_json: JwtError,
) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| bad_base64)?;
    super::json::parse_object(&bytes).ok_or(bad_json)
}

fn string_claim(
    claims: &Map<String, Value>,
    name: &str,
    error: JwtError,
) -> Result<Option<String>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(error),
    }
}

/// A NumericDate: a non-negative integer number of seconds (a fractional
/// value is truncated, as RFC 7519 allows non-integer values).
fn time_claim(
    claims: &Map<String, Value>,
    name: &str,
    error: JwtError,
) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                        Ok(Some(f as u64))
                    }
                    _ => Err(error),
                }
            }
        }
        Some(_) => Err(error),
    }
}

fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, JwtError> {
    match claims.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(JwtError::PayloadAudNotStringOrList),
            })
            .collect(),
        Some(_) => Err(JwtError::PayloadAudNotStringOrList),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    #[test]
    fn a_well_formed_token_parses_with_typed_claims() {
        let t = token(
            r#"{"alg":"RS256","kid":"k1"}"#,
            r#"{"iss":"i","sub":"s","exp":10,"nbf":5,"aud":["a","b"],"groups":["g"]}"#,
        );
        let parsed = parse(&t).unwrap();
        assert_eq!(parsed.alg, Algorithm::RS256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims.iss.as_deref(), Some("i"));
        assert_eq!(parsed.claims.exp, Some(10));
        assert_eq!(parsed.claims.aud, vec!["a", "b"]);
        assert_eq!(parsed.signature, b"sig");
        assert_eq!(
            parsed.signing_input,
            t.rsplit_once('.').unwrap().0.as_bytes()
        );
    }

    #[test]
    fn wrong_segment_counts_are_bad_format() {
        assert_eq!(parse("a.b").unwrap_err(), JwtError::BadFormat);
        assert_eq!(parse("a.b.c.d").unwrap_err(), JwtError::BadFormat);
        assert_eq!(parse("").unwrap_err(), JwtError::BadFormat);
    }

    #[test]
    fn the_istio_task_invalid_token_is_a_bad_header() {
        // `some` decodes to bytes that are not JSON.
        assert_eq!(
            parse("some.invalid.token").unwrap_err(),
            JwtError::HeaderBadJson
        );
    }

    #[test]
    fn padded_or_standard_alphabet_base64_is_refused() {
        let good = token(r#"{"alg":"RS256"}"#, r#"{"iss":"i"}"#);
        let (h, rest) = good.split_once('.').unwrap();
        assert_eq!(
            parse(&format!("{h}=.{rest}")).unwrap_err(),
            JwtError::HeaderBadBase64
        );
        let (pre, sig) = good.rsplit_once('.').unwrap();
        assert_eq!(
            parse(&format!("{pre}.{sig}+/")).unwrap_err(),
            JwtError::SignatureBadBase64
        );
    }

    #[test]
    fn header_must_name_a_supported_algorithm() {
        let none = token(r#"{"alg":"none"}"#, "{}");
        assert_eq!(parse(&none).unwrap_err(), JwtError::HeaderNotImplementedAlg);
        let missing = token(r#"{"typ":"JWT"}"#, "{}");
        assert_eq!(parse(&missing).unwrap_err(), JwtError::HeaderBadAlg);
        let number_kid = token(r#"{"alg":"RS256","kid":1}"#, "{}");
        assert_eq!(parse(&number_kid).unwrap_err(), JwtError::HeaderBadKid);
    }

    #[test]
    fn every_crit_header_is_refused() {
        let t = token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, "{}");
        assert_eq!(parse(&t).unwrap_err(), JwtError::HeaderCritUnsupported);
    }

    #[test]
    fn duplicate_claims_and_deep_nesting_are_invalid_json() {
        let dup = token(r#"{"alg":"RS256"}"#, r#"{"iss":"a","iss":"b"}"#);
        assert_eq!(parse(&dup).unwrap_err(), JwtError::PayloadBadJson);
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse(&token(r#"{"alg":"RS256"}"#, &deep)).unwrap_err(),
            JwtError::PayloadBadJson
        );
        let dup_header = token(r#"{"alg":"RS256","alg":"HS256"}"#, "{}");
        assert_eq!(parse(&dup_header).unwrap_err(), JwtError::HeaderBadJson);
    }

    #[test]
    fn none_is_never_an_algorithm_in_any_case() {
        for alg in ["none", "None", "NONE", "nOnE", ""] {
            let t = format!("{}.{}.", b64(&format!(r#"{{"alg":"{alg}"}}"#)), b64("{}"));
            assert_eq!(
                parse(&t).unwrap_err(),
                JwtError::HeaderNotImplementedAlg,
                "{alg}"
            );
        }
    }

    #[test]
    fn registered_claims_of_the_wrong_type_are_refused() {
        let cases = [
            (r#"{"iss":1}"#, JwtError::PayloadIssNotString),
            (r#"{"sub":true}"#, JwtError::PayloadSubNotString),
            (r#"{"exp":"10"}"#, JwtError::PayloadExpNotInteger),
            (r#"{"nbf":-1}"#, JwtError::PayloadNbfNotInteger),
            (r#"{"iat":[]}"#, JwtError::PayloadIatNotInteger),
            (r#"{"aud":[1]}"#, JwtError::PayloadAudNotStringOrList),
            (r#"[]"#, JwtError::PayloadBadJson),
        ];
        for (payload, want) in cases {
            let t = token(r#"{"alg":"ES256"}"#, payload);
            assert_eq!(parse(&t).unwrap_err(), want, "{payload}");
        }
    }
}
