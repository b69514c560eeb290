//! `claimgate check`: every error at once, each with file and field path.

mod support;

use support::*;

#[test]
fn check_reports_every_error_with_file_and_field_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), gateway_yaml(8080)).unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: typo, namespace: foo}
spec:
  hosts: [typo.foo.svc.cluster.local]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
  ports: [{number: 80, name: http}]
  exportToo: ["."]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s, namespace: foo}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: foo}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - match:
    - uri: {regex: "/users/(["}
    route: [{destination: {host: nowhere, port: {number: 8000}}}]
"#,
    )
    .unwrap();
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, Some(1));
    let file = dir.path().join("broken.yaml");
    let file = file.display();
    for expected in [
        format!("{file}: document 1: spec.exportToo: unknown field `exportToo`"),
        format!("{file}: document 2: kind: unknown or unsupported kind `Sidecar`"),
        format!("{file}: document 3: spec.http[0].match[0].uri: invalid regex `/users/([`"),
        format!(
            "{file}: document 3: spec.http[0].route[0].destination.host: no ServiceEntry defines host `nowhere.foo.svc.cluster.local`"
        ),
    ] {
        assert!(stderr.contains(&expected), "missing `{expected}` in:\n{stderr}");
    }
    assert!(stderr.contains(": 4 error(s)"), "{stderr}");
}

#[test]
fn check_accepts_the_shipped_task_config() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/jwt-claim-routing");
    let (code, stdout, stderr) = check(&conf);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("ok (4 files; listeners 0.0.0.0:80; 1 routes; 1 clusters; 1 JWT issuers)"),
        "{stdout}"
    );
}

#[test]
fn run_refuses_a_broken_config_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.yaml"), "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {servers: [{port: {number: 0x}, hosts: ['*']}]}\n").unwrap();
    let out = claimgate()
        .arg("run")
        .arg("--config")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("x.yaml: document 1: spec.servers[0].port.number"),
        "{stderr}"
    );
}
