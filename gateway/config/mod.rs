//! Loading the configuration: one path (a YAML file, or a folder of
//! `*.yaml`/`*.yml`), each file holding one or more `---` documents of the
//! Istio kinds we serve plus our `Settings`.
//!
//! Loading never stops at the first problem: every document is read and every
//! error is collected with its file, document number and field path, so that
//! `claimgate check` can print them all at once.

pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use types::*;

/// Where a document came from: its file and its 1-based position in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document)
    }
}

/// One parsed document of kind `S`.
#[derive(Debug, Clone)]
pub struct Resource<S> {
    pub source: Source,
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: S,
}

impl<S> Resource<S> {
    /// `namespace/name`, how Istio names a resource.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

/// Everything one load read, by kind, in file order.
#[derive(Debug, Default, Clone)]
pub struct Config {
    pub files: Vec<PathBuf>,
    /// Every document as read (before typing), as JSON, with where it was:
    /// what `/config_dump` shows, secrets redacted there.
    pub documents: Vec<(Source, serde_json::Value)>,
    /// SHA-256 over every file's name and bytes, in load order (hex).
    pub sha256: String,
    pub gateways: Vec<Resource<GatewaySpec>>,
    pub virtual_services: Vec<Resource<VirtualServiceSpec>>,
    pub service_entries: Vec<Resource<ServiceEntrySpec>>,
    pub destination_rules: Vec<Resource<DestinationRuleSpec>>,
    pub request_authentications: Vec<Resource<RequestAuthenticationSpec>>,
    pub authorization_policies: Vec<Resource<AuthorizationPolicySpec>>,
    pub settings: Option<Resource<SettingsSpec>>,
}

impl Config {
    /// Adds every document of `other` after this config's own.
    pub fn merge(&mut self, other: Config) {
        self.files.extend(other.files);
        self.documents.extend(other.documents);
        self.gateways.extend(other.gateways);
        self.virtual_services.extend(other.virtual_services);
        self.service_entries.extend(other.service_entries);
        self.destination_rules.extend(other.destination_rules);
        self.request_authentications
            .extend(other.request_authentications);
        self.authorization_policies
            .extend(other.authorization_policies);
        if self.settings.is_none() {
            self.settings = other.settings;
        }
    }

    /// The settings in force: the `Settings` document, or the defaults.
    pub fn settings(&self) -> SettingsSpec {
        self.settings
            .as_ref()
            .map(|s| s.spec.clone())
            .unwrap_or_default()
    }
}

/// A configuration problem, located as precisely as we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: Option<Source>,
    /// Dotted field path inside the document, e.g. `spec.http[0].match[0].uri`.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(source: &Source, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            source: Some(source.clone()),
            path: path.into(),
            message: message.into(),
        }
    }

    fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            source: Some(Source {
                file: file.to_path_buf(),
                document: 0,
            }),
            path: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) if s.document == 0 => write!(f, "{}: ", s.file.display())?,
            Some(s) => write!(f, "{s}: ")?,
            None => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error of one load or compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Loads `path`: a file, or every `*.yaml`/`*.yml` directly inside a folder
/// (in name order).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let (config, errors) = read(path);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Every document of `path` that parsed, and every error; the config is
/// `None` only when the path itself cannot be read. `check` compiles what
/// parsed so that it reports compile errors alongside load errors.
pub fn read(path: &Path) -> (Option<Config>, Vec<ConfigError>) {
    let files = match config_files(path) {
        Ok(files) => files,
        Err(e) => return (None, vec![e]),
    };
    let mut config = Config::default();
    let mut errors = Vec::new();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                digest.update(file.to_string_lossy().as_bytes());
                digest.update(&[0]);
                digest.update(text.as_bytes());
                digest.update(&[0]);
                parse_into(&file, &text, &mut config, &mut errors)
            }
            Err(e) => errors.push(ConfigError::file(&file, format!("cannot read: {e}"))),
        }
        config.files.push(file);
    }
    config.sha256 = hex(digest.finish().as_ref());
    (Some(config), errors)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses YAML text as if it were the file `file`.
pub fn parse_str(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let mut config = Config::default();
    let mut errors = Vec::new();
    parse_into(file, text, &mut config, &mut errors);
    config.files.push(file.to_path_buf());
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::file(path, e.to_string()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| ConfigError::file(path, e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConfigError::file(
            path,
            "no *.yaml or *.yml files in this folder",
        ));
    }
    Ok(files)
}

/// The envelope every document shares; `spec` is read once `kind` is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope {
    api_version: String,
    kind: String,
    metadata: serde_yaml::Value,
    #[serde(default)]
    spec: serde_yaml::Value,
}

const NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
const SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
const CLAIMGATE: &[&str] = &["claimgate/v1"];

/// Kinds we know, with their accepted `apiVersion`s.
const KINDS: &[(&str, &[&str])] = &[
    ("Gateway", NETWORKING),
    ("VirtualService", NETWORKING),
    ("ServiceEntry", NETWORKING),
    ("DestinationRule", NETWORKING),
    ("RequestAuthentication", SECURITY),
    ("AuthorizationPolicy", SECURITY),
    ("Settings", CLAIMGATE),
];

fn parse_into(file: &Path, text: &str, config: &mut Config, errors: &mut Vec<ConfigError>) {
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = Source {
            file: file.to_path_buf(),
            document: i + 1,
        };
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue, // an empty `---` section
            Ok(value) => value,
            Err(e) => {
                errors.push(ConfigError::new(&source, "", format!("invalid YAML: {e}")));
                // A syntax error ends the stream: later documents cannot be found.
                return;
            }
        };
        let json = serde_json::to_value(&value)
            .unwrap_or_else(|e| serde_json::Value::String(format!("(not shown: {e})")));
        match parse_document(&source, value, config) {
            Ok(()) => config.documents.push((source, json)),
            Err(e) => errors.push(e),
        }
    }
}

fn parse_document(
    source: &Source,
    value: serde_yaml::Value,
    config: &mut Config,
) -> Result<(), ConfigError> {
    let envelope: Envelope = typed(source, "", value)?;
    let Some((kind, versions)) = KINDS.iter().find(|(k, _)| *k == envelope.kind) else {
        let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
        return Err(ConfigError::new(
            source,
            "kind",
            format!(
                "unknown or unsupported kind `{}` (supported: {})",
                envelope.kind,
                known.join(", ")
            ),
        ));
    };
    if !versions.contains(&envelope.api_version.as_str()) {
        return Err(ConfigError::new(
            source,
            "apiVersion",
            format!(
                "`{}` is not an apiVersion of {kind} (expected one of: {})",
                envelope.api_version,
                versions.join(", ")
            ),
        ));
    }
    let metadata: Metadata = typed(source, "metadata", envelope.metadata)?;
    let api_version = envelope.api_version;
    let spec = envelope.spec;
    match *kind {
        "Gateway" => config
            .gateways
            .push(resource(source, api_version, metadata, spec)?),
        "VirtualService" => {
            config
                .virtual_services
                .push(resource(source, api_version, metadata, spec)?)
        }
        "ServiceEntry" => {
            config
                .service_entries
                .push(resource(source, api_version, metadata, spec)?)
        }
        "DestinationRule" => {
            config
                .destination_rules
                .push(resource(source, api_version, metadata, spec)?)
        }
        "RequestAuthentication" => {
            config
                .request_authentications
                .push(resource(source, api_version, metadata, spec)?)
        }
        // `spec: {}` is a valid policy (ALLOW nothing), so not `resource()`.
        "AuthorizationPolicy" => {
            let spec = if spec.is_null() {
                AuthorizationPolicySpec::default()
            } else {
                typed(source, "spec", spec)?
            };
            config.authorization_policies.push(Resource {
                source: source.clone(),
                api_version,
                metadata,
                spec,
            })
        }
        "Settings" => {
            if let Some(first) = &config.settings {
                return Err(ConfigError::new(
                    source,
                    "kind",
                    format!(
                        "a second Settings document (the first is at {})",
                        first.source
                    ),
                ));
            }
            let spec = if spec.is_null() {
                SettingsSpec::default()
            } else {
                typed(source, "spec", spec)?
            };
            config.settings = Some(Resource {
                source: source.clone(),
                api_version,
                metadata,
                spec,
            });
        }
        _ => unreachable!("every entry of KINDS is handled above"),
    }
    Ok(())
}

fn resource<S: DeserializeOwned>(
    source: &Source,
    api_version: String,
    metadata: Metadata,
    spec: serde_yaml::Value,
) -> Result<Resource<S>, ConfigError> {
    if spec.is_null() {
        return Err(ConfigError::new(source, "spec", "missing"));
    }
    Ok(Resource {
        source: source.clone(),
        api_version,
        metadata,
        spec: typed(source, "spec", spec)?,
    })
}

/// Deserializes `value` as `T`, reporting the failing field's full path.
fn typed<T: DeserializeOwned>(
    source: &Source,
    prefix: &str,
    value: serde_yaml::Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix.is_empty(), inner == ".") {
            (true, _) => inner,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{inner}"),
        };
        ConfigError::new(source, path, e.into_inner().to_string())
    })
}

/// Parses an Istio/protobuf duration such as `5s`, `1.5s`, `100ms`, `10m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m or h)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ))
        }
    };
    if !seconds.is_finite() || !(0.0..=31_536_000.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        parse_str(Path::new("test.yaml"), text)
    }

    #[test]
    fn several_documents_of_several_kinds_are_read_in_order() {
        let config = parse(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: foo}\n\
             spec: {servers: [{port: {number: 80}, hosts: ['*']}]}\n---\n---\n\
             apiVersion: claimgate/v1\nkind: Settings\nmetadata: {name: s}\nspec: {admin: '127.0.0.1:1'}\n",
        )
        .unwrap();
        assert_eq!(config.gateways.len(), 1);
        assert_eq!(config.gateways[0].key(), "foo/gw");
        assert_eq!(config.settings().admin, "127.0.0.1:1");
        assert_eq!(config.settings().clock_skew_seconds, 60);
    }

    #[test]
    fn unknown_field_is_reported_with_document_and_path() {
        let err = parse(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: a}\n\
             spec: {servers: [{port: {number: 80}, hosts: ['*']}]}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\n\
             spec: {hosts: ['*'], http: [{match: [{uri: {prefix: /}, bogus: 1}]}]}\n",
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 1);
        let text = err.to_string();
        assert!(
            text.starts_with(
                "test.yaml: document 2: spec.http[0].match[0].bogus: unknown field `bogus`"
            ),
            "{text}"
        );
    }

    #[test]
    fn unknown_kind_and_wrong_api_version_are_errors() {
        let err = parse(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a}\nspec: {}\n---\n\
             apiVersion: security.istio.io/v1\nkind: Gateway\nmetadata: {name: b}\nspec: {servers: []}\n",
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 2);
        assert!(err.0[0]
            .to_string()
            .contains("document 1: kind: unknown or unsupported kind `Sidecar`"));
        assert!(err.0[1].to_string().contains("document 2: apiVersion:"));
    }

    #[test]
    fn a_yaml_syntax_error_is_located() {
        let err = parse("apiVersion: [\n").unwrap_err();
        assert!(err.to_string().contains("invalid YAML"), "{err}");
    }

    #[test]
    fn durations_parse_as_istio_writes_them() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
