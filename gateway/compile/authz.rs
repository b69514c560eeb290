//! AuthorizationPolicy -> `authz::Policy`: each rule's sources, operations
//! and conditions become the checks `authz` evaluates; every error is
//! reported, located at its field.

use std::sync::Arc;

use http::HeaderName;

use crate::authz::{Action, Attr, Check, Cidr, Pattern, Policy, Rule, Values};
use crate::config::{
    AuthorizationPolicySpec, AuthzCondition, AuthzOperation, AuthzSource, ConfigError, Resource,
};
use crate::jwt::claims::ClaimPath;

/// Compiles one AuthorizationPolicy document, reporting every error.
pub(crate) fn compile(
    resource: &Resource<AuthorizationPolicySpec>,
) -> Result<Policy, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let source = &resource.source;
    let mut error =
        |path: String, message: String| errors.push(ConfigError::new(source, path, message));
    let action = match resource.spec.action.as_deref().unwrap_or("ALLOW") {
        "ALLOW" => Action::Allow,
        "DENY" => Action::Deny,
        "AUDIT" => Action::Audit,
        "CUSTOM" => {
            error(
                "spec.action".into(),
                "CUSTOM (external authorization) is not supported".into(),
            );
            Action::Deny
        }
        other => {
            error(
                "spec.action".into(),
                format!("`{other}` is not one of ALLOW, DENY, AUDIT"),
            );
            Action::Deny
        }
    };
    let mut rules = Vec::new();
    for (i, rule) in resource.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let mut compiled = Rule::default();
        for (j, from) in rule.from.iter().enumerate() {
            compiled.from.push(source_checks(
                &from.source,
                &format!("{at}.from[{j}].source"),
                &mut error,
            ));
        }
        for (j, to) in rule.to.iter().enumerate() {
            compiled.to.push(operation_checks(
                &to.operation,
                &format!("{at}.to[{j}].operation"),
                &mut error,
            ));
        }
        for (j, cond) in rule.when.iter().enumerate() {
            compiled.when.extend(condition_checks(
                cond,
                &format!("{at}.when[{j}]"),
                &mut error,
            ));
        }
        rules.push(compiled);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let name: Arc<str> = resource.key().into();
    let result = match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Audit => "audit",
    };
    let counter = crate::metrics::get().authz_decision(&name, result);
    Ok(Policy {
        name,
        action,
        rules,
        counter,
    })
}

type Report<'e> = dyn FnMut(String, String) + 'e;

/// Parses each value with `parse`, reporting failures at `path[i]`.
fn parse_each<T>(
    values: &[String],
    path: &str,
    error: &mut Report<'_>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        match parse(v) {
            Ok(parsed) => out.push(parsed),
            Err(e) => error(format!("{path}[{i}]"), e),
        }
    }
    out
}

fn patterns(values: &[String], path: &str, error: &mut Report<'_>) -> Values {
    Values::Patterns(parse_each(values, path, error, Pattern::parse))
}

fn blocks(values: &[String], path: &str, error: &mut Report<'_>) -> Values {
    Values::Blocks(parse_each(values, path, error, Cidr::parse))
}

fn ports(values: &[String], path: &str, error: &mut Report<'_>) -> Values {
    Values::Ports(parse_each(values, path, error, |v| {
        v.parse::<u16>()
            .map_err(|_| format!("`{v}` is not a port number"))
    }))
}

/// Adds a check for each non-empty field.
fn push(
    checks: &mut Vec<Check>,
    attr: Attr,
    values: &[String],
    negate: bool,
    make: impl FnOnce() -> Values,
) {
    if !values.is_empty() {
        checks.push(Check {
            attr,
            values: make(),
            negate,
        });
    }
}

fn source_checks(s: &AuthzSource, path: &str, error: &mut Report<'_>) -> Vec<Check> {
    for (field, values) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
    ] {
        if !values.is_empty() {
            error(
                format!("{path}.{field}"),
                "is an mTLS peer identity, which clients of an edge gateway do not have: use requestPrincipals".into(),
            );
        }
    }
    let mut c = Vec::new();
    let p = |f: &str| format!("{path}.{f}");
    push(
        &mut c,
        Attr::RequestPrincipal,
        &s.request_principals,
        false,
        || patterns(&s.request_principals, &p("requestPrincipals"), error),
    );
    push(
        &mut c,
        Attr::RequestPrincipal,
        &s.not_request_principals,
        true,
        || patterns(&s.not_request_principals, &p("notRequestPrincipals"), error),
    );
    push(&mut c, Attr::SourceIp, &s.ip_blocks, false, || {
        blocks(&s.ip_blocks, &p("ipBlocks"), error)
    });
    push(&mut c, Attr::SourceIp, &s.not_ip_blocks, true, || {
        blocks(&s.not_ip_blocks, &p("notIpBlocks"), error)
    });
    push(&mut c, Attr::RemoteIp, &s.remote_ip_blocks, false, || {
        blocks(&s.remote_ip_blocks, &p("remoteIpBlocks"), error)
    });
    push(
        &mut c,
        Attr::RemoteIp,
        &s.not_remote_ip_blocks,
        true,
        || blocks(&s.not_remote_ip_blocks, &p("notRemoteIpBlocks"), error),
    );
    c
}

fn operation_checks(o: &AuthzOperation, path: &str, error: &mut Report<'_>) -> Vec<Check> {
    for (field, values) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        if let Some(i) = values.iter().position(|v| v.contains('{')) {
            error(
                format!("{path}.{field}[{i}]"),
                "path templates ({*}, {**}) are not supported".into(),
            );
        }
    }
    let mut c = Vec::new();
    let p = |f: &str| format!("{path}.{f}");
    push(&mut c, Attr::Host, &o.hosts, false, || {
        patterns(&o.hosts, &p("hosts"), error)
    });
    push(&mut c, Attr::Host, &o.not_hosts, true, || {
        patterns(&o.not_hosts, &p("notHosts"), error)
    });
    push(&mut c, Attr::Port, &o.ports, false, || {
        ports(&o.ports, &p("ports"), error)
    });
    push(&mut c, Attr::Port, &o.not_ports, true, || {
        ports(&o.not_ports, &p("notPorts"), error)
    });
    push(&mut c, Attr::Method, &o.methods, false, || {
        patterns(&o.methods, &p("methods"), error)
    });
    push(&mut c, Attr::Method, &o.not_methods, true, || {
        patterns(&o.not_methods, &p("notMethods"), error)
    });
    push(&mut c, Attr::Path, &o.paths, false, || {
        patterns(&o.paths, &p("paths"), error)
    });
    push(&mut c, Attr::Path, &o.not_paths, true, || {
        patterns(&o.not_paths, &p("notPaths"), error)
    });
    c
}

/// The `when` keys we evaluate. Istio ignores a key it does not know on
/// some proxies; we refuse it, because ignoring a condition widens access.
fn condition_attr(key: &str) -> Result<Attr, String> {
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix)
            .filter(|rest| rest.len() > 2 && rest.starts_with('[') && rest.ends_with(']'))
    };
    Ok(match key {
        "request.auth.principal" => Attr::RequestPrincipal,
        "request.auth.audiences" => Attr::Audience,
        "request.auth.presenter" => Attr::Presenter,
        "source.ip" => Attr::SourceIp,
        "remote.ip" => Attr::RemoteIp,
        "destination.port" => Attr::Port,
        _ => {
            if let Some(rest) = bracketed("request.auth.claims") {
                let path = ClaimPath::from_header_name(&format!("@request.auth.claims{rest}"))
                    .unwrap_or_else(|| Err("not a claim".into()))?;
                Attr::Claim(path)
            } else if let Some(rest) = bracketed("request.headers") {
                let name = &rest[1..rest.len() - 1];
                Attr::Header(
                    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("`{name}` is not a valid header name"))?,
                )
            } else {
                return Err(format!(
                    "`{key}` is not supported (request.auth.principal, request.auth.audiences, request.auth.presenter, \
                     request.auth.claims[name], request.headers[name], source.ip, remote.ip, destination.port)"
                ));
            }
        }
    })
}

fn condition_checks(cond: &AuthzCondition, path: &str, error: &mut Report<'_>) -> Vec<Check> {
    let attr = match condition_attr(&cond.key) {
        Ok(attr) => attr,
        Err(e) => {
            error(format!("{path}.key"), e);
            return Vec::new();
        }
    };
    if cond.values.is_empty() && cond.not_values.is_empty() {
        error(path.to_string(), "set values or notValues".into());
    }
    let parse = |values: &[String], at: &str, error: &mut Report<'_>| match attr {
        Attr::SourceIp | Attr::RemoteIp => blocks(values, at, error),
        Attr::Port => ports(values, at, error),
        _ => patterns(values, at, error),
    };
    let mut c = Vec::new();
    if !cond.values.is_empty() {
        let values = parse(&cond.values, &format!("{path}.values"), error);
        c.push(Check {
            attr: attr.clone(),
            values,
            negate: false,
        });
    }
    if !cond.not_values.is_empty() {
        let values = parse(&cond.not_values, &format!("{path}.notValues"), error);
        c.push(Check {
            attr,
            values,
            negate: true,
        });
    }
    c
}
