//! Request authentication: find the token in the request, let its (not yet
//! trusted) issuer pick the rule, and validate it with that rule's keys,
//! through the verified-token cache.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE};
use http::HeaderMap;

use super::claims::{ClaimPath, ClaimView};
use super::{parse, validate, JwtError, KeySet, TokenCache, Validation, VerifiedToken};
use crate::metrics::CounterSet;

/// Where a key set is published: the JWKS refresher stores, requests load.
/// Empty until the first successful fetch.
pub type KeySlot = Arc<ArcSwapOption<KeySet>>;

/// A remote key set that can be fetched again on demand, when a token names
/// a `kid` it does not have (key rotation at the identity provider).
#[async_trait::async_trait]
pub trait KeyRefetch: Send + Sync {
    /// `true` when a newer key set is in force afterwards.
    async fn refetch_unknown_kid(&self) -> bool;
}

/// The default largest token we look at, in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Where a token may be carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// A header whose value starts with `prefix` (for `Authorization`, the
    /// scheme compares case-insensitively, as RFC 7235 says; any other
    /// prefix must match exactly).
    Header { name: HeaderName, prefix: String },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// `header authorization (prefix "Bearer ")`, `query parameter access_token`,
/// `cookie session`.
impl std::fmt::Display for TokenLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenLocation::Header { name, prefix } if prefix.is_empty() => {
                write!(f, "header {name}")
            }
            TokenLocation::Header { name, prefix } => {
                write!(f, "header {name} (prefix {prefix:?})")
            }
            TokenLocation::Param(param) => write!(f, "query parameter {param}"),
            TokenLocation::Cookie(cookie) => write!(f, "cookie {cookie}"),
        }
    }
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

/// Headers a rule writes for the upstream from a verified token.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `outputPayloadToHeader`: the payload, base64url as in the token.
    pub payload: Option<HeaderName>,
    /// `outputClaimToHeaders`: one header per claim (strings, numbers, bools).
    pub claims: Vec<(HeaderName, ClaimPath)>,
}

/// One `jwtRules` entry, compiled.
#[derive(Debug)]
pub struct Provider {
    pub issuer: String,
    pub validation: Validation,
    pub keys: KeySlot,
    pub locations: Vec<TokenLocation>,
    pub forward_original_token: bool,
    pub outputs: Outputs,
    /// `spaceDelimitedClaims` (besides `scope` and `permission`).
    pub space_delimited: Vec<String>,
    /// For a `jwksUri`: fetches the set again when a `kid` is unknown.
    pub refetch: Option<Arc<dyn KeyRefetch>>,
}

impl std::fmt::Debug for dyn KeyRefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyRefetch")
    }
}

/// A request's verified token, the rule that accepted it and where it was.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub token: Arc<VerifiedToken>,
    /// Index into `Authenticator::providers()`.
    pub provider: usize,
    /// Index into `Authenticator::locations()`.
    pub location: usize,
    /// Found in the token cache (no signature checked this time).
    pub cached: bool,
}

/// A failed authentication, with the rule that was chosen when one was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthnError {
    pub error: JwtError,
    /// Index into `Authenticator::providers()`.
    pub provider: Option<usize>,
}

/// What one request's authentication comes to, for the metrics: the rule
/// (when one was chosen) and the result (`valid`, `cached` or the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub provider: Option<usize>,
    pub result: &'static str,
}

impl Outcome {
    /// `None` when the request had no token.
    pub fn of(result: &Result<Option<Authenticated>, AuthnError>) -> Option<Outcome> {
        match result {
            Ok(None) => None,
            Ok(Some(a)) => Some(Outcome {
                provider: Some(a.provider),
                result: if a.cached { "cached" } else { "valid" },
            }),
            Err(e) => Some(Outcome {
                provider: e.provider,
                result: e.error.reason(),
            }),
        }
    }
}

/// Every rule of every RequestAuthentication that applies to the gateway.
#[derive(Debug, Default)]
pub struct Authenticator {
    providers: Vec<Provider>,
    /// The union of the providers' locations, each once, in rule order.
    locations: Vec<TokenLocation>,
    /// `accepts[provider][location]`: whether the rule reads that location.
    accepts: Vec<Vec<bool>>,
    /// Every header any rule writes: removed from every request first, so a
    /// client can never send one of its own.
    output_headers: Vec<HeaderName>,
    cache: Arc<TokenCache>,
    max_token_bytes: usize,
    /// `claimgate_jwt_validations_total` of each provider's issuer.
    validations: Vec<Arc<CounterSet<&'static str>>>,
    /// The query parameters any rule reads a token from.
    token_params: Vec<String>,
}

/// Validation counters for tokens whose issuer no rule names.
fn unknown_issuer() -> &'static Arc<CounterSet<&'static str>> {
    static UNKNOWN: OnceLock<Arc<CounterSet<&'static str>>> = OnceLock::new();
    UNKNOWN.get_or_init(|| crate::metrics::validations("unknown"))
}

impl Authenticator {
    pub fn new(
        providers: Vec<Provider>,
        cache: Arc<TokenCache>,
        max_token_bytes: usize,
    ) -> Authenticator {
        let mut locations: Vec<TokenLocation> = Vec::new();
        let mut output_headers: Vec<HeaderName> = Vec::new();
        for p in &providers {
            for location in &p.locations {
                if !locations.contains(location) {
                    locations.push(location.clone());
                }
            }
            let names = p
                .outputs
                .payload
                .iter()
                .chain(p.outputs.claims.iter().map(|(h, _)| h));
            for name in names {
                if !output_headers.contains(name) {
                    output_headers.push(name.clone());
                }
            }
        }
        let accepts = providers
            .iter()
            .map(|p| locations.iter().map(|l| p.locations.contains(l)).collect())
            .collect();
        let validations = providers
            .iter()
            .map(|p| crate::metrics::validations(&p.issuer))
            .collect();
        let token_params = locations
            .iter()
            .filter_map(|l| match l {
                TokenLocation::Param(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        Authenticator {
            token_params,
            providers,
            locations,
            accepts,
            output_headers,
            cache,
            max_token_bytes,
            validations,
        }
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The query parameters a token is read from (redacted in logs).
    pub fn token_params(&self) -> &[String] {
        &self.token_params
    }

    pub fn locations(&self) -> &[TokenLocation] {
        &self.locations
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
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
        self.attempt(headers, query, now).map_err(|(e, _)| e)
    }

    /// `authenticate`, and when the token's `kid` is not in a remote key set,
    /// one refetch of that set (single-flight, rate-limited by the source)
    /// and one more attempt: a key rotated in at the identity provider is
    /// honoured on its first use.
    pub async fn authenticate_or_refetch(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Result<Option<Authenticated>, AuthnError> {
        let failed = |(error, provider)| AuthnError { error, provider };
        match self.attempt(headers, query, now) {
            Err((JwtError::KidAlgMismatch, Some(provider))) => {
                let unknown_kid = AuthnError {
                    error: JwtError::KidAlgMismatch,
                    provider: Some(provider),
                };
                let Some(refetch) = &self.providers[provider].refetch else {
                    return Err(unknown_kid);
                };
                if refetch.refetch_unknown_kid().await {
                    self.attempt(headers, query, now).map_err(failed)
                } else {
                    Err(unknown_kid)
                }
            }
            other => other.map_err(failed),
        }
    }

    /// Counts one request's outcome under its issuer.
    pub fn record(&self, outcome: Outcome) {
        let counters = outcome
            .provider
            .and_then(|p| self.validations.get(p))
            .unwrap_or_else(|| unknown_issuer());
        counters.inc(outcome.result);
    }

    /// The error carries the rule that was chosen, when one was.
    fn attempt(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Result<Option<Authenticated>, (JwtError, Option<usize>)> {
        let Some((token, location)) = self.find_token(headers, query).map_err(|e| (e, None))?
        else {
            return Ok(None);
        };
        if token.len() > self.max_token_bytes {
            return Err((JwtError::TooLarge, None));
        }
        if let Some(hit) = self.cached(token, location, now)? {
            return Ok(Some(hit));
        }

        let parsed = parse(token).map_err(|e| (e, None))?;
        let issuer = parsed
            .claims
            .iss
            .as_deref()
            .ok_or((JwtError::UnknownIssuer, None))?;
        let provider = self
            .provider_for(issuer, location)
            .ok_or((JwtError::UnknownIssuer, None))?;
        let rule = &self.providers[provider];
        let keys = rule.keys.load();
        let verified = validate(parsed, keys.as_ref(), &rule.validation, now)
            .map_err(|e| (e, Some(provider)))?;
        let verified = Arc::new(verified);
        self.cache.insert(token, verified.clone());
        Ok(Some(Authenticated {
            token: verified,
            provider,
            location,
            cached: false,
        }))
    }

    /// A cache hit that still holds: same key set, still in time, audience
    /// still allowed by the current rule. `Ok(None)` sends the token down the
    /// full path.
    fn cached(
        &self,
        token: &str,
        location: usize,
        now: u64,
    ) -> Result<Option<Authenticated>, (JwtError, Option<usize>)> {
        let Some(hit) = self.cache.get(token) else {
            return Ok(None);
        };
        let Some(provider) = self.provider_for(hit.issuer(), location) else {
            return Ok(None);
        };
        let rule = &self.providers[provider];
        let same_keys = rule
            .keys
            .load()
            .as_ref()
            .is_some_and(|k| Arc::ptr_eq(k, &hit.keys));
        if !same_keys {
            return Ok(None);
        }
        if let Err(e) = rule.validation.check(hit.exp, hit.nbf, &hit.aud, now) {
            if e == JwtError::Expired {
                self.cache.remove(token);
            }
            return Err((e, Some(provider)));
        }
        Ok(Some(Authenticated {
            token: hit,
            provider,
            location,
            cached: true,
        }))
    }

    /// The rule for a token of `issuer` found at `location` (an index into
    /// `locations()`): the rule of that issuer, if it reads that location.
    pub fn provider_for(&self, issuer: &str, location: usize) -> Option<usize> {
        (0..self.providers.len())
            .find(|&i| self.providers[i].issuer == issuer && self.accepts[i][location])
    }

    /// The token of the request and the index of its location; `Ok(None)`
    /// when there is none, `MultipleTokens` when two locations disagree.
    pub fn find_token<'r>(
        &self,
        headers: &'r HeaderMap,
        query: Option<&'r str>,
    ) -> Result<Option<(&'r str, usize)>, JwtError> {
        let mut found: Option<(&'r str, usize)> = None;
        let mut differ = false;
        for (i, location) in self.locations.iter().enumerate() {
            visit_tokens(location, headers, query, |token| {
                match found {
                    Some((first, _)) => differ = first != token,
                    None => found = Some((token, i)),
                }
                !differ
            });
            if differ {
                return Err(JwtError::MultipleTokens);
            }
        }
        Ok(found)
    }

    /// Whether the location at `index` (into `locations()`) holds a token
    /// in this request.
    pub fn holds_token(&self, index: usize, headers: &HeaderMap, query: Option<&str>) -> bool {
        let mut holds = false;
        if let Some(location) = self.locations.get(index) {
            visit_tokens(location, headers, query, |_| {
                holds = true;
                false
            });
        }
        holds
    }

    /// The claims of `authn` as matchers read them.
    pub fn claims<'a>(&'a self, authn: &'a Authenticated) -> ClaimView<'a> {
        ClaimView {
            claims: &authn.token.claims,
            space_delimited: &self.providers[authn.provider].space_delimited,
        }
    }

    /// Every header name a rule may write; strip them from every request.
    pub fn output_headers(&self) -> &[HeaderName] {
        &self.output_headers
    }

    /// The headers the accepting rule writes for `authn`. The payload header
    /// re-reads the token from the (downstream) request it was found in.
    pub fn outputs(
        &self,
        authn: &Authenticated,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let outputs = &self.providers[authn.provider].outputs;
        let mut out = Vec::new();
        if let Some(name) = &outputs.payload {
            let mut token = None;
            visit_tokens(&self.locations[authn.location], headers, query, |t| {
                token = Some(t);
                false
            });
            if let Some(payload) = token.and_then(|t| t.split('.').nth(1)) {
                if let Ok(value) = HeaderValue::from_str(payload) {
                    out.push((name.clone(), value));
                }
            }
        }
        for (name, claim) in &outputs.claims {
            let value = claim.header_value(&authn.token.claims);
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                out.push((name.clone(), value));
            }
        }
        out
    }
}

/// Calls `each` with every token at `location`, in order, until it
/// returns `false`. Nothing is allocated: this runs on every request.
fn visit_tokens<'r>(
    location: &TokenLocation,
    headers: &'r HeaderMap,
    query: Option<&'r str>,
    mut each: impl FnMut(&'r str) -> bool,
) {
    match location {
        TokenLocation::Header { name, prefix } => {
            for value in headers.get_all(name) {
                let token = value
                    .to_str()
                    .ok()
                    .and_then(|v| strip_prefix(name, v, prefix))
                    .map(str::trim);
                if let Some(token) = token.filter(|t| !t.is_empty()) {
                    if !each(token) {
                        return;
                    }
                }
            }
        }
        TokenLocation::Param(param) => {
            let pairs = query.into_iter().flat_map(|q| q.split('&'));
            for (key, value) in pairs.filter_map(|pair| pair.split_once('=')) {
                if key == param && !value.is_empty() && !each(value) {
                    return;
                }
            }
        }
        TokenLocation::Cookie(cookie) => {
            let pairs = headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='));
            for (key, value) in pairs {
                if key == cookie && !value.is_empty() && !each(value.trim_matches('"')) {
                    return;
                }
            }
        }
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

/// Removes parameter `param` from a query string; `None` when nothing is left.
pub fn strip_query_param(query: &str, param: &str) -> Option<String> {
    strip_pairs(query.split('&'), "&", param)
}

/// Removes cookie `name` from a `Cookie` header value; `None` when nothing is left.
pub fn strip_cookie(value: &str, name: &str) -> Option<String> {
    strip_pairs(value.split(';').map(str::trim), "; ", name)
}

fn strip_pairs<'a>(
    pairs: impl Iterator<Item = &'a str>,
    separator: &str,
    name: &str,
) -> Option<String> {
    let kept: Vec<&str> = pairs
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    let joined = kept.join(separator);
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn provider(locations: Vec<TokenLocation>) -> Provider {
        Provider {
            issuer: "iss".into(),
            validation: Validation::default(),
            keys: KeySlot::default(),
            locations,
            forward_original_token: false,
            outputs: Outputs::default(),
            space_delimited: vec![],
            refetch: None,
        }
    }

    fn authenticator() -> Authenticator {
        Authenticator::new(
            vec![provider(TokenLocation::defaults())],
            Arc::default(),
            DEFAULT_MAX_TOKEN_BYTES,
        )
    }

    fn unsigned(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn no_token_is_no_identity() {
        let a = authenticator();
        assert!(a
            .authenticate(&HeaderMap::new(), Some("x=1"), 0)
            .unwrap()
            .is_none());
        let h = headers(&[("authorization", "Basic dXNlcg==")]);
        assert!(a.authenticate(&h, None, 0).unwrap().is_none());
    }

    #[test]
    fn tokens_in_two_locations_are_refused() {
        let h = headers(&[("authorization", "Bearer a.b.c")]);
        let err = authenticator()
            .authenticate(&h, Some("access_token=d.e.f"), 0)
            .unwrap_err();
        assert_eq!(err, JwtError::MultipleTokens);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_but_other_prefixes_are_exact() {
        let h = headers(&[("authorization", "bearer some.invalid.token")]);
        assert_eq!(
            authenticator().authenticate(&h, None, 0).unwrap_err(),
            JwtError::HeaderBadJson
        );

        let custom = TokenLocation::Header {
            name: HeaderName::from_static("x-jwt"),
            prefix: "Token ".into(),
        };
        let a = Authenticator::new(
            vec![provider(vec![custom])],
            Arc::default(),
            DEFAULT_MAX_TOKEN_BYTES,
        );
        let lower = headers(&[("x-jwt", "token some.invalid.token")]);
        assert!(a.authenticate(&lower, None, 0).unwrap().is_none());
        let exact = headers(&[("x-jwt", "Token some.invalid.token")]);
        assert_eq!(
            a.authenticate(&exact, None, 0).unwrap_err(),
            JwtError::HeaderBadJson
        );
    }

    #[test]
    fn cookies_are_a_location() {
        let a = Authenticator::new(
            vec![provider(vec![TokenLocation::Cookie("session".into())])],
            Arc::default(),
            DEFAULT_MAX_TOKEN_BYTES,
        );
        let h = headers(&[("cookie", "a=1; session=some.invalid.token; b=2")]);
        assert_eq!(
            a.authenticate(&h, None, 0).unwrap_err(),
            JwtError::HeaderBadJson
        );
    }

    #[test]
    fn a_token_whose_issuer_has_no_rule_is_refused() {
        let q = format!("access_token={}", unsigned(r#"{"iss":"other"}"#));
        let err = authenticator()
            .authenticate(&HeaderMap::new(), Some(&q), 0)
            .unwrap_err();
        assert_eq!(err, JwtError::UnknownIssuer);
    }

    #[test]
    fn a_known_issuer_before_its_keys_arrive_is_a_fetch_failure() {
        let h = headers(&[(
            "authorization",
            &format!("Bearer {}", unsigned(r#"{"iss":"iss"}"#)),
        )]);
        assert_eq!(
            authenticator().authenticate(&h, None, 0).unwrap_err(),
            JwtError::JwksFetchFail
        );
    }

    #[test]
    fn an_oversized_token_is_refused_before_parsing() {
        let big = format!("Bearer {}", "a".repeat(DEFAULT_MAX_TOKEN_BYTES + 1));
        let h = headers(&[("authorization", &big)]);
        assert_eq!(
            authenticator().authenticate(&h, None, 0).unwrap_err(),
            JwtError::TooLarge
        );
    }

    /// An HS256 token over `payload`, and a key set holding its secret.
    fn hs256(secret: &[u8], payload: &str) -> (String, KeySet) {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            input.as_bytes(),
        );
        let jwks = format!(
            r#"{{"keys":[{{"kty":"oct","k":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(secret)
        );
        (
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())),
            KeySet::from_json(jwks.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn a_cached_token_stops_counting_when_its_key_set_changes() {
        let (token, keys) = hs256(b"first secret", r#"{"iss":"iss","exp":1000}"#);
        let a = authenticator();
        a.providers[0].keys.store(Some(Arc::new(keys)));
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        let first = a.authenticate(&h, None, 500).unwrap().unwrap();
        assert_eq!(a.cache().len(), 1);
        let again = a.authenticate(&h, None, 500).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first.token, &again.token),
            "the second use is a cache hit"
        );

        let (_, rotated) = hs256(b"another secret", "{}");
        a.providers[0].keys.store(Some(Arc::new(rotated)));
        assert_eq!(
            a.authenticate(&h, None, 500).unwrap_err(),
            JwtError::VerificationFail
        );
    }

    #[test]
    fn a_cached_token_expires_and_leaves_the_cache() {
        let (token, keys) = hs256(b"secret", r#"{"iss":"iss","exp":1000}"#);
        let a = authenticator();
        a.providers[0].keys.store(Some(Arc::new(keys)));
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        assert!(a.authenticate(&h, None, 1_000).unwrap().is_some());
        assert_eq!(
            a.authenticate(&h, None, 1_061).unwrap_err(),
            JwtError::Expired
        );
        assert!(a.cache().is_empty());
    }

    #[test]
    fn invalid_tokens_are_never_cached() {
        let (token, _) = hs256(b"secret", r#"{"iss":"iss"}"#);
        let (_, other) = hs256(b"not the secret", "{}");
        let a = authenticator();
        a.providers[0].keys.store(Some(Arc::new(other)));
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(
            a.authenticate(&h, None, 0).unwrap_err(),
            JwtError::VerificationFail
        );
        assert!(a.cache().is_empty());
    }

    #[test]
    fn a_cached_token_is_checked_against_the_current_audiences() {
        let (token, keys) = hs256(b"secret", r#"{"iss":"iss","aud":"old"}"#);
        let keys = Arc::new(keys);
        let cache = Arc::new(TokenCache::new(10));
        let with_audiences = |aud: &str| {
            let mut p = provider(TokenLocation::defaults());
            p.validation.audiences = vec![aud.to_string()];
            p.keys.store(Some(keys.clone()));
            Authenticator::new(vec![p], cache.clone(), DEFAULT_MAX_TOKEN_BYTES)
        };
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        assert!(with_audiences("old")
            .authenticate(&h, None, 0)
            .unwrap()
            .is_some());
        assert_eq!(cache.len(), 1);
        let reloaded = with_audiences("new");
        assert_eq!(
            reloaded.authenticate(&h, None, 0).unwrap_err(),
            JwtError::AudienceNotAllowed
        );
    }

    #[test]
    fn stripping_keeps_the_other_parameters_and_cookies() {
        assert_eq!(
            strip_query_param("a=1&access_token=x&b=2", "access_token").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(strip_query_param("access_token=x", "access_token"), None);
        assert_eq!(
            strip_cookie("a=1; session=x;b=2", "session").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_cookie("session=x", "session"), None);
    }
}
