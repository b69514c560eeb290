//! TLS to the upstream: a DestinationRule's `trafficPolicy.tls` (Istio's
//! `ClientTLSSettings`), its PEM files read and checked when the
//! configuration is compiled, and applied to each `HttpPeer`.
//!
//! What Pingora 0.9's rustls connector can do decides what is accepted:
//! it sends one name as SNI and verifies the certificate against that same
//! name (its `alternative_cn` is read by the OpenSSL/BoringSSL connectors
//! only), so `subjectAltNames` is refused; it has no revocation lists, so
//! `caCrl` is refused. It also skips every check when the SNI is empty,
//! which is why a peer here always carries a name.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::protocols::tls::CaType;
use pingora::tls::{CertificateDer, CryptoProvider, PrivateKeyDer, RootCertStore, ServerName};
use pingora::upstreams::peer::{HttpPeer, Scheme};
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};

use crate::config::ClientTlsSettings;

/// A compiled `trafficPolicy.tls` (SIMPLE or MUTUAL; DISABLE compiles to
/// none). Part of the cluster's identity: equal while the settings and the
/// contents of the files they read are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// `sni`: the name sent and verified. `None`: the name of the request's
    /// host (after `rewrite.authority`), as Istio's automatic SNI and SAN
    /// validation do.
    pub sni: Option<String>,
    /// False with `insecureSkipVerify: true`: neither the chain nor the name
    /// is checked.
    pub verify: bool,
    /// `caCertificates` (or the credential's `ca.crt`); `None`: the
    /// system's roots, as Istio does without `caCertificates`.
    pub ca: Option<Loaded<Arc<CaType>>>,
    /// MUTUAL: the certificate chain and key presented to the upstream.
    pub client: Option<Loaded<Arc<CertKey>>>,
    /// Pingora's `group_key` of the peers: its connection pool keys on the
    /// address, SNI and verification flags but not on the CA, so peers of
    /// settings that differ otherwise never share a pooled connection.
    group: u64,
}

/// Material read from PEM files: compared (and hashed) by the files and a
/// SHA-256 of their contents, so a reload that finds new contents builds a
/// new cluster.
#[derive(Clone)]
pub struct Loaded<T> {
    pub files: Vec<PathBuf>,
    digest: [u8; 32],
    pub value: T,
}

impl<T> PartialEq for Loaded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files && self.digest == other.digest
    }
}

impl<T> Eq for Loaded<T> {}

impl<T> Hash for Loaded<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.files.hash(state);
        self.digest.hash(state);
    }
}

impl<T> std::fmt::Debug for Loaded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("files", &self.files)
            .field("sha256", &hex(&self.digest[..8]))
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(contents: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for c in contents {
        ctx.update(&(c.len() as u64).to_be_bytes());
        ctx.update(c);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The request needs a name for the handshake and has none that can be one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoServerName;

impl UpstreamTls {
    /// Makes `peer` a TLS peer: the SNI (`sni`, else `host`), the CA, the
    /// client certificate, verification, and the pool's group. `host` is
    /// the request's host without port.
    pub fn secure(&self, peer: &mut HttpPeer, host: &str) -> Result<(), NoServerName> {
        let name = match &self.sni {
            Some(sni) => sni.clone(),
            None => server_name(host).ok_or(NoServerName)?,
        };
        peer.scheme = Scheme::HTTPS;
        peer.sni = name;
        peer.group_key = self.group;
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = self.ca.as_ref().map(|ca| ca.value.clone());
        peer.client_cert_key = self.client.as_ref().map(|c| c.value.clone());
        Ok(())
    }

    /// Every file read, for the reload's file watch.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.ca
            .iter()
            .flat_map(|c| &c.files)
            .chain(self.client.iter().flat_map(|c| &c.files))
    }
}

/// `host` as a TLS server name (a DNS name or an IP address, which rustls
/// verifies against the certificate's IP names and sends no SNI for), or
/// `None`: empty, or not a name. Pingora's connector needs a name, and
/// would verify nothing for an empty one.
pub fn server_name(host: &str) -> Option<String> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    ServerName::try_from(host).ok().map(|_| host.to_string())
}

/// Reads and checks `tls` of a DestinationRule. `Ok(None)`: DISABLE (or
/// no mode). Errors are (field path under `tls`, message).
pub fn client_tls(
    tls: &ClientTlsSettings,
    credentials_dir: Option<&Path>,
) -> Result<Option<UpstreamTls>, Vec<(String, String)>> {
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut error = |field: &str, message: String| errors.push((field.to_string(), message));
    if tls.subject_alt_names.is_some() {
        error(
            "subjectAltNames",
            "is not supported: Pingora 0.9's rustls connector verifies the upstream certificate against the SNI name only; set `sni` to a name the certificate carries".into(),
        );
    }
    if tls.ca_crl.is_some() {
        error(
            "caCrl",
            "is not supported: Pingora 0.9's rustls connector does not check revocation lists"
                .into(),
        );
    }
    let mutual = match tls.mode.as_deref() {
        None | Some("DISABLE") => {
            let set = [
                ("clientCertificate", tls.client_certificate.is_some()),
                ("privateKey", tls.private_key.is_some()),
                ("caCertificates", tls.ca_certificates.is_some()),
                ("credentialName", tls.credential_name.is_some()),
                ("sni", tls.sni.is_some()),
                ("insecureSkipVerify", tls.insecure_skip_verify.is_some()),
            ];
            for (field, _) in set.iter().filter(|(_, set)| *set) {
                error(
                    field,
                    format!(
                        "applies to mode SIMPLE or MUTUAL, and the mode is {}",
                        tls.mode.as_deref().unwrap_or("DISABLE (Istio's default)")
                    ),
                );
            }
            return if errors.is_empty() {
                Ok(None)
            } else {
                Err(errors)
            };
        }
        Some("SIMPLE") => false,
        Some("MUTUAL") => true,
        Some("ISTIO_MUTUAL") => {
            error(
                "mode",
                "`ISTIO_MUTUAL` is not supported: it presents Istio's mesh certificates, and there is no mesh here; use MUTUAL with clientCertificate and privateKey".into(),
            );
            return Err(errors);
        }
        Some(other) => {
            error(
                "mode",
                format!("`{other}` is not a TLS mode (DISABLE, SIMPLE, MUTUAL)"),
            );
            return Err(errors);
        }
    };
    let verify = !tls.insecure_skip_verify.unwrap_or(false);
    if !verify && tls.ca_certificates.is_some() {
        error(
            "caCertificates",
            "is never used with insecureSkipVerify: true (nothing is verified): remove one".into(),
        );
    }
    if let Some(sni) = &tls.sni {
        if server_name(sni).as_deref() != Some(sni.as_str()) {
            error(
                "sni",
                format!("`{sni}` is not a server name (a DNS name or an IP address)"),
            );
        }
    }
    if !mutual {
        for (field, set) in [
            ("clientCertificate", tls.client_certificate.is_some()),
            ("privateKey", tls.private_key.is_some()),
        ] {
            if set {
                error(field, "applies to mode MUTUAL only".into());
            }
        }
    }
    // Where each file comes from: (field path, file).
    let mut ca_file = tls
        .ca_certificates
        .as_ref()
        .map(|f| ("caCertificates", PathBuf::from(f)));
    let mut pair = match (&tls.client_certificate, &tls.private_key) {
        (Some(cert), Some(key)) => Some((
            ("clientCertificate", PathBuf::from(cert)),
            ("privateKey", PathBuf::from(key)),
        )),
        (Some(_), None) if mutual => {
            error("privateKey", "required with clientCertificate".into());
            None
        }
        (None, Some(_)) if mutual => {
            error("clientCertificate", "required with privateKey".into());
            None
        }
        (None, None) if mutual && tls.credential_name.is_none() => {
            error(
                "clientCertificate",
                "mode MUTUAL needs clientCertificate and privateKey (or credentialName)".into(),
            );
            None
        }
        _ => None,
    };
    if let Some(name) = &tls.credential_name {
        let given = tls.ca_certificates.is_some()
            || tls.client_certificate.is_some()
            || tls.private_key.is_some();
        if given {
            error(
                "credentialName",
                "give credentialName or the file paths (caCertificates, clientCertificate, privateKey), not both".into(),
            );
        } else if name.is_empty() || name.contains('/') || name.starts_with('.') {
            error(
                "credentialName",
                format!("`{name}` is not a credential name"),
            );
        } else if let Some(dir) = credentials_dir {
            let folder = dir.join(name);
            let ca = folder.join("ca.crt");
            if mutual {
                pair = Some((
                    ("credentialName", folder.join("tls.crt")),
                    ("credentialName", folder.join("tls.key")),
                ));
                // MUTUAL: the credential's ca.crt when it has one, else the
                // system's roots.
                if ca.exists() {
                    ca_file = Some(("credentialName", ca));
                }
            } else if verify {
                // SIMPLE reads only the credential's CA.
                ca_file = Some(("credentialName", ca));
            } else {
                error(
                    "credentialName",
                    "mode SIMPLE reads only the credential's ca.crt, which insecureSkipVerify: true never uses: remove one".into(),
                );
            }
        } else {
            error(
                "credentialName",
                "needs Settings `credentialsDir` (the folder holding `<credentialName>/tls.crt`, `tls.key` and `ca.crt`)".into(),
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let ca = match ca_file {
        Some((field, file)) => match load_ca(&file) {
            Ok(ca) => Some(ca),
            Err(e) => {
                errors.push((field.into(), e));
                None
            }
        },
        None => None,
    };
    let client = match pair {
        Some(((cert_field, cert), (key_field, key))) => match load_client(&cert, &key) {
            Ok(client) => Some(client),
            Err((true, e)) => {
                errors.push((cert_field.into(), e));
                None
            }
            Err((false, e)) => {
                errors.push((key_field.into(), e));
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut tls = UpstreamTls {
        sni: tls.sni.clone(),
        verify,
        ca,
        client,
        group: 0,
    };
    let mut hasher = std::hash::DefaultHasher::new();
    tls.hash(&mut hasher);
    // Never 0, the group of peers without TLS settings.
    tls.group = hasher.finish() | 1;
    Ok(Some(tls))
}

fn read(file: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

/// The certificates of a PEM file: at least one, each X.509 (Pingora's
/// `WrappedX509` panics on anything else, so it is checked here).
fn certificates(file: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE in this PEM file",
            file.display()
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert).map_err(|e| {
            format!(
                "{}: certificate {} is not X.509: {e}",
                file.display(),
                i + 1
            )
        })?;
    }
    Ok(certs)
}

/// A CA bundle, as Pingora's per-peer CA list.
fn load_ca(file: &Path) -> Result<Loaded<Arc<CaType>>, String> {
    let pem = read(file)?;
    let certs = certificates(file, &pem)?;
    // Pingora adds them to a root store at each connection; one it would
    // refuse then is refused now.
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "{}: certificate {} cannot be a trust anchor: {e}",
                file.display(),
                i + 1
            )
        })?;
    }
    let list: Vec<WrappedX509> = certs
        .into_iter()
        .map(|c| WrappedX509::new(c.to_vec(), parse_x509))
        .collect();
    Ok(Loaded {
        files: vec![file.to_path_buf()],
        digest: digest(&[&pem]),
        value: list.into(),
    })
}

/// A client certificate chain and its key. The error says whether the
/// certificate file (`true`) or the key file is at fault.
fn load_client(cert: &Path, key: &Path) -> Result<Loaded<Arc<CertKey>>, (bool, String)> {
    let cert_pem = read(cert).map_err(|e| (true, e))?;
    let chain = certificates(cert, &cert_pem).map_err(|e| (true, e))?;
    let key_pem = read(key).map_err(|e| (false, e))?;
    let private = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| (false, format!("{}: not PEM: {e}", key.display())))?
        .ok_or_else(|| {
            (
                false,
                format!("{}: no PRIVATE KEY in this PEM file", key.display()),
            )
        })?;
    let key_der = private.secret_der().to_vec();
    // Pingora turns these bytes back into a key at each handshake, and
    // panics if it cannot: it must be able to now.
    PrivateKeyDer::try_from(key_der.clone()).map_err(|e| {
        (
            false,
            format!("{}: unusable private key: {e}", key.display()),
        )
    })?;
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| (false, "no TLS crypto provider installed".to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| {
            (
                false,
                format!("{}: unusable private key: {e}", key.display()),
            )
        })?;
    pingora::tls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|_| {
            (
                false,
                format!(
                    "{}: this private key does not match the certificate in {}",
                    key.display(),
                    cert.display()
                ),
            )
        })?;
    let chain: Vec<Vec<u8>> = chain.into_iter().map(|c| c.to_vec()).collect();
    Ok(Loaded {
        files: vec![cert.to_path_buf(), key.to_path_buf()],
        digest: digest(&[&cert_pem, &key_pem]),
        value: Arc::new(CertKey::new(chain, key_der)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
            .display()
            .to_string()
    }

    fn simple(ca: &str) -> ClientTlsSettings {
        ClientTlsSettings {
            mode: Some("SIMPLE".into()),
            ca_certificates: Some(fixture(ca)),
            sni: Some("localhost".into()),
            ..Default::default()
        }
    }

    fn fields(result: Result<Option<UpstreamTls>, Vec<(String, String)>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn simple_with_a_ca_makes_a_verifying_tls_peer_named_by_sni() {
        let tls = client_tls(&simple("ca.pem"), None).unwrap().unwrap();
        let mut peer = HttpPeer::new("127.0.0.1:443", false, String::new());
        tls.secure(&mut peer, "ignored.example").unwrap();
        assert!(peer.is_tls());
        assert_eq!(peer.sni, "localhost");
        assert!(peer.options.verify_cert && peer.options.verify_hostname);
        assert_eq!(peer.options.ca.as_ref().map(|c| c.len()), Some(1));
        assert!(peer.client_cert_key.is_none());
        assert_ne!(peer.group_key, 0);
    }

    #[test]
    fn without_sni_the_request_host_is_the_name_and_none_is_refused() {
        let mut settings = simple("ca.pem");
        settings.sni = None;
        let tls = client_tls(&settings, None).unwrap().unwrap();
        let mut peer = HttpPeer::new("127.0.0.1:443", false, String::new());
        tls.secure(&mut peer, "api.example.test").unwrap();
        assert_eq!(peer.sni, "api.example.test");
        tls.secure(&mut peer, "[::1]").unwrap();
        assert_eq!(peer.sni, "::1");
        for bad in ["", "a b", "bad/name"] {
            let mut peer = HttpPeer::new("127.0.0.1:443", false, String::new());
            assert_eq!(tls.secure(&mut peer, bad), Err(NoServerName), "{bad:?}");
        }
    }

    #[test]
    fn the_identity_follows_the_contents_of_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::copy(fixture("ca.pem"), &ca).unwrap();
        let settings = ClientTlsSettings {
            ca_certificates: Some(ca.display().to_string()),
            ..simple("ca.pem")
        };
        let first = client_tls(&settings, None).unwrap();
        assert_eq!(first, client_tls(&settings, None).unwrap());
        std::fs::copy(fixture("sni/ca.pem"), &ca).unwrap();
        let second = client_tls(&settings, None).unwrap();
        assert_ne!(first, second, "new CA contents, same path");
        assert_ne!(first.unwrap().group, second.unwrap().group);
    }

    #[test]
    fn mutual_loads_the_client_pair_and_a_credential_folder() {
        let settings = ClientTlsSettings {
            mode: Some("MUTUAL".into()),
            client_certificate: Some(fixture("client/client.pem")),
            private_key: Some(fixture("client/client.key")),
            ..simple("ca.pem")
        };
        let tls = client_tls(&settings, None).unwrap().unwrap();
        assert!(tls.client.is_some());
        let settings = ClientTlsSettings {
            mode: Some("MUTUAL".into()),
            credential_name: Some("upstream-client".into()),
            sni: Some("localhost".into()),
            ..Default::default()
        };
        let dir = PathBuf::from(fixture("credentials"));
        let tls = client_tls(&settings, Some(&dir)).unwrap().unwrap();
        assert!(tls.client.is_some() && tls.ca.is_some());
        assert_eq!(fields(client_tls(&settings, None)), ["credentialName"]);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_field() {
        let refused = |settings: ClientTlsSettings| fields(client_tls(&settings, None));
        assert_eq!(
            refused(ClientTlsSettings {
                mode: Some("ISTIO_MUTUAL".into()),
                ..Default::default()
            }),
            ["mode"]
        );
        assert_eq!(
            refused(ClientTlsSettings {
                mode: Some("simple".into()),
                ..Default::default()
            }),
            ["mode"]
        );
        assert_eq!(
            refused(ClientTlsSettings {
                subject_alt_names: Some(vec!["localhost".into()]),
                ca_crl: Some("crl.pem".into()),
                ..simple("ca.pem")
            }),
            ["subjectAltNames", "caCrl"]
        );
        assert_eq!(refused(simple("missing.pem")), ["caCertificates"]);
        assert_eq!(refused(simple("server.key")), ["caCertificates"]);
        assert_eq!(
            refused(ClientTlsSettings {
                mode: Some("MUTUAL".into()),
                client_certificate: Some(fixture("client/client.pem")),
                ..simple("ca.pem")
            }),
            ["privateKey"]
        );
        assert_eq!(
            refused(ClientTlsSettings {
                mode: Some("MUTUAL".into()),
                client_certificate: Some(fixture("client/client.pem")),
                private_key: Some(fixture("server.key")),
                ..simple("ca.pem")
            }),
            ["privateKey"],
            "a key of another certificate"
        );
        assert_eq!(
            refused(ClientTlsSettings {
                client_certificate: Some(fixture("client/client.pem")),
                ..simple("ca.pem")
            }),
            ["clientCertificate"],
            "a client certificate in mode SIMPLE"
        );
        assert_eq!(
            refused(ClientTlsSettings {
                insecure_skip_verify: Some(true),
                ..simple("ca.pem")
            }),
            ["caCertificates"]
        );
        assert_eq!(
            refused(ClientTlsSettings {
                sni: Some("not a name".into()),
                ..simple("ca.pem")
            }),
            ["sni"]
        );
        assert_eq!(
            refused(ClientTlsSettings {
                sni: Some("localhost".into()),
                ..Default::default()
            }),
            ["sni"],
            "sni without a mode (DISABLE)"
        );
        assert_eq!(client_tls(&ClientTlsSettings::default(), None), Ok(None));
    }
}
