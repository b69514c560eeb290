//! `rewrite.uri` and `rewrite.uriRegexRewrite`, as Envoy applies Istio's
//! translation of them (`prefix_rewrite` and `regex_rewrite`).

use regex::Regex;

/// What part of the path a `match` entry matched, for a prefix rewrite:
/// Envoy swaps "the matched prefix (or path)" for the rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriSpan {
    /// A `prefix` match, or no `uri` condition (Envoy's prefix `/`): the
    /// first this many bytes.
    Prefix(usize),
    /// An `exact` or `regex` match: the whole path, without the query.
    Path,
}

/// How the path sent upstream is rewritten.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// `rewrite.uri`: the matched prefix (or path) is replaced.
    Prefix(String),
    /// `rewrite.uriRegexRewrite`: every match in the path (not the query)
    /// is replaced, capture groups substituted.
    Regex {
        pattern: Regex,
        /// In the `regex` crate's syntax (`${1}`), converted from RE2's (`\1`).
        substitution: String,
    },
}

/// Upper bound on a compiled rewrite regex, as for match regexes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl PathRewrite {
    /// `rewrite.uri`: it must be a path of its own.
    pub fn prefix(uri: &str) -> Result<PathRewrite, String> {
        check_path(uri)?;
        Ok(PathRewrite::Prefix(uri.to_string()))
    }

    /// `uriRegexRewrite`: an RE2 pattern (unanchored: every match is
    /// replaced) and a substitution where `\0`..`\9` name capture groups
    /// and `\\` is a backslash, as RE2 reads it.
    pub fn regex(pattern: &str, rewrite: &str) -> Result<PathRewrite, String> {
        if pattern.is_empty() {
            return Err("match must not be empty".into());
        }
        let compiled = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                let e = e.to_string();
                let e = e.lines().map(str::trim).filter(|l| !l.is_empty());
                format!(
                    "invalid regex `{pattern}`: {}",
                    e.collect::<Vec<_>>().join(" ")
                )
            })?;
        let groups = compiled.captures_len();
        let mut substitution = String::with_capacity(rewrite.len() + 8);
        let mut chars = rewrite.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('\\') => substitution.push('\\'),
                    Some(d @ '0'..='9') => {
                        let group = d as usize - '0' as usize;
                        if group >= groups {
                            return Err(format!(
                                "rewrite names group \\{group}, but `{pattern}` has {} group(s)",
                                groups - 1
                            ));
                        }
                        substitution.push_str(&format!("${{{group}}}"));
                    }
                    _ => {
                        return Err("rewrite: a backslash must start \\0 to \\9 or \\\\".to_string())
                    }
                },
                '$' => substitution.push_str("$$"),
                c => substitution.push(c),
            }
        }
        if substitution.is_empty() {
            return Err("rewrite must not be empty".into());
        }
        Ok(PathRewrite::Regex {
            pattern: compiled,
            substitution,
        })
    }

    /// The path and query to send upstream for `path_and_query` (as
    /// received), whose route matched `span` of it.
    pub fn apply(&self, path_and_query: &str, span: UriSpan) -> String {
        let (path, query) = match path_and_query.find('?') {
            Some(at) => path_and_query.split_at(at),
            None => (path_and_query, ""),
        };
        match self {
            PathRewrite::Prefix(with) => {
                let rest = match span {
                    UriSpan::Prefix(n) => path_and_query.get(n..).unwrap_or(query),
                    UriSpan::Path => query,
                };
                let mut out = String::with_capacity(with.len() + rest.len());
                out.push_str(with);
                out.push_str(rest);
                out
            }
            PathRewrite::Regex {
                pattern,
                substitution,
            } => {
                let mut out = pattern
                    .replace_all(path, substitution.as_str())
                    .into_owned();
                out.push_str(query);
                out
            }
        }
    }
}

/// A rewrite must itself be a valid request path.
fn check_path(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("must not be empty".into());
    }
    if uri.contains(['?', '#']) {
        return Err(format!("`{uri}` must be a path, without query or fragment"));
    }
    uri.parse::<http::uri::PathAndQuery>()
        .map(|_| ())
        .map_err(|_| format!("`{uri}` is not a valid path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_rewrite_swaps_the_matched_prefix_and_keeps_the_query() {
        let r = PathRewrite::prefix("/v2/").unwrap();
        assert_eq!(
            r.apply("/api/items?x=1", UriSpan::Prefix(5)),
            "/v2/items?x=1"
        );
        // Envoy's literal swap: a prefix without its slash keeps the rest's.
        let r = PathRewrite::prefix("/v2").unwrap();
        assert_eq!(r.apply("/api/items", UriSpan::Prefix(4)), "/v2/items");
        // No uri condition is Envoy's prefix `/`.
        assert_eq!(r.apply("/items", UriSpan::Prefix(1)), "/v2items");
    }

    #[test]
    fn an_exact_or_regex_match_has_its_whole_path_replaced() {
        let r = PathRewrite::prefix("/new").unwrap();
        assert_eq!(r.apply("/old/page?a=b", UriSpan::Path), "/new?a=b");
        assert_eq!(r.apply("/old/page", UriSpan::Path), "/new");
    }

    #[test]
    fn a_regex_rewrite_replaces_every_match_in_the_path_only() {
        let r = PathRewrite::regex("^/service/([^/]+)(/.*)$", "\\2/instance/\\1").unwrap();
        assert_eq!(
            r.apply("/service/foo/v1/api?q=/service/x", UriSpan::Path),
            "/v1/api/instance/foo?q=/service/x"
        );
        let r = PathRewrite::regex("one", "two").unwrap();
        assert_eq!(r.apply("/one/one/x", UriSpan::Path), "/two/two/x");
        // `$` is literal in RE2's substitutions.
        let r = PathRewrite::regex("a", "$1\\\\").unwrap();
        assert_eq!(r.apply("/a", UriSpan::Path), "/$1\\");
    }

    #[test]
    fn bad_rewrites_are_refused() {
        assert!(PathRewrite::regex("(", "x").is_err());
        assert!(PathRewrite::regex("a(b)", "\\2").is_err());
        assert!(PathRewrite::regex("a", "\\x").is_err());
        assert!(PathRewrite::regex("", "x").is_err());
        assert!(PathRewrite::prefix("/a?b").is_err());
        assert!(PathRewrite::prefix("/a b").is_err());
        assert!(PathRewrite::prefix("").is_err());
    }
}
