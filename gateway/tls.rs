//! TLS on the listener: Gateway `servers[].tls`, certificates read from PEM
//! files when the configuration is compiled, chosen by SNI at each handshake.
//!
//! Pingora 0.9's rustls listener (`TlsSettings`) builds one rustls
//! `ServerConfig` per listening address, with TLS 1.2 and 1.3 and no way to
//! pass a `ServerConfig` of our own, but it takes a `ResolvesServerCert`.
//! Ours ([`SniResolver`]) reads the certificates from the snapshot in force
//! at each handshake, so a reload swaps them with everything else, and a
//! connection already open keeps the certificate it was handshaken with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

use crate::config::types::GatewayServer;
use crate::config::{ConfigError, Source};
use crate::snapshot::Snapshot;

/// What one Gateway server asks of its port.
#[derive(Debug)]
pub enum ServerTls {
    /// Plain HTTP; with `httpsRedirect`, every request answers 301 to https.
    Plain { https_redirect: bool },
    /// TLS, with this certificate, read from these files (certificate, key).
    Https(Arc<CertifiedKey>, [PathBuf; 2]),
}

/// The TLS side of the compiled configuration: per listening address.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    /// HTTPS listeners: their certificates by SNI.
    pub certs: HashMap<String, Arc<HostMap<Arc<CertifiedKey>>>>,
    /// Plain listeners with `httpsRedirect` servers: the hosts redirected.
    pub redirects: HashMap<String, HostMap<()>>,
    /// Every certificate and key file read: a change to one reloads.
    pub files: Vec<PathBuf>,
}

impl Tables {
    /// A fingerprint of the contents of every certificate and key file.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        for file in &self.files {
            file.hash(&mut hasher);
            std::fs::read(file).ok().hash(&mut hasher);
        }
        hasher.finish()
    }
}

/// Values by host: exact names, then the longest `*.suffix` wildcard, then
/// `*`.
#[derive(Debug, Clone)]
pub struct HostMap<T> {
    exact: HashMap<String, T>,
    /// (".suffix", value), longest suffix first.
    wildcards: Vec<(String, T)>,
    any: Option<T>,
    /// For SNI: when nothing matches (or no name was sent), the first
    /// server's certificate.
    fallback: Option<T>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        HostMap {
            exact: HashMap::new(),
            wildcards: Vec::new(),
            any: None,
            fallback: None,
        }
    }
}

impl<T: Clone> HostMap<T> {
    /// Adds `host` (lower case, no namespace). Returns false when the very
    /// same host is already there.
    fn insert(&mut self, host: &str, value: T) -> bool {
        if self.fallback.is_none() {
            self.fallback = Some(value.clone());
        }
        if host == "*" {
            return self.any.replace(value).is_none();
        }
        if let Some(suffix) = host.strip_prefix('*') {
            if self.wildcards.iter().any(|(s, _)| s == suffix) {
                return false;
            }
            self.wildcards.push((suffix.to_string(), value));
            self.wildcards
                .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
            return true;
        }
        self.exact.insert(host.to_string(), value).is_none()
    }

    /// The value for `host` (already lower case): exact, wildcard, `*`.
    pub fn get(&self, host: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, v)| v)
            .or(self.any.as_ref())
    }

    /// As `get`, falling back to the `*` server's value, else the first
    /// server's: the certificate for a client that sent no SNI (an IP
    /// address) or a name no server lists.
    pub fn get_or_default(&self, host: Option<&str>) -> Option<&T> {
        host.and_then(|h| self.get(h))
            .or(self.any.as_ref())
            .or(self.fallback.as_ref())
    }
}

/// Reads and checks the `tls` (and `port.protocol`) of one Gateway server,
/// found `at` (file, document and field path, for warnings). Errors are
/// (field path under the server, message).
pub fn server_tls(
    server: &GatewayServer,
    credentials_dir: Option<&Path>,
    at: &str,
) -> Result<ServerTls, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let protocol = server
        .port
        .protocol
        .as_deref()
        .unwrap_or("HTTP")
        .to_ascii_uppercase();
    let https = match protocol.as_str() {
        "HTTP" => false,
        "HTTPS" => true,
        other => {
            return Err(vec![(
                "port.protocol".into(),
                format!("`{other}` is not supported: listeners serve HTTP or HTTPS"),
            )])
        }
    };
    let Some(tls) = &server.tls else {
        if https {
            errors.push((
                "tls".into(),
                "an HTTPS server needs `tls` with mode SIMPLE and a certificate".into(),
            ));
            return Err(errors);
        }
        return Ok(ServerTls::Plain {
            https_redirect: false,
        });
    };
    let refused = [
        ("caCertificates", tls.ca_certificates.is_some()),
        ("caCrl", tls.ca_crl.is_some()),
        ("credentialNames", tls.credential_names.is_some()),
        ("tlsCertificates", tls.tls_certificates.is_some()),
        ("subjectAltNames", tls.subject_alt_names.is_some()),
        (
            "verifyCertificateSpki",
            tls.verify_certificate_spki.is_some(),
        ),
        (
            "verifyCertificateHash",
            tls.verify_certificate_hash.is_some(),
        ),
        ("cipherSuites", tls.cipher_suites.is_some()),
    ];
    for (field, present) in refused {
        if present {
            errors.push((
                format!("tls.{field}"),
                "is not supported (client certificates, cipher lists and several certificates per server are not implemented)".into(),
            ));
        }
    }
    if !https {
        let terminating = tls.mode.is_some()
            || tls.server_certificate.is_some()
            || tls.private_key.is_some()
            || tls.credential_name.is_some();
        if terminating {
            errors.push((
                "port.protocol".into(),
                "a server with a TLS mode or certificate must have protocol HTTPS".into(),
            ));
        }
        return if errors.is_empty() {
            Ok(ServerTls::Plain {
                https_redirect: tls.https_redirect,
            })
        } else {
            Err(errors)
        };
    }
    if tls.https_redirect {
        errors.push((
            "tls.httpsRedirect".into(),
            "only a plain HTTP server redirects to https".into(),
        ));
    }
    match tls.mode.as_deref() {
        Some("SIMPLE") => {}
        Some(mode @ ("PASSTHROUGH" | "MUTUAL" | "ISTIO_MUTUAL" | "AUTO_PASSTHROUGH" | "OPTIONAL_MUTUAL")) => errors.push((
            "tls.mode".into(),
            format!("`{mode}` is not supported: only SIMPLE (TLS terminated here, no client certificate)"),
        )),
        Some(mode) => errors.push(("tls.mode".into(), format!("`{mode}` is not a TLS mode; use SIMPLE"))),
        None => errors.push((
            "tls.mode".into(),
            "required: SIMPLE (Istio's default, PASSTHROUGH, is not supported)".into(),
        )),
    }
    match tls.min_protocol_version.as_deref() {
        None | Some("TLS_AUTO" | "TLSV1_2") => {}
        Some("TLSV1_3") => errors.push((
            "tls.minProtocolVersion".into(),
            "TLSV1_3 is not supported: Pingora 0.9's rustls listener always offers TLS 1.2 and 1.3".into(),
        )),
        Some(v) => errors.push((
            "tls.minProtocolVersion".into(),
            format!("`{v}` is not supported: TLS 1.2 is the lowest version served (TLS_AUTO or TLSV1_2)"),
        )),
    }
    match tls.max_protocol_version.as_deref() {
        None | Some("TLS_AUTO" | "TLSV1_3") => {}
        Some(v) => errors.push((
            "tls.maxProtocolVersion".into(),
            format!("`{v}` is not supported: Pingora 0.9's rustls listener always offers TLS 1.3 (TLS_AUTO or TLSV1_3)"),
        )),
    }
    let files = match (
        &tls.credential_name,
        &tls.server_certificate,
        &tls.private_key,
    ) {
        (Some(name), None, None) => match credentials_dir {
            _ if name.is_empty() || name.contains('/') || name.starts_with('.') => {
                errors.push((
                    "tls.credentialName".into(),
                    format!("`{name}` is not a credential name"),
                ));
                None
            }
            Some(dir) => Some((
                "tls.credentialName",
                dir.join(name).join("tls.crt"),
                "tls.credentialName",
                dir.join(name).join("tls.key"),
            )),
            None => {
                errors.push((
                    "tls.credentialName".into(),
                    "needs Settings `credentialsDir` (the folder holding `<credentialName>/tls.crt` and `tls.key`)".into(),
                ));
                None
            }
        },
        (None, Some(cert), Some(key)) => Some((
            "tls.serverCertificate",
            PathBuf::from(cert),
            "tls.privateKey",
            PathBuf::from(key),
        )),
        (None, None, None) => {
            errors.push((
                "tls".into(),
                "a certificate is required: credentialName, or serverCertificate and privateKey"
                    .into(),
            ));
            None
        }
        (Some(_), _, _) => {
            errors.push((
                "tls.credentialName".into(),
                "give credentialName or serverCertificate and privateKey, not both".into(),
            ));
            None
        }
        (None, Some(_), None) => {
            errors.push((
                "tls.privateKey".into(),
                "required with serverCertificate".into(),
            ));
            None
        }
        (None, None, Some(_)) => {
            errors.push((
                "tls.serverCertificate".into(),
                "required with privateKey".into(),
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some((cert_field, cert, key_field, key)) = files else {
        return Err(errors);
    };
    match load_pair(&cert, &key, SystemTime::now()) {
        Ok((certified, warning)) => {
            if let Some(warning) = warning {
                tracing::warn!(at = %format!("{at}.{cert_field}"), "{warning}");
            }
            Ok(ServerTls::Https(certified, [cert, key]))
        }
        Err(LoadError::Cert(e)) => Err(vec![(cert_field.into(), e)]),
        Err(LoadError::Key(e)) => Err(vec![(key_field.into(), e)]),
    }
}

/// Why a certificate and key pair cannot be used: a problem of the
/// certificate file, or of the key file.
#[derive(Debug)]
pub enum LoadError {
    Cert(String),
    Key(String),
}

/// Reads a PEM certificate chain and its private key, checks that they go
/// together, and says (as a warning) when the certificate has expired or is
/// not valid yet.
pub fn load_pair(
    cert: &Path,
    key: &Path,
    now: SystemTime,
) -> Result<(Arc<CertifiedKey>, Option<String>), LoadError> {
    let cert_pem = std::fs::read(cert)
        .map_err(|e| LoadError::Cert(format!("cannot read {}: {e}", cert.display())))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::Cert(format!("{}: not PEM: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(LoadError::Cert(format!(
            "{}: no CERTIFICATE in this PEM file",
            cert.display()
        )));
    }
    let key_pem = std::fs::read(key)
        .map_err(|e| LoadError::Key(format!("cannot read {}: {e}", key.display())))?;
    let private = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| LoadError::Key(format!("{}: not PEM: {e}", key.display())))?
        .ok_or_else(|| {
            LoadError::Key(format!(
                "{}: no PRIVATE KEY in this PEM file",
                key.display()
            ))
        })?;
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| LoadError::Key("no TLS crypto provider installed".into()))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| LoadError::Key(format!("{}: unusable private key: {e}", key.display())))?;
    let (not_before, not_after) = {
        let (_, parsed) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| {
            LoadError::Cert(format!(
                "{}: the first certificate is not X.509: {e}",
                cert.display()
            ))
        })?;
        let validity = parsed.validity();
        (validity.not_before, validity.not_after)
    };
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        LoadError::Key(format!(
            "{}: this private key does not match the certificate in {}",
            key.display(),
            cert.display()
        ))
    })?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let warning = if not_after.timestamp() < now {
        Some(format!(
            "the certificate in {} expired on {}: clients will refuse it",
            cert.display(),
            not_after
        ))
    } else if not_before.timestamp() > now {
        Some(format!(
            "the certificate in {} is not valid before {}: clients will refuse it until then",
            cert.display(),
            not_before
        ))
    } else {
        None
    };
    Ok((Arc::new(certified), warning))
}

/// Gathers every server's TLS by listening address while the Gateways are
/// compiled, and refuses a port that mixes HTTP and HTTPS servers or lists
/// a host twice.
#[derive(Debug, Default)]
pub struct Builder {
    tables: Tables,
    /// Listening address -> HTTPS?
    kinds: HashMap<String, bool>,
}

impl Builder {
    /// Adds one server, listening on `addr`, with its `hosts` (lower case,
    /// namespace removed). `path` is the server's field path.
    pub fn add(
        &mut self,
        addr: &str,
        hosts: &[&str],
        tls: ServerTls,
        source: &Source,
        path: &str,
    ) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let https = matches!(tls, ServerTls::Https(..));
        if let Some(&kind) = self.kinds.get(addr) {
            if kind != https {
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.port.protocol"),
                    format!(
                        "{addr} already serves {}: one port is either HTTP or HTTPS",
                        if kind { "HTTPS" } else { "plain HTTP" }
                    ),
                ));
                return errors;
            }
        }
        self.kinds.insert(addr.to_string(), https);
        match tls {
            ServerTls::Https(certified, files) => {
                for file in files {
                    if !self.tables.files.contains(&file) {
                        self.tables.files.push(file);
                    }
                }
                let map = self.tables.certs.entry(addr.to_string()).or_default();
                let map = Arc::make_mut(map);
                for (i, host) in hosts.iter().enumerate() {
                    if !map.insert(host, certified.clone()) {
                        errors.push(ConfigError::new(
                            source,
                            format!("{path}.hosts[{i}]"),
                            format!("`{host}` already has a certificate on {addr}"),
                        ));
                    }
                }
            }
            ServerTls::Plain {
                https_redirect: true,
            } => {
                let map = self.tables.redirects.entry(addr.to_string()).or_default();
                for host in hosts {
                    map.insert(host, ());
                }
            }
            ServerTls::Plain { .. } => {}
        }
        errors
    }

    /// Adds a file read for something else than a listener (an upstream's
    /// CA or client certificate): a change to it reloads too.
    pub fn watch(&mut self, file: &Path) {
        if !self.tables.files.iter().any(|f| f == file) {
            self.tables.files.push(file.to_path_buf());
        }
    }

    pub fn finish(self) -> Tables {
        self.tables
    }
}

/// The listener's certificate resolver: the certificates of the snapshot in
/// force, chosen by SNI.
pub struct SniResolver {
    addr: String,
    state: Arc<ArcSwap<Snapshot>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.state.load();
        let map = snapshot.tls.certs.get(&self.addr)?;
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        map.get_or_default(sni.as_deref()).cloned()
    }
}

/// Pingora's TLS settings for `addr` when the snapshot serves it over TLS:
/// our resolver, ALPN `h2` then `http/1.1`.
pub fn listener_settings(addr: &str, state: &Arc<ArcSwap<Snapshot>>) -> Option<TlsSettings> {
    if !state.load().tls.certs.contains_key(addr) {
        return None;
    }
    // Paths are unused when a resolver is set.
    let mut settings = TlsSettings::intermediate("", "").ok()?;
    settings.set_cert_resolver(Arc::new(SniResolver {
        addr: addr.to_string(),
        state: state.clone(),
    }));
    settings.enable_h2();
    Some(settings)
}

/// A listener is bound plain or TLS at start; a reload cannot change that.
/// A listener that was TLS keeps its last certificates, and one that was
/// plain stays plain; each such change is returned as pending a restart.
pub fn carry_over(current: &Snapshot, new: &mut Snapshot, bound: &[String]) -> Vec<String> {
    let mut pending = Vec::new();
    for addr in bound {
        let was = current.tls.certs.get(addr);
        let is = new.tls.certs.contains_key(addr);
        match (was, is) {
            (Some(old), false) => {
                new.tls.certs.insert(addr.clone(), old.clone());
                pending.push(format!(
                    "listener {addr} becomes plain HTTP (it serves TLS with its last certificates until restart)"
                ));
            }
            (None, true) => {
                new.tls.certs.remove(addr);
                pending.push(format!(
                    "listener {addr} becomes HTTPS (it serves plain HTTP until restart)"
                ));
            }
            _ => {}
        }
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls/sni")
            .join(name)
    }

    #[test]
    fn host_map_prefers_exact_then_longest_wildcard_then_any() {
        let mut map = HostMap::default();
        map.insert("*.example.test", 1);
        map.insert("*.b.example.test", 2);
        map.insert("a.b.example.test", 3);
        assert_eq!(map.get("a.b.example.test"), Some(&3));
        assert_eq!(map.get("x.b.example.test"), Some(&2));
        assert_eq!(map.get("x.example.test"), Some(&1));
        assert_eq!(map.get("example.test"), None);
        assert_eq!(map.get_or_default(Some("other.test")), Some(&1));
        assert_eq!(map.get_or_default(None), Some(&1));
        map.insert("*", 4);
        assert_eq!(map.get("other.test"), Some(&4));
        assert_eq!(map.get_or_default(None), Some(&4));
    }

    #[test]
    fn a_port_changing_between_http_and_https_waits_for_a_restart() {
        let (key, _) = load_pair(&fixture("a.pem"), &fixture("a.key"), SystemTime::now()).unwrap();
        let mut map = HostMap::default();
        map.insert("*", key);
        let mut current = Snapshot::default();
        current
            .tls
            .certs
            .insert("127.0.0.1:443".into(), Arc::new(map.clone()));
        let bound = ["127.0.0.1:443".to_string(), "127.0.0.1:80".to_string()];
        // 443 turned plain and 80 turned HTTPS in the new configuration.
        let mut new = Snapshot::default();
        new.tls.certs.insert("127.0.0.1:80".into(), Arc::new(map));
        let pending = carry_over(&current, &mut new, &bound);
        assert_eq!(pending.len(), 2, "{pending:?}");
        assert!(new.tls.certs.contains_key("127.0.0.1:443"));
        assert!(!new.tls.certs.contains_key("127.0.0.1:80"));
    }

    #[test]
    fn a_matching_pair_loads() {
        let (_, warning) =
            load_pair(&fixture("a.pem"), &fixture("a.key"), SystemTime::now()).unwrap();
        assert_eq!(warning, None);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        match load_pair(&fixture("a.pem"), &fixture("b.key"), SystemTime::now()) {
            Err(LoadError::Key(e)) => assert!(e.contains("does not match"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_expired_certificate_loads_with_a_warning() {
        let (_, warning) = load_pair(
            &fixture("expired.pem"),
            &fixture("expired.key"),
            SystemTime::now(),
        )
        .unwrap();
        assert!(warning.unwrap().contains("expired"));
    }

    #[test]
    fn a_pem_without_certificate_or_a_missing_file_is_refused() {
        match load_pair(&fixture("a.key"), &fixture("a.key"), SystemTime::now()) {
            Err(LoadError::Cert(e)) => assert!(e.contains("no CERTIFICATE"), "{e}"),
            other => panic!("{other:?}"),
        }
        match load_pair(
            &fixture("missing.pem"),
            &fixture("a.key"),
            SystemTime::now(),
        ) {
            Err(LoadError::Cert(e)) => assert!(e.contains("cannot read"), "{e}"),
            other => panic!("{other:?}"),
        }
        match load_pair(&fixture("a.pem"), &fixture("a.pem"), SystemTime::now()) {
            Err(LoadError::Key(e)) => assert!(e.contains("no PRIVATE KEY"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
