//! Why a token was refused. The `message()` of each variant is Envoy's
//! (jwt_verify_lib's `getStatusString`), so tooling written against Istio's
//! gateway keeps working; `reason()` is the bounded metric/log label.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    HeaderNotImplementedAlg,
    HeaderBadKid,
    HeaderCritUnsupported,
    TooLarge,
    PayloadBadBase64,
    PayloadBadJson,
    PayloadIssNotString,
    PayloadSubNotString,
    PayloadIatNotInteger,
    PayloadNbfNotInteger,
    PayloadExpNotInteger,
    PayloadAudNotStringOrList,
    SignatureBadBase64,
    UnknownIssuer,
    Expired,
    NotYetValid,
    AudienceNotAllowed,
    KidAlgMismatch,
    VerificationFail,
    JwksFetchFail,
    MultipleTokens,
}

impl JwtError {
    /// Every variant, in declaration order (for tests and label lists).
    pub const ALL: [JwtError; 25] = [
        JwtError::BadFormat,
        JwtError::HeaderBadBase64,
        JwtError::HeaderBadJson,
        JwtError::HeaderBadAlg,
        JwtError::HeaderNotImplementedAlg,
        JwtError::HeaderBadKid,
        JwtError::HeaderCritUnsupported,
        JwtError::TooLarge,
        JwtError::PayloadBadBase64,
        JwtError::PayloadBadJson,
        JwtError::PayloadIssNotString,
        JwtError::PayloadSubNotString,
        JwtError::PayloadIatNotInteger,
        JwtError::PayloadNbfNotInteger,
        JwtError::PayloadExpNotInteger,
        JwtError::PayloadAudNotStringOrList,
        JwtError::SignatureBadBase64,
        JwtError::UnknownIssuer,
        JwtError::Expired,
        JwtError::NotYetValid,
        JwtError::AudienceNotAllowed,
        JwtError::KidAlgMismatch,
        JwtError::VerificationFail,
        JwtError::JwksFetchFail,
        JwtError::MultipleTokens,
    ];

    /// Envoy's text for this failure: the response body.
    pub fn message(self) -> &'static str {
        use JwtError::*;
        match self {
            BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            HeaderBadJson => "Jwt header is an invalid JSON",
            HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            HeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            HeaderBadKid => "Jwt header [kid] field is not a string",
            HeaderCritUnsupported => "Jwt header [crit] names an extension that is not supported",
            TooLarge => "Jwt is larger than the maximum size",
            PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            PayloadBadJson => "Jwt payload is an invalid JSON",
            PayloadIssNotString => "Jwt payload [iss] field is not a string",
            PayloadSubNotString => "Jwt payload [sub] field is not a string",
            PayloadIatNotInteger => "Jwt payload [iat] field is not an integer",
            PayloadNbfNotInteger => "Jwt payload [nbf] field is not an integer",
            PayloadExpNotInteger => "Jwt payload [exp] field is not an integer",
            PayloadAudNotStringOrList => "Jwt payload [aud] field is not a string or string list",
            SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            UnknownIssuer => "Jwt issuer is not configured",
            Expired => "Jwt is expired",
            NotYetValid => "Jwt not yet valid",
            AudienceNotAllowed => "Audiences in Jwt are not allowed",
            KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            VerificationFail => "Jwt verification fails",
            JwksFetchFail => "Jwks remote fetch is failed",
            MultipleTokens => "Found multiple Jwt tokens",
        }
    }

    /// A short, bounded label for metrics and logs.
    pub fn reason(self) -> &'static str {
        use JwtError::*;
        match self {
            BadFormat
            | TooLarge
            | HeaderCritUnsupported
            | HeaderBadBase64
            | HeaderBadJson
            | HeaderBadAlg
            | HeaderBadKid
            | HeaderNotImplementedAlg
            | PayloadBadBase64
            | PayloadBadJson
            | PayloadIssNotString
            | PayloadSubNotString
            | PayloadIatNotInteger
            | PayloadNbfNotInteger
            | PayloadExpNotInteger
            | PayloadAudNotStringOrList
            | SignatureBadBase64 => "malformed",
            UnknownIssuer => "unknown_issuer",
            Expired => "expired",
            NotYetValid => "not_yet_valid",
            AudienceNotAllowed => "audience",
            KidAlgMismatch => "unknown_kid",
            VerificationFail => "bad_signature",
            JwksFetchFail => "jwks_unavailable",
            MultipleTokens => "multiple_tokens",
        }
    }

    /// The HTTP status Envoy answers with: 403 for an audience mismatch,
    /// 401 for everything else.
    pub fn status(self) -> u16 {
        match self {
            JwtError::AudienceNotAllowed => 403,
            _ => 401,
        }
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for JwtError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_variant_once_in_order() {
        for (i, e) in JwtError::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "{e:?}");
        }
        // The last declared variant closes the list.
        assert_eq!(JwtError::MultipleTokens as usize + 1, JwtError::ALL.len());
    }
}
