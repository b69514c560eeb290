//! RequestAuthentication: the JWT providers and their rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderName;

use crate::config::{parse_duration, Config, JwtRule, Source};
use crate::jwks::JwksRegistry;
use crate::jwt::authn::{KeyRefetch, Outputs};
use crate::jwt::{Authenticator, KeySet, Provider, TokenLocation, Validation};
use crate::routing::ClaimPath;

use super::{Compiler, Shared};

/// The default `timeout` of a `jwksUri` fetch.
pub(super) const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

impl Compiler {
    pub(super) fn authenticator(&mut self, config: &Config, shared: &Shared) -> Authenticator {
        let mut providers: Vec<Provider> = Vec::new();
        let mut issuers: HashMap<String, String> = HashMap::new();
        for ra in &config.request_authentications {
            for (k, rule) in ra.spec.jwt_rules.iter().enumerate() {
                let path = format!("spec.jwtRules[{k}]");
                if let Some(first) = issuers.get(&rule.issuer) {
                    let message =
                        format!("issuer `{}` is already configured at {first}", rule.issuer);
                    self.error(&ra.source, format!("{path}.issuer"), message);
                    continue;
                }
                if let Some(provider) = self.provider(&ra.source, &path, rule, &shared.jwks) {
                    issuers.insert(rule.issuer.clone(), format!("{} {path}", ra.source));
                    providers.push(provider);
                }
            }
        }
        Authenticator::new(
            providers,
            shared.tokens.clone(),
            self.settings.max_token_bytes,
        )
    }

    pub(super) fn provider(
        &mut self,
        source: &Source,
        path: &str,
        rule: &JwtRule,
        jwks: &JwksRegistry,
    ) -> Option<Provider> {
        let before = self.errors.len();
        if rule.issuer.is_empty() {
            self.error(source, format!("{path}.issuer"), "must not be empty");
        }
        let timeout = match rule.timeout.as_deref().map(parse_duration) {
            None => DEFAULT_JWKS_TIMEOUT,
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                self.error(source, format!("{path}.timeout"), "must be more than zero");
                DEFAULT_JWKS_TIMEOUT
            }
            Some(Err(e)) => {
                self.error(source, format!("{path}.timeout"), e);
                DEFAULT_JWKS_TIMEOUT
            }
        };
        let mut refetch = None;
        let keys = match (&rule.jwks, &rule.jwks_uri) {
            (Some(_), Some(_)) => {
                self.error(source, path, "set one of jwks and jwksUri, not both");
                None
            }
            (None, None) => {
                self.error(source, path, "one of jwks and jwksUri is required");
                None
            }
            (Some(inline), None) => match KeySet::from_json(inline.as_bytes()) {
                Ok(keys) => Some(Arc::new(ArcSwapOption::from_pointee(keys))),
                Err(e) => {
                    self.error(source, format!("{path}.jwks"), e.to_string());
                    None
                }
            },
            (None, Some(uri)) => {
                if uri.starts_with("http://") || uri.starts_with("https://") {
                    let source = jwks.source(uri, timeout);
                    self.jwks_uris.insert(uri.clone());
                    refetch = Some(source.clone() as Arc<dyn KeyRefetch>);
                    Some(source.slot.clone())
                } else {
                    self.error(
                        source,
                        format!("{path}.jwksUri"),
                        "must be an http:// or https:// URL",
                    );
                    None
                }
            }
        };
        let mut locations = Vec::new();
        for (i, h) in rule.from_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => locations.push(TokenLocation::Header {
                    name,
                    prefix: h.prefix.clone().unwrap_or_default(),
                }),
                Err(_) => self.error(
                    source,
                    format!("{path}.fromHeaders[{i}].name"),
                    "not a valid header name",
                ),
            }
        }
        for (i, p) in rule.from_params.iter().enumerate() {
            if p.is_empty() {
                self.error(
                    source,
                    format!("{path}.fromParams[{i}]"),
                    "must not be empty",
                );
            }
            locations.push(TokenLocation::Param(p.clone()));
        }
        for (i, c) in rule.from_cookies.iter().enumerate() {
            if c.is_empty() {
                self.error(
                    source,
                    format!("{path}.fromCookies[{i}]"),
                    "must not be empty",
                );
            }
            locations.push(TokenLocation::Cookie(c.clone()));
        }
        let mut outputs = Outputs::default();
        if let Some(name) = &rule.output_payload_to_header {
            match output_header(name) {
                Ok(h) => outputs.payload = Some(h),
                Err(e) => self.error(source, format!("{path}.outputPayloadToHeader"), e),
            }
        }
        for (i, o) in rule.output_claim_to_headers.iter().enumerate() {
            let at = format!("{path}.outputClaimToHeaders[{i}]");
            match (output_header(&o.header), ClaimPath::dotted(&o.claim)) {
                (Ok(h), Ok(claim)) => outputs.claims.push((h, claim)),
                (Err(e), _) => self.error(source, format!("{at}.header"), e),
                (_, Err(e)) => self.error(source, format!("{at}.claim"), e),
            }
        }
        if locations.is_empty() {
            locations = TokenLocation::defaults();
        }
        if self.errors.len() != before {
            return None;
        }
        Some(Provider {
            issuer: rule.issuer.clone(),
            validation: Validation {
                audiences: rule.audiences.clone(),
                clock_skew: self.settings.clock_skew,
            },
            keys: keys?,
            locations,
            forward_original_token: rule.forward_original_token,
            outputs,
            space_delimited: rule.space_delimited_claims.clone(),
            refetch,
        })
    }
}

/// A header a rule writes: a valid name, and not one that would let a token
/// rewrite how the request is routed or framed.
pub(super) fn output_header(name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    const RESERVED: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "authorization",
        "cookie",
    ];
    if RESERVED.contains(&header.as_str()) {
        return Err(format!("`{name}` cannot be written from a token"));
    }
    Ok(header)
}
