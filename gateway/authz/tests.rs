//! Table-driven tests of the evaluator: every field, in its positive and
//! its `not` form, against a request that has it and one that does not.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::compile::authorization_policy as compile;
use crate::config::{parse_str, ConfigError};
use crate::jwt::ClaimSet;

fn policies(yaml: &str) -> Result<Authorizer, Vec<ConfigError>> {
    let config = parse_str(Path::new("authz.yaml"), yaml).map_err(|e| e.0)?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in &config.authorization_policies {
        match compile(p) {
            Ok(p) => out.push(p),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(Authorizer::new(out))
    } else {
        Err(errors)
    }
}

fn policy(action: &str, rules: &str) -> Authorizer {
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n  action: {action}\n  rules: {rules}\n"
    );
    policies(&yaml).unwrap_or_else(|e| panic!("{rules}: {e:?}"))
}

/// The request every case starts from; `tweak` changes one thing.
struct Req {
    method: &'static str,
    path: &'static str,
    host: &'static str,
    port: u16,
    headers: HeaderMap,
    source: Option<IpAddr>,
    remote: Option<IpAddr>,
    principal: Option<&'static str>,
    audiences: Vec<String>,
    claims: serde_json::Value,
    authenticated: bool,
}

impl Req {
    fn base() -> Req {
        let mut headers = HeaderMap::new();
        headers.insert("x-env", "prod".parse().unwrap());
        Req {
            method: "GET",
            path: "/api/items",
            host: "api.example.com",
            port: 8080,
            headers,
            source: Some("127.0.0.1".parse().unwrap()),
            remote: Some("203.0.113.7".parse().unwrap()),
            principal: Some("https://issuer.test/alice"),
            audiences: vec!["api".into()],
            claims: json!({"groups": ["group1", "group2"], "team": {"name": "edge"}, "admin": true, "azp": "web"}),
            authenticated: true,
        }
    }

    fn anonymous() -> Req {
        Req {
            principal: None,
            audiences: vec![],
            authenticated: false,
            ..Req::base()
        }
    }

    fn allowed_by(&self, a: &Authorizer) -> bool {
        self.with(|req| a.authorize(req).allowed)
    }

    fn with<T>(&self, f: impl FnOnce(&AuthzRequest<'_>) -> T) -> T {
        let claims = &ClaimSet::from(self.claims.as_object().unwrap().clone());
        let req = AuthzRequest {
            method: self.method,
            path: self.path,
            host: self.host,
            port: self.port,
            headers: &self.headers,
            source_ip: self.source,
            remote_ip: self.remote,
            principal: self.principal,
            audiences: &self.audiences,
            claims: self.authenticated.then_some(ClaimView {
                claims,
                space_delimited: &[],
            }),
        };
        f(&req)
    }
}

/// (rule YAML, does the base request match it?)
const FIELD_CASES: &[(&str, bool)] = &[
    ("[{from: [{source: {requestPrincipals: ['https://issuer.test/alice']}}]}]", true),
    ("[{from: [{source: {requestPrincipals: ['https://issuer.test/*']}}]}]", true),
    ("[{from: [{source: {requestPrincipals: ['*/alice']}}]}]", true),
    ("[{from: [{source: {requestPrincipals: ['*']}}]}]", true),
    ("[{from: [{source: {requestPrincipals: ['https://other.test/*']}}]}]", false),
    ("[{from: [{source: {notRequestPrincipals: ['*']}}]}]", false),
    ("[{from: [{source: {notRequestPrincipals: ['https://other.test/*']}}]}]", true),
    ("[{from: [{source: {ipBlocks: ['127.0.0.1/32']}}]}]", true),
    ("[{from: [{source: {ipBlocks: ['10.0.0.0/8']}}]}]", false),
    ("[{from: [{source: {notIpBlocks: ['10.0.0.0/8']}}]}]", true),
    ("[{from: [{source: {notIpBlocks: ['127.0.0.0/8']}}]}]", false),
    ("[{from: [{source: {remoteIpBlocks: ['203.0.113.0/24']}}]}]", true),
    ("[{from: [{source: {remoteIpBlocks: ['127.0.0.1']}}]}]", false),
    ("[{from: [{source: {notRemoteIpBlocks: ['203.0.113.0/24']}}]}]", false),
    ("[{to: [{operation: {hosts: ['api.example.com']}}]}]", true),
    ("[{to: [{operation: {hosts: ['*.EXAMPLE.com']}}]}]", true),
    ("[{to: [{operation: {hosts: ['other.example.com']}}]}]", false),
    ("[{to: [{operation: {notHosts: ['api.*']}}]}]", false),
    ("[{to: [{operation: {ports: ['8080']}}]}]", true),
    ("[{to: [{operation: {ports: ['80']}}]}]", false),
    ("[{to: [{operation: {notPorts: ['80']}}]}]", true),
    ("[{to: [{operation: {methods: ['GET', 'HEAD']}}]}]", true),
    ("[{to: [{operation: {methods: ['POST']}}]}]", false),
    ("[{to: [{operation: {notMethods: ['GET']}}]}]", false),
    ("[{to: [{operation: {paths: ['/api/*']}}]}]", true),
    ("[{to: [{operation: {paths: ['*/items']}}]}]", true),
    ("[{to: [{operation: {paths: ['/api']}}]}]", false),
    ("[{to: [{operation: {notPaths: ['/admin*']}}]}]", true),
    ("[{when: [{key: request.auth.principal, values: ['https://issuer.test/alice']}]}]", true),
    ("[{when: [{key: request.auth.principal, notValues: ['*']}]}]", false),
    ("[{when: [{key: request.auth.audiences, values: ['api']}]}]", true),
    ("[{when: [{key: request.auth.audiences, notValues: ['api']}]}]", false),
    ("[{when: [{key: request.auth.presenter, values: ['web']}]}]", true),
    ("[{when: [{key: request.auth.presenter, values: ['mobile']}]}]", false),
    ("[{when: [{key: 'request.auth.claims[groups]', values: ['group2']}]}]", true),
    ("[{when: [{key: 'request.auth.claims[groups]', values: ['group3']}]}]", false),
    ("[{when: [{key: 'request.auth.claims[groups]', notValues: ['group2']}]}]", false),
    ("[{when: [{key: 'request.auth.claims[groups]', notValues: ['group9']}]}]", true),
    ("[{when: [{key: 'request.auth.claims[team][name]', values: ['ed*']}]}]", true),
    ("[{when: [{key: 'request.auth.claims[admin]', values: ['true']}]}]", true),
    ("[{when: [{key: 'request.headers[x-env]', values: ['prod']}]}]", true),
    ("[{when: [{key: 'request.headers[X-Env]', notValues: ['prod']}]}]", false),
    ("[{when: [{key: source.ip, values: ['127.0.0.1']}]}]", true),
    ("[{when: [{key: source.ip, notValues: ['127.0.0.0/8']}]}]", false),
    ("[{when: [{key: remote.ip, values: ['203.0.113.7']}]}]", true),
    ("[{when: [{key: destination.port, values: ['8080']}]}]", true),
    ("[{when: [{key: destination.port, notValues: ['8080']}]}]", false),
    // Fields of one source AND; sources OR; rules OR.
    ("[{from: [{source: {requestPrincipals: ['*'], ipBlocks: ['10.0.0.0/8']}}]}]", false),
    ("[{from: [{source: {ipBlocks: ['10.0.0.0/8']}}, {source: {requestPrincipals: ['*']}}]}]", true),
    ("[{to: [{operation: {methods: ['POST']}}]}, {to: [{operation: {methods: ['GET']}}]}]", true),
    ("[{to: [{operation: {methods: ['GET']}}], when: [{key: 'request.headers[x-env]', values: ['dev']}]}]", false),
    ("[{}]", true),
    ("[]", false),
];

#[test]
fn every_field_in_its_positive_and_not_form() {
    for (rules, matches) in FIELD_CASES {
        // ALLOW: allowed exactly when the rule matches.
        assert_eq!(
            Req::base().allowed_by(&policy("ALLOW", rules)),
            *matches,
            "ALLOW {rules}"
        );
        // DENY: denied exactly when the rule matches.
        assert_eq!(
            Req::base().allowed_by(&policy("DENY", rules)),
            !*matches,
            "DENY {rules}"
        );
        // AUDIT: never changes the decision.
        assert!(
            Req::base().allowed_by(&policy("AUDIT", rules)),
            "AUDIT {rules}"
        );
    }
}

#[test]
fn a_rule_miss_is_reported_exactly_when_the_rule_does_not_match() {
    for (rules, matches) in FIELD_CASES {
        let a = policy("ALLOW", rules);
        let p = a.policies().next().unwrap();
        Req::base().with(|req| {
            let misses = p.rule_misses(req);
            assert_eq!(misses.iter().any(Option::is_none), *matches, "{rules}");
            assert_eq!(
                p.first_matching_rule(req),
                misses.iter().position(Option::is_none),
                "{rules}"
            );
        });
    }
}

#[test]
fn a_miss_names_the_field_as_the_policy_spells_it() {
    for (rules, expected) in [
        (
            "[{to: [{operation: {notPaths: ['/api/*']}}]}]",
            r#"to[0] notPaths ["/api/*"] does not hold"#,
        ),
        (
            "[{from: [{source: {ipBlocks: ['10.0.0.0/8']}}, {source: {notRequestPrincipals: ['*']}}]}]",
            r#"from[0] ipBlocks ["10.0.0.0/8"] does not hold; from[1] notRequestPrincipals ["*"] does not hold"#,
        ),
        (
            "[{when: [{key: 'request.auth.claims[team][name]', values: ['core']}]}]",
            r#"when request.auth.claims[team][name] values ["core"] does not hold"#,
        ),
        (
            "[{to: [{operation: {methods: ['GET']}}], when: [{key: 'request.headers[x-env]', notValues: ['prod']}]}]",
            r#"when request.headers[x-env] notValues ["prod"] does not hold"#,
        ),
    ] {
        let a = policy("DENY", rules);
        let p = a.policies().next().unwrap();
        let miss = Req::base().with(|req| p.rule_misses(req)[0].as_ref().map(|m| m.to_string()));
        assert_eq!(miss.as_deref(), Some(expected), "{rules}");
    }
}

#[test]
fn policies_are_listed_in_the_order_they_are_read() {
    let a = policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: audit, namespace: ns}\nspec: {action: AUDIT, rules: [{}]}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow, namespace: ns}\nspec: {rules: [{}]}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: ns}\nspec: {action: DENY, rules: []}\n",
    )
    .unwrap();
    let names: Vec<&str> = a.policies().map(|p| &*p.name).collect();
    assert_eq!(names, ["ns/deny", "ns/allow", "ns/audit"]);
}

#[test]
fn without_a_token_principal_and_claim_conditions_do_not_match() {
    let anon = Req::anonymous();
    assert!(!anon.allowed_by(&policy(
        "ALLOW",
        "[{from: [{source: {requestPrincipals: ['*']}}]}]"
    )));
    assert!(anon.allowed_by(&policy(
        "ALLOW",
        "[{from: [{source: {notRequestPrincipals: ['*']}}]}]"
    )));
    assert!(!anon.allowed_by(&policy(
        "DENY",
        "[{from: [{source: {notRequestPrincipals: ['*']}}]}]"
    )));
    assert!(!anon.allowed_by(&policy(
        "ALLOW",
        "[{when: [{key: 'request.auth.claims[groups]', values: ['*']}]}]"
    )));
}

#[test]
fn deny_beats_allow_and_an_unmatched_allow_denies() {
    let both = |deny: &str, allow: &str| {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny, namespace: ns}}\nspec:\n  action: DENY\n  rules: {deny}\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow, namespace: ns}}\nspec:\n  rules: {allow}\n"
        );
        policies(&yaml).unwrap()
    };
    let a = both(
        "[{when: [{key: 'request.auth.claims[groups]', values: ['group2']}]}]",
        "[{}]",
    );
    let req = Req::base();
    let decision = |a: &Authorizer| {
        let claims = &ClaimSet::from(req.claims.as_object().unwrap().clone());
        a.authorize(&AuthzRequest {
            method: req.method,
            path: req.path,
            host: req.host,
            port: req.port,
            headers: &req.headers,
            source_ip: req.source,
            remote_ip: req.remote,
            principal: req.principal,
            audiences: &req.audiences,
            claims: Some(ClaimView {
                claims,
                space_delimited: &[],
            }),
        })
    };
    let d = decision(&a);
    assert!(!d.allowed);
    assert_eq!(d.policy.as_deref(), Some("ns/deny"));

    let a = both(
        "[{when: [{key: 'request.auth.claims[groups]', values: ['nobody']}]}]",
        "[{to: [{operation: {methods: [POST]}}]}]",
    );
    let d = decision(&a);
    assert_eq!((d.allowed, d.policy), (false, None));

    let a = both("[]", "[{}]");
    let d = decision(&a);
    assert_eq!((d.allowed, d.policy.as_deref()), (true, Some("ns/allow")));

    // No policies at all: allowed.
    assert!(req.allowed_by(&Authorizer::default()));
}

#[test]
fn an_allow_policy_with_no_rules_allows_nothing() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: ns}\nspec: {}\n";
    assert!(!Req::base().allowed_by(&policies(yaml).unwrap()));
}

#[test]
fn audit_policies_are_reported_without_deciding() {
    let a = policy("AUDIT", "[{to: [{operation: {methods: [GET]}}]}]");
    let req = Req::base();
    let claims = &ClaimSet::from(req.claims.as_object().unwrap().clone());
    let d = a.authorize(&AuthzRequest {
        method: "GET",
        path: "/",
        host: "h",
        port: 1,
        headers: &req.headers,
        source_ip: None,
        remote_ip: None,
        principal: None,
        audiences: &[],
        claims: Some(ClaimView {
            claims,
            space_delimited: &[],
        }),
    });
    assert!(d.allowed);
    assert_eq!(d.audited, vec![Arc::<str>::from("ns/p")]);
}

#[test]
fn unsupported_keys_actions_and_fields_are_load_errors() {
    let cases = [
        (
            "CUSTOM",
            "[{}]",
            "spec.action",
            "CUSTOM (external authorization) is not supported",
        ),
        (
            "ALLOW",
            "[{when: [{key: request.time, values: ['x']}]}]",
            "spec.rules[0].when[0].key",
            "`request.time` is not supported",
        ),
        (
            "ALLOW",
            "[{when: [{key: 'request.auth.claims.groups', values: ['x']}]}]",
            "spec.rules[0].when[0].key",
            "not supported",
        ),
        (
            "ALLOW",
            "[{when: [{key: source.ip}]}]",
            "spec.rules[0].when[0]",
            "set values or notValues",
        ),
        (
            "ALLOW",
            "[{from: [{source: {principals: ['cluster.local/ns/a/sa/b']}}]}]",
            "spec.rules[0].from[0].source.principals",
            "mTLS",
        ),
        (
            "ALLOW",
            "[{from: [{source: {ipBlocks: ['10.0.0.0/99']}}]}]",
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "prefix length",
        ),
        (
            "ALLOW",
            "[{to: [{operation: {ports: ['http']}}]}]",
            "spec.rules[0].to[0].operation.ports[0]",
            "not a port number",
        ),
        (
            "ALLOW",
            "[{to: [{operation: {paths: ['/a/*/b']}}]}]",
            "spec.rules[0].to[0].operation.paths[0]",
            "only as a prefix or a suffix",
        ),
        (
            "ALLOW",
            "[{to: [{operation: {paths: ['/a/{*}']}}]}]",
            "spec.rules[0].to[0].operation.paths[0]",
            "templates",
        ),
        (
            "MAYBE",
            "[{}]",
            "spec.action",
            "not one of ALLOW, DENY, AUDIT",
        ),
    ];
    for (action, rules, path, message) in cases {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n  action: {action}\n  rules: {rules}\n"
        );
        let errors = policies(&yaml).expect_err(rules);
        assert!(
            errors
                .iter()
                .any(|e| e.path == path && e.message.contains(message)),
            "{rules}: {errors:?}"
        );
    }
}

#[test]
fn remote_ip_trusts_only_the_configured_hops() {
    let mut h = HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        "198.51.100.1, 203.0.113.9".parse().unwrap(),
    );
    let peer = Some("10.0.0.5".parse().unwrap());
    assert_eq!(remote_ip(&h, peer, 0), peer);
    assert_eq!(remote_ip(&h, peer, 1), Some("203.0.113.9".parse().unwrap()));
    assert_eq!(
        remote_ip(&h, peer, 2),
        Some("198.51.100.1".parse().unwrap())
    );
    assert_eq!(remote_ip(&h, peer, 3), peer);
    assert_eq!(remote_ip(&HeaderMap::new(), peer, 1), peer);
}

#[test]
fn patterns_are_istios() {
    assert!(Pattern::parse("*").unwrap().matches("x"));
    assert!(!Pattern::parse("*").unwrap().matches(""));
    assert!(Pattern::parse("a*").unwrap().matches("abc"));
    assert!(Pattern::parse("*c").unwrap().matches("abc"));
    assert!(!Pattern::parse("abc").unwrap().matches("abcd"));
    assert!(Pattern::parse("a*c").is_err());
}
