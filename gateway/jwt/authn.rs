//! Request authentication: find the token in the request, let its (not yet
//! trusted) issuer pick the rule, and validate it with that rule's keys.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::header::{HeaderName, AUTHORIZATION};
use http::HeaderMap;

use super::{parse, validate, Identity, JwtError, KeySet, Validation};

/// Where a key set is published: the JWKS refresher stores, requests load.
/// Empty until the first successful fetch.
pub type KeySlot = Arc<ArcSwapOption<KeySet>>;

/// Where a token may be carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// A header whose value starts with `prefix` (for `Authorization`, the
    /// scheme compares case-insensitively, as RFC 7235 says).
    Header { name: HeaderName, prefix: String },
    /// A query parameter.
    Param(String),
}

impl TokenLocation {
    /// Istio's default: `Authorization: Bearer <token>`, then `?access_token=`.
    pub fn defaults() -> Vec<TokenLocation> {
        vec![
            TokenLocation::Header {
                name: AUTHORIZATION,
                prefix: "Bearer ".to_string(),
            },
            TokenLocation::Param("access_token".to_string()),
        ]
    }
}

/// One `jwtRules` entry, compiled.
#[derive(Debug)]
pub struct Provider {
    pub issuer: String,
    pub validation: Validation,
    pub keys: KeySlot,
    pub locations: Vec<TokenLocation>,
    pub forward_original_token: bool,
}

/// A request's verified token and where it was found.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: Identity,
    pub location: TokenLocation,
    pub forward_original_token: bool,
}

/// Every rule of every RequestAuthentication that applies to the gateway.
#[derive(Debug, Default)]
pub struct Authenticator {
    providers: Vec<Provider>,
    /// The union of the providers' locations, each once, in rule order.
    locations: Vec<TokenLocation>,
}

impl Authenticator {
    pub fn new(providers: Vec<Provider>) -> Authenticator {
        let mut locations: Vec<TokenLocation> = Vec::new();
        for location in providers.iter().flat_map(|p| &p.locations) {
            if !locations.contains(location) {
                locations.push(location.clone());
            }
        }
        Authenticator {
            providers,
            locations,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// `Ok(None)`: no token anywhere (the request goes on without identity).
    /// A token that fails validation, or tokens at more than one location,
    /// is an error: a request never silently loses its credentials.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Result<Option<Authenticated>, JwtError> {
        let Some((token, location)) = self.find_token(headers, query)? else {
            return Ok(None);
        };
        let parsed = parse(token)?;
        let issuer = parsed
            .claims
            .iss
            .as_deref()
            .ok_or(JwtError::UnknownIssuer)?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.issuer == issuer && p.locations.contains(location))
            .ok_or(JwtError::UnknownIssuer)?;
        let keys = provider.keys.load();
        let identity = validate(parsed, keys.as_deref(), &provider.validation, now)?;
        Ok(Some(Authenticated {
            identity,
            location: location.clone(),
            forward_original_token: provider.forward_original_token,
        }))
    }

    fn find_token<'r>(
        &self,
        headers: &'r HeaderMap,
        query: Option<&'r str>,
    ) -> Result<Option<(&'r str, &TokenLocation)>, JwtError> {
        let mut found: Option<(&'r str, &TokenLocation)> = None;
        for location in &self.locations {
            for token in tokens_at(location, headers, query) {
                match found {
                    Some((first, _)) if first != token => return Err(JwtError::MultipleTokens),
                    Some(_) => {}
                    None => found = Some((token, location)),
                }
            }
        }
        Ok(found)
    }
}

fn tokens_at<'r>(
    location: &TokenLocation,
    headers: &'r HeaderMap,
    query: Option<&'r str>,
) -> Vec<&'r str> {
    match location {
        TokenLocation::Header { name, prefix } => headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| strip_prefix(name, v, prefix))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect(),
        TokenLocation::Param(param) => query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .filter(|(k, v)| k == param && !v.is_empty())
            .map(|(_, v)| v)
            .collect(),
    }
}

fn strip_prefix<'v>(name: &HeaderName, value: &'v str, prefix: &str) -> Option<&'v str> {
    if *name == AUTHORIZATION {
        let head = value.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix)
            .then(|| &value[prefix.len()..])
    } else {
        value.strip_prefix(prefix)
    }
}

/// Removes the token at `location` from a query string; `None` when nothing
/// is left of it.
pub fn strip_query_param(query: &str, param: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != param)
        .collect();
    let joined = kept.join("&");
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn authenticator() -> Authenticator {
        Authenticator::new(vec![Provider {
            issuer: "iss".into(),
            validation: Validation::default(),
            keys: KeySlot::default(),
            locations: TokenLocation::defaults(),
            forward_original_token: false,
        }])
    }

    #[test]
    fn no_token_is_no_identity() {
        let a = authenticator();
        assert!(a
            .authenticate(&HeaderMap::new(), Some("x=1"), 0)
            .unwrap()
            .is_none());
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcg=="));
        assert!(a.authenticate(&h, None, 0).unwrap().is_none());
    }

    #[test]
    fn tokens_in_two_locations_are_refused() {
        let a = authenticator();
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"));
        let err = a
            .authenticate(&h, Some("access_token=d.e.f"), 0)
            .unwrap_err();
        assert_eq!(err, JwtError::MultipleTokens);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let a = authenticator();
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer some.invalid.token"),
        );
        assert_eq!(
            a.authenticate(&h, None, 0).unwrap_err(),
            JwtError::HeaderBadJson
        );
    }

    #[test]
    fn a_token_whose_issuer_has_no_rule_is_refused() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let t = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"iss":"other"}"#)
        );
        let q = format!("access_token={t}");
        let err = authenticator()
            .authenticate(&HeaderMap::new(), Some(&q), 0)
            .unwrap_err();
        assert_eq!(err, JwtError::UnknownIssuer);
    }

    #[test]
    fn a_known_issuer_before_its_keys_arrive_is_a_fetch_failure() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let t = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"iss":"iss"}"#)
        );
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        assert_eq!(
            authenticator().authenticate(&h, None, 0).unwrap_err(),
            JwtError::JwksFetchFail
        );
    }

    #[test]
    fn stripping_the_token_keeps_other_parameters() {
        assert_eq!(
            strip_query_param("a=1&access_token=x&b=2", "access_token").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(strip_query_param("access_token=x", "access_token"), None);
    }
}
