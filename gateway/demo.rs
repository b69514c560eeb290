//! `claimgate demo`: Istio's task "JWT claim based routing" on one machine
//! with no network. It serves the task's YAML from `conf/jwt-claim-routing/`
//! with three changes a plain host needs, printed at start: the gateway
//! listens on `--port` instead of 80, the key set comes from a local origin
//! serving the task's `jwks.json` instead of GitHub, and `httpbin` is that
//! same local origin (an echo server, like httpbin's `/headers`).

use std::path::Path;

use crate::config::{self, Config, ConfigErrors};
use crate::origin::{self, Origin};

const FILES: &[(&str, &str)] = &[
    (
        "conf/jwt-claim-routing/gateway.yaml",
        include_str!("../conf/jwt-claim-routing/gateway.yaml"),
    ),
    (
        "conf/jwt-claim-routing/httpbin-service-entry.yaml",
        include_str!("../conf/jwt-claim-routing/httpbin-service-entry.yaml"),
    ),
    (
        "conf/jwt-claim-routing/request-authentication.yaml",
        include_str!("../conf/jwt-claim-routing/request-authentication.yaml"),
    ),
    (
        "conf/jwt-claim-routing/virtual-service.yaml",
        include_str!("../conf/jwt-claim-routing/virtual-service.yaml"),
    ),
];
const JWKS: &str = include_str!("../tests/fixtures/istio/jwks.json");
const TOKEN_GROUPS: &str = include_str!("../tests/fixtures/istio/groups-scope.jwt");
const TOKEN_NO_GROUPS: &str = include_str!("../tests/fixtures/istio/demo.jwt");

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo configuration does not load: {0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot start the local origin: {0}")]
    Origin(#[from] std::io::Error),
    #[error("{0}")]
    Start(#[from] crate::server::StartError),
}

/// The task's documents, as shipped in `conf/`.
pub fn task_config() -> Result<Config, ConfigErrors> {
    let mut config = Config::default();
    let mut errors = Vec::new();
    for (file, text) in FILES {
        match config::parse_str(Path::new(file), text) {
            Ok(part) => config.merge(part),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Runs the demo until interrupted.
pub fn run(port: u16, admin: &str) -> Result<(), DemoError> {
    let origin = origin::spawn(
        "127.0.0.1:0",
        Origin {
            name: "httpbin".into(),
            jwks: Some(JWKS.as_bytes().to_vec().into()),
        },
    )?;
    let mut config = task_config()?;
    for server in config
        .gateways
        .iter_mut()
        .flat_map(|g| g.spec.servers.iter_mut())
    {
        server.port.number = port;
        server.bind = Some("127.0.0.1".into());
    }
    for rule in config
        .request_authentications
        .iter_mut()
        .flat_map(|r| r.spec.jwt_rules.iter_mut())
    {
        rule.jwks_uri = Some(format!("http://{origin}/jwks.json"));
    }
    for entry in &mut config.service_entries {
        for port in &mut entry.spec.ports {
            port.target_port = Some(origin.port());
        }
    }
    let mut settings = config.settings();
    settings.admin = admin.to_string();
    config.settings = Some(config::Resource {
        source: config::Source {
            file: "<demo>".into(),
            document: 1,
        },
        api_version: "claimgate/v1".into(),
        metadata: config::Metadata {
            name: "demo".into(),
            ..Default::default()
        },
        spec: settings,
    });

    println!("{}", instructions(port, origin, admin));
    crate::server::run(config, crate::server::RunOptions::default())?;
    Ok(())
}

fn instructions(port: u16, origin: std::net::SocketAddr, admin: &str) -> String {
    let url = format!("http://127.0.0.1:{port}/headers");
    format!(
        r#"claimgate demo: Istio's "JWT claim based routing" task (conf/jwt-claim-routing/)
  gateway   http://127.0.0.1:{port}   (the task's Gateway, port 80 moved to {port})
  httpbin   http://{origin}   (local echo origin; also serves the task's jwks.json)
  admin     http://{admin}/ready

Try the task's four requests:

  # 1. no token: no route matches, the token is optional -> 404
  curl -s -o /dev/null -w "%{{http_code}}\n" {url}

  # 2. an invalid token -> 401
  curl -s -o /dev/null -w "%{{http_code}}\n" -H "Authorization: Bearer some.invalid.token" {url}

  # 3. a valid token with groups ["group1","group2"] -> 200, from httpbin
  curl -s -w "\n%{{http_code}}\n" -H "Authorization: Bearer {groups}" {url}

  # 4. a valid token without groups -> 404
  curl -s -o /dev/null -w "%{{http_code}}\n" -H "Authorization: Bearer {no_groups}" {url}
"#,
        groups = TOKEN_GROUPS.trim(),
        no_groups = TOKEN_NO_GROUPS.trim(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_task_config_compiles() {
        let config = task_config().unwrap();
        let shared = crate::compile::Shared::default();
        let snapshot = crate::compile::compile(&config, &shared).unwrap();
        assert_eq!(snapshot.listener_addrs(), vec!["0.0.0.0:80".to_string()]);
        assert_eq!(snapshot.clusters.len(), 1);
        assert_eq!(
            &*snapshot.clusters[0].name,
            "outbound|8000||httpbin.foo.svc.cluster.local"
        );
        assert_eq!(shared.jwks.sources().len(), 1);
    }
}
