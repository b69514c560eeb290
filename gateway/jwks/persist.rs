//! Persisting the last good key set of each URI (`Settings.jwksCacheDir`):
//! one JSON file per URI, named by the URI's SHA-256, written atomically
//! (a temporary file renamed over the old one).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::jwt::KeySet;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    uri: String,
    /// Unix time of the fetch.
    fetched_at: f64,
    /// The key set as the server sent it.
    jwks: String,
}

fn file_for(dir: &Path, uri: &str) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, uri.as_bytes());
    let name: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{name}.json"))
}

pub fn save(dir: &Path, uri: &str, body: &[u8], fetched_at: f64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let record = Persisted {
        uri: uri.to_string(),
        fetched_at,
        jwks: String::from_utf8_lossy(body).into_owned(),
    };
    let path = file_for(dir, uri);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(&record).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// `Ok(None)`: nothing persisted for `uri`. `Err`: a file that is not a
/// good key set for `uri` (the caller ignores it, with a warning).
pub fn load(dir: &Path, uri: &str) -> Result<Option<(KeySet, f64)>, String> {
    let path = file_for(dir, uri);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let record: Persisted =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if record.uri != uri {
        return Err(format!(
            "{}: holds the key set of another URI",
            path.display()
        ));
    }
    let keys = KeySet::from_json(record.jwks.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some((keys, record.fetched_at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}"#;

    #[test]
    fn a_saved_set_loads_back_for_its_uri_only() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "https://a.test/jwks", JWKS.as_bytes(), 42.0).unwrap();
        let (keys, at) = load(dir.path(), "https://a.test/jwks").unwrap().unwrap();
        assert_eq!((keys.keys.len(), at), (1, 42.0));
        assert!(load(dir.path(), "https://b.test/jwks").unwrap().is_none());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let uri = "https://a.test/jwks";
        std::fs::write(file_for(dir.path(), uri), b"{not json").unwrap();
        assert!(load(dir.path(), uri).is_err());
        let wrong = serde_json::json!({"uri": uri, "fetchedAt": 1.0, "jwks": "{\"keys\":[]}"});
        std::fs::write(file_for(dir.path(), uri), wrong.to_string()).unwrap();
        assert!(load(dir.path(), uri).is_err());
    }
}
