//! String matchers (Istio's `StringMatch`, compiled once at load time by
//! `compile/matchers.rs`) and JWT claim paths.

use regex::Regex;

/// A compiled `StringMatch`.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    /// Anchored at both ends: Envoy matches regexes against the whole value.
    Regex(Regex),
    /// `{}`: the value is present, whatever it is.
    Present,
}

impl StringMatcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(e) => value == e,
            StringMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StringMatcher::Regex(r) => r.is_match(value),
            StringMatcher::Present => true,
        }
    }

    /// `matches` for a matcher compiled with `ignore_case`.
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(e) => value.eq_ignore_ascii_case(e),
            StringMatcher::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            StringMatcher::Regex(r) => r.is_match(value),
            StringMatcher::Present => true,
        }
    }
}

/// `exact "v"`, `prefix "v"`, `regex "v"` (as written, without the
/// anchors added at compile time) or `present` (`{}`).
impl std::fmt::Display for StringMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StringMatcher::Exact(e) => write!(f, "exact {e:?}"),
            StringMatcher::Prefix(p) => write!(f, "prefix {p:?}"),
            StringMatcher::Regex(r) => {
                let text = r.as_str();
                let text = text
                    .strip_prefix("^(?:")
                    .and_then(|t| t.strip_suffix(")$"))
                    .unwrap_or(text);
                write!(f, "regex {text:?}")
            }
            StringMatcher::Present => f.write_str("present"),
        }
    }
}
