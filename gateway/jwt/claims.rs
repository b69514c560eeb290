//! Paths into a token's claims, and the string forms a claim is matched in.

use serde_json::{Map, Value};

/// The header-name prefix Istio reserves for matching validated claims.
pub const CLAIM_PREFIX: &str = "@request.auth.claims";

/// Claims that are always read as space-delimited lists (`"scope": "read write"`).
pub const ALWAYS_SPACE_DELIMITED: &[&str] = &["scope", "permission"];

/// A token's top-level claims, sorted by name, in one exactly-sized
/// allocation: the token cache holds one per token, and a map would keep
/// room for eleven claims in each (about 400 bytes more per token).
/// Nested objects stay JSON values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimSet(Box<[(Box<str>, Value)]>);

impl ClaimSet {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Map<String, Value>> for ClaimSet {
    /// A `Map` iterates in name order, which `get` relies on.
    fn from(map: Map<String, Value>) -> ClaimSet {
        let mut claims: Vec<(Box<str>, Value)> = map
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
        claims.sort_by(|a, b| a.0.cmp(&b.0));
        ClaimSet(claims.into_boxed_slice())
    }
}

impl serde::Serialize for ClaimSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// A verified token's claims as routes and policies read them.
#[derive(Debug, Clone, Copy)]
pub struct ClaimView<'a> {
    pub claims: &'a ClaimSet,
    /// Top-level claims of this token's rule read as space-delimited lists
    /// (besides `scope` and `permission`).
    pub space_delimited: &'a [String],
}

/// A path into the claims: `groups`, or `a.b` / `[a][b]` for nested claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

/// `@request.auth.claims.a.b`, or `@request.auth.claims[a.b][c]` when a
/// segment holds a dot.
impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(CLAIM_PREFIX)?;
        if self.0.iter().any(|s| s.contains('.')) {
            for segment in &self.0 {
                write!(f, "[{segment}]")?;
            }
        } else {
            for segment in &self.0 {
                write!(f, ".{segment}")?;
            }
        }
        Ok(())
    }
}

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
        Some(ClaimPath::new(segments).map_err(|e| format!("`{name}`: {e}")))
    }

    /// The claim names, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// `a.b.c` as three segments (how `outputClaimToHeaders` names nested claims).
    pub fn dotted(name: &str) -> Result<ClaimPath, String> {
        ClaimPath::new(name.split('.').map(str::to_string).collect())
    }

    fn new(segments: Vec<String>) -> Result<ClaimPath, String> {
        if segments.is_empty() || segments.iter().any(String::is_empty) {
            return Err("empty claim name".into());
        }
        Ok(ClaimPath(segments))
    }

    pub fn lookup<'c>(&self, claims: &'c ClaimSet) -> Option<&'c Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = claims.get(first)?;
        for segment in rest {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }

    /// Whether `test` holds for any string form of the claim: a string (and,
    /// for a top-level claim named in `space_delimited`, each of its
    /// space-separated words), `true`/`false`, a number as JSON writes it, or
    /// any such element of a list.
    pub fn any_value(&self, view: ClaimView<'_>, test: impl Fn(&str) -> bool) -> bool {
        let space_delimited = view.space_delimited;
        let Some(value) = self.lookup(view.claims) else {
            return false;
        };
        let spaced = self.0.len() == 1
            && (ALWAYS_SPACE_DELIMITED.contains(&self.0[0].as_str())
                || space_delimited.contains(&self.0[0]));
        let scalar = |v: &Value| match v {
            Value::String(s) => {
                test(s) || (spaced && s.split(' ').any(|w| !w.is_empty() && test(w)))
            }
            Value::Bool(b) => test(if *b { "true" } else { "false" }),
            Value::Number(n) => test(&n.to_string()),
            _ => false,
        };
        match value {
            Value::Array(items) => items.iter().any(scalar),
            other => scalar(other),
        }
    }

    /// The claim as one header value: strings, numbers and bools only.
    pub fn header_value(&self, claims: &ClaimSet) -> Option<String> {
        match self.lookup(claims)? {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(name: &str) -> ClaimPath {
        ClaimPath::from_header_name(name).unwrap().unwrap()
    }

    fn has(claims: &Value, name: &str, want: &str, spaced: &[String]) -> bool {
        let claims = ClaimSet::from(claims.as_object().unwrap().clone());
        let view = ClaimView {
            claims: &claims,
            space_delimited: spaced,
        };
        path(name).any_value(view, |v| v == want)
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
        assert!(ClaimPath::from_header_name("@request.auth.claims.a..b")
            .unwrap()
            .is_err());
        assert!(ClaimPath::from_header_name("@request.auth.claims[]")
            .unwrap()
            .is_err());
    }

    #[test]
    fn strings_lists_nested_values_bools_and_numbers_match() {
        let c = json!({
            "groups": ["group1", "group2"], "team": {"name": "edge"}, "a.b": {"c": "dotted"},
            "admin": true, "level": 42, "ratio": 1.5, "mixed": [7, false, "x"], "obj": {"k": 1}
        });
        assert!(has(&c, "@request.auth.claims.groups", "group2", &[]));
        assert!(!has(&c, "@request.auth.claims.groups", "group3", &[]));
        assert!(has(&c, "@request.auth.claims.team.name", "edge", &[]));
        assert!(has(&c, "@request.auth.claims[a.b][c]", "dotted", &[]));
        assert!(has(&c, "@request.auth.claims.admin", "true", &[]));
        assert!(!has(&c, "@request.auth.claims.admin", "false", &[]));
        assert!(has(&c, "@request.auth.claims.level", "42", &[]));
        assert!(has(&c, "@request.auth.claims.ratio", "1.5", &[]));
        assert!(has(&c, "@request.auth.claims.mixed", "7", &[]));
        assert!(has(&c, "@request.auth.claims.mixed", "false", &[]));
        assert!(!has(&c, "@request.auth.claims.obj", "{\"k\":1}", &[]));
        assert!(!has(&c, "@request.auth.claims.missing", "x", &[]));
    }

    #[test]
    fn scope_permission_and_listed_claims_split_on_spaces() {
        let c = json!({"scope": "read write", "permission": "a b", "roles": "x y", "other": "p q"});
        assert!(has(&c, "@request.auth.claims.scope", "read", &[]));
        assert!(has(&c, "@request.auth.claims.scope", "read write", &[]));
        assert!(has(&c, "@request.auth.claims.permission", "b", &[]));
        assert!(!has(&c, "@request.auth.claims.roles", "x", &[]));
        assert!(has(
            &c,
            "@request.auth.claims.roles",
            "y",
            &["roles".to_string()]
        ));
        assert!(!has(
            &c,
            "@request.auth.claims.other",
            "p",
            &["roles".to_string()]
        ));
    }

    #[test]
    fn header_values_are_scalars_only() {
        let c = json!({"s": "v", "n": 3, "b": false, "l": ["x"], "o": {"k": "deep"}});
        let c = &ClaimSet::from(c.as_object().unwrap().clone());
        assert_eq!(
            ClaimPath::dotted("s").unwrap().header_value(c).as_deref(),
            Some("v")
        );
        assert_eq!(
            ClaimPath::dotted("n").unwrap().header_value(c).as_deref(),
            Some("3")
        );
        assert_eq!(
            ClaimPath::dotted("b").unwrap().header_value(c).as_deref(),
            Some("false")
        );
        assert_eq!(
            ClaimPath::dotted("o.k").unwrap().header_value(c).as_deref(),
            Some("deep")
        );
        assert_eq!(ClaimPath::dotted("l").unwrap().header_value(c), None);
        assert!(ClaimPath::dotted("a..b").is_err());
    }
}

#[cfg(test)]
mod claim_set_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_claim_set_finds_every_claim_and_serializes_as_the_object() {
        let object =
            json!({"sub": "u", "groups": ["a", "b"], "exp": 1, "aud": "x", "zz": {"k": 1}});
        let set = ClaimSet::from(object.as_object().unwrap().clone());
        for (name, value) in object.as_object().unwrap() {
            assert_eq!(set.get(name), Some(value), "{name}");
        }
        assert_eq!(set.get("missing"), None);
        assert_eq!(set.len(), 5);
        assert_eq!(serde_json::to_value(&set).unwrap(), object);
    }
}
