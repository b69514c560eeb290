//! String matchers (Istio's `StringMatch`) and JWT claim paths, compiled once
//! at load time.

use regex::Regex;
use serde_json::{Map, Value};

use crate::config::StringMatch;

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

/// Upper bound on a compiled regex, so that a config cannot make the
/// gateway allocate without limit.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl StringMatcher {
    /// Compiles `m`; `allow_present` says whether `{}` is meaningful here.
    /// With `ignore_case`, exact and prefix compare ASCII-case-insensitively
    /// and regexes are compiled case-insensitive.
    pub fn compile(
        m: &StringMatch,
        allow_present: bool,
        ignore_case: bool,
    ) -> Result<Self, String> {
        let set = [&m.exact, &m.prefix, &m.regex]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if set > 1 {
            return Err("set only one of exact, prefix, regex".into());
        }
        let fold = |s: &String| {
            if ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        Ok(match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), _, _) => StringMatcher::Exact(fold(e)),
            (_, Some(p), _) => StringMatcher::Prefix(fold(p)),
            (_, _, Some(r)) => StringMatcher::Regex(
                regex::RegexBuilder::new(&format!("^(?:{r})$"))
                    .case_insensitive(ignore_case)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("invalid regex `{r}`: {}", first_line(&e.to_string())))?,
            ),
            _ if allow_present => StringMatcher::Present,
            _ => return Err("set one of exact, prefix, regex".into()),
        })
    }

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

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The header-name prefix Istio reserves for matching validated claims.
pub const CLAIM_PREFIX: &str = "@request.auth.claims";

/// A path into the claims: `groups`, or `a.b` / `[a][b]` for nested claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// `None` when `name` is an ordinary header name. With Istio's rules: the
    /// prefix compares case-insensitively; `.` after it splits on dots;
    /// `[a][b]` splits on brackets (for claim names that contain dots).
    pub fn from_header_name(name: &str) -> Option<Result<ClaimPath, String>> {
        let head = name.get(..CLAIM_PREFIX.len())?;
        if !head.eq_ignore_ascii_case(CLAIM_PREFIX) {
            return None;
        }
        let rest = &name[CLAIM_PREFIX.len()..];
        let segments: Vec<String> = if let Some(dotted) = rest.strip_prefix('.') {
            dotted.split('.').map(str::to_string).collect()
        } else if rest.len() > 2 && rest.starts_with('[') && rest.ends_with(']') {
            rest[1..rest.len() - 1]
                .split("][")
                .map(str::to_string)
                .collect()
        } else {
            return Some(Err(format!(
                "`{name}` names no claim: use {CLAIM_PREFIX}.name, {CLAIM_PREFIX}.a.b or {CLAIM_PREFIX}[a.b][c]"
            )));
        };
        if segments.iter().any(String::is_empty) {
            return Some(Err(format!("`{name}` has an empty claim name")));
        }
        Some(Ok(ClaimPath(segments)))
    }

    pub fn lookup<'c>(&self, claims: &'c Map<String, Value>) -> Option<&'c Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = claims.get(first)?;
        for segment in rest {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }

    /// Whether the claim is a string that matches, or a list with a string
    /// element that matches.
    pub fn matches(&self, claims: &Map<String, Value>, m: &StringMatcher) -> bool {
        match self.lookup(claims) {
            Some(Value::String(s)) => m.matches(s),
            Some(Value::Array(items)) => items
                .iter()
                .any(|v| v.as_str().is_some_and(|s| m.matches(s))),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sm(exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>) -> StringMatch {
        StringMatch {
            exact: exact.map(Into::into),
            prefix: prefix.map(Into::into),
            regex: regex.map(Into::into),
        }
    }

    fn path(name: &str) -> ClaimPath {
        ClaimPath::from_header_name(name).unwrap().unwrap()
    }

    #[test]
    fn regexes_match_the_whole_value() {
        let m = StringMatcher::compile(&sm(None, None, Some("group[0-9]")), false, false).unwrap();
        assert!(m.matches("group1"));
        assert!(!m.matches("xgroup1"));
        assert!(!m.matches("group12"));
    }

    #[test]
    fn a_bad_regex_or_two_kinds_at_once_is_refused() {
        assert!(StringMatcher::compile(&sm(None, None, Some("(")), false, false).is_err());
        assert!(StringMatcher::compile(&sm(Some("a"), Some("b"), None), false, false).is_err());
        assert!(StringMatcher::compile(&sm(None, None, None), false, false).is_err());
        assert!(matches!(
            StringMatcher::compile(&sm(None, None, None), true, false),
            Ok(StringMatcher::Present)
        ));
    }

    #[test]
    fn ignore_case_folds_exact_and_prefix() {
        let m = StringMatcher::compile(&sm(None, Some("/Headers"), None), false, true).unwrap();
        assert!(m.matches_ignore_case("/HEADERS/x"));
        assert!(!m.matches_ignore_case("/head"));
    }

    #[test]
    fn claim_names_parse_as_istio_parses_them() {
        assert_eq!(
            path("@request.auth.claims.groups"),
            ClaimPath(vec!["groups".into()])
        );
        assert_eq!(
            path("@REQUEST.AUTH.CLAIMS.a.b"),
            ClaimPath(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            path("@request.auth.claims[a.b][c]"),
            ClaimPath(vec!["a.b".into(), "c".into()])
        );
        assert!(ClaimPath::from_header_name("x-user").is_none());
        assert!(ClaimPath::from_header_name("@request.auth.claims")
            .unwrap()
            .is_err());
        assert!(ClaimPath::from_header_name("@request.auth.claims.")
            .unwrap()
            .is_err());
        assert!(ClaimPath::from_header_name("@request.auth.claims[]")
            .unwrap()
            .is_err());
    }

    #[test]
    fn claims_match_strings_nested_values_and_list_elements() {
        let claims = json!({
            "groups": ["group1", "group2"],
            "team": {"name": "edge"},
            "a.b": {"c": "dotted"},
            "n": 42
        });
        let claims = claims.as_object().unwrap();
        let exact = |v: &str| StringMatcher::Exact(v.into());
        assert!(path("@request.auth.claims.groups").matches(claims, &exact("group2")));
        assert!(!path("@request.auth.claims.groups").matches(claims, &exact("group3")));
        assert!(path("@request.auth.claims.team.name").matches(claims, &exact("edge")));
        assert!(path("@request.auth.claims[team][name]").matches(claims, &exact("edge")));
        assert!(path("@request.auth.claims[a.b][c]").matches(claims, &exact("dotted")));
        assert!(!path("@request.auth.claims.missing").matches(claims, &StringMatcher::Present));
        assert!(!path("@request.auth.claims.team").matches(claims, &StringMatcher::Present));
    }
}
