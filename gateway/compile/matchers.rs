//! Istio's `StringMatch` -> `routing::StringMatcher`, compiled once at load
//! time.

use crate::config::StringMatch;
use crate::routing::StringMatcher;

/// Upper bound on a compiled regex, so that a config cannot make the
/// gateway allocate without limit.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `m`; `allow_present` says whether `{}` is meaningful here.
/// With `ignore_case`, exact and prefix compare ASCII-case-insensitively
/// and regexes are compiled case-insensitive.
pub(crate) fn string_matcher(
    m: &StringMatch,
    allow_present: bool,
    ignore_case: bool,
) -> Result<StringMatcher, String> {
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
    // Istio reads `regex: "*"` (not a regex) as "present".
    if allow_present && m.exact.is_none() && m.prefix.is_none() && m.regex.as_deref() == Some("*") {
        return Ok(StringMatcher::Present);
    }
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

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StringMatch;

    fn sm(exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>) -> StringMatch {
        StringMatch {
            exact: exact.map(Into::into),
            prefix: prefix.map(Into::into),
            regex: regex.map(Into::into),
        }
    }

    #[test]
    fn regexes_match_the_whole_value() {
        let m = string_matcher(&sm(None, None, Some("group[0-9]")), false, false).unwrap();
        assert!(m.matches("group1"));
        assert!(!m.matches("xgroup1"));
        assert!(!m.matches("group12"));
    }

    #[test]
    fn a_bad_regex_or_two_kinds_at_once_is_refused() {
        assert!(string_matcher(&sm(None, None, Some("(")), false, false).is_err());
        assert!(string_matcher(&sm(Some("a"), Some("b"), None), false, false).is_err());
        assert!(string_matcher(&sm(None, None, None), false, false).is_err());
        assert!(matches!(
            string_matcher(&sm(None, None, None), true, false),
            Ok(StringMatcher::Present)
        ));
    }

    #[test]
    fn a_star_regex_means_present_where_presence_is_allowed() {
        let star = sm(None, None, Some("*"));
        assert!(matches!(
            string_matcher(&star, true, false),
            Ok(StringMatcher::Present)
        ));
        assert!(string_matcher(&star, false, false).is_err());
    }

    #[test]
    fn ignore_case_folds_exact_and_prefix() {
        let m = string_matcher(&sm(None, Some("/Headers"), None), false, true).unwrap();
        assert!(m.matches_ignore_case("/HEADERS/x"));
        assert!(!m.matches_ignore_case("/head"));
    }
}
