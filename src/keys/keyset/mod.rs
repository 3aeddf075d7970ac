//! A keyset: the private keys portvakt renews for one client, each with its state in the renewal
//! (pending, active, retiring). Written only by the renewer (`portvakt rotate`), read by every
//! replica through `key.keyset`; grants are signed with the active key alone.
//!
//! The file is the source of truth for which key signs, so it is written durably before any key
//! in it is registered: a temporary file (0600) is written and fsynced, renamed over the old one,
//! and the directory fsynced, so a crash leaves the old file or the new one, never half of either.

mod entry;

pub use entry::{Entry, State};

use super::{KeyError, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

/// The one version of the file format.
const VERSION: u32 = 1;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyset {
    pub version: u32,
    pub client_id: String,
    pub keys: Vec<Entry>,
    /// When a renewal pass last reached its end (Unix seconds).
    #[serde(
        default,
        deserialize_with = "crate::support::time::unix_or_rfc3339::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_success: Option<i64>,
}

impl Keyset {
    /// Its gauges: each registered key's `exp`, and the last successful renewal pass.
    pub fn publish(&self, metrics: &crate::observe::metrics::Metrics, client: &Arc<String>) {
        let registered = self
            .keys
            .iter()
            .filter_map(|e| Some((e.kid.clone(), e.state.as_str(), e.exp?)));
        metrics.publish_keyset(client, registered, self.last_success);
    }

    pub fn new(client_id: &str) -> Self {
        Keyset {
            version: VERSION,
            client_id: client_id.to_string(),
            keys: Vec::new(),
            last_success: None,
        }
    }

    /// Reads and checks a keyset: known version, unique kids, at most one active key, every key a
    /// private RSA JWK whose own kid is the entry's.
    pub fn parse(bytes: &[u8]) -> Result<Keyset, KeyError> {
        let set: Keyset = serde_json::from_slice(bytes)
            .map_err(|e| KeyError::Invalid(format!("not a portvakt keyset: {e}")))?;
        if set.version != VERSION {
            return Err(KeyError::Invalid(format!(
                "keyset version {} is not one this portvakt reads (it reads {VERSION})",
                set.version
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for entry in &set.keys {
            if !seen.insert(entry.kid.as_str()) {
                return Err(KeyError::Invalid(format!(
                    "kid {} is in the keyset twice",
                    entry.kid
                )));
            }
            if entry.jwk.expose().get("kid").and_then(Value::as_str) != Some(entry.kid.as_str()) {
                return Err(KeyError::Invalid(format!(
                    "the JWK of kid {} names another kid",
                    entry.kid
                )));
            }
            entry
                .signing_key()
                .map_err(|e| KeyError::Invalid(format!("kid {}: {e}", entry.kid)))?;
        }
        if set.keys.iter().filter(|e| e.state == State::Active).count() > 1 {
            return Err(KeyError::Invalid(
                "the keyset has more than one active key".into(),
            ));
        }
        Ok(set)
    }

    /// Reads the keyset at `path`; a file that does not exist is an empty set for `client_id`.
    pub fn read(path: &Path, client_id: &str) -> Result<Keyset, KeyError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let set = Keyset::parse(&bytes)
                    .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))?;
                if set.client_id != client_id {
                    return Err(KeyError::Invalid(format!(
                        "{}: the keyset is for client_id {}, not {client_id}",
                        path.display(),
                        set.client_id
                    )));
                }
                Ok(set)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Keyset::new(client_id)),
            Err(source) => Err(KeyError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn active(&self) -> Option<&Entry> {
        self.keys.iter().find(|e| e.state == State::Active)
    }

    pub fn pending(&self) -> Option<&Entry> {
        self.keys.iter().find(|e| e.state == State::Pending)
    }

    /// Whether `kid` is one of the set's retiring keys.
    pub fn retiring(&self, kid: Option<&str>) -> bool {
        self.keys
            .iter()
            .any(|e| e.state == State::Retiring && Some(e.kid.as_str()) == kid)
    }

    pub fn get_mut(&mut self, kid: &str) -> Option<&mut Entry> {
        self.keys.iter_mut().find(|e| e.kid == kid)
    }

    /// Writes the keyset durably: a new 0600 temporary file beside it under a random name (never
    /// opened through a link or over a planted file), fsynced, checked to be still the file
    /// written, renamed over it, and the directory fsynced. Only when this returns is the new
    /// content there after a crash.
    pub fn store(&self, path: &Path) -> Result<(), KeyError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| KeyError::Invalid(format!("the keyset cannot be written: {e}")))?;
        let failed = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let (mut file, tmp) = crate::support::private_file::create_beside(path).map_err(failed)?;
        let mut write = || -> std::io::Result<()> {
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            crate::support::private_file::rename_into_place(&file, &tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            failed(e)
        })
    }
}

/// The active key of the keyset at `path`, for signing.
pub fn load_active(path: &Path) -> Result<SigningKey, KeyError> {
    read_active(path).map(|(_, key)| key)
}

/// The keyset at `path` and its active key, read once.
pub fn read_active(path: &Path) -> Result<(Keyset, SigningKey), KeyError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => KeyError::Invalid(format!(
            "{}: the keyset does not exist yet: run `portvakt rotate` to make and register the first key, or `portvakt keys adopt` to take in a key registered earlier",
            path.display()
        )),
        _ => KeyError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let set =
        Keyset::parse(&bytes).map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))?;
    let active = set.active().ok_or_else(|| {
        KeyError::Invalid(format!(
            "{}: the keyset has no active key yet: run `portvakt rotate` until its first key is active",
            path.display()
        ))
    })?;
    let key = active
        .signing_key()
        .map(|key| {
            key.with_registration(super::Registration {
                created: active.created,
                exp: active.exp,
                last_pass: set.last_success,
            })
        })
        .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))?;
    Ok((set, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::secret::Secret;

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("portvakt-keyset-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entry(kid: &str, state: State) -> Entry {
        let key = crate::keys::generate(2048, kid).unwrap();
        Entry {
            kid: kid.into(),
            state,
            created: 1,
            registered: None,
            activated: None,
            retire_after: None,
            exp: None,
            jwk: Secret::new(key.private_jwk.expose().clone()),
        }
    }

    #[test]
    fn a_file_or_link_planted_where_the_temporary_file_once_went_gets_nothing() {
        let dir = tempdir();
        let path = dir.join("k.json");
        // The names an earlier build used (pid 1 in a container, or this process's).
        let planted = dir.join(".k.json.1.tmp");
        std::fs::write(&planted, b"planted").unwrap();
        let target = dir.join("stolen");
        let link = dir.join(format!(".k.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut set = Keyset::new("c");
        set.keys.push(entry("b", State::Active));
        set.store(&path).unwrap();
        assert_eq!(std::fs::read(&planted).unwrap(), b"planted");
        assert!(!target.exists(), "the keys went through a planted link");
        assert_eq!(Keyset::read(&path, "c").unwrap(), set);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_stored_keyset_reads_back_and_signs_with_its_active_key_only() {
        let dir = tempdir();
        let path = dir.join("k.json");
        let mut set = Keyset::new("c");
        set.keys.push(entry("a", State::Retiring));
        set.keys.push(entry("b", State::Active));
        set.keys.push(entry("c", State::Pending));
        set.store(&path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Keyset::read(&path, "c").unwrap(), set);
        assert_eq!(load_active(&path).unwrap().kid(), Some("b"));
        assert!(Keyset::read(&path, "other").is_err());
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }

    #[test]
    fn a_keyset_without_an_active_key_says_how_to_get_one_and_debug_hides_the_keys() {
        let dir = tempdir();
        let path = dir.join("k.json");
        let mut set = Keyset::new("c");
        set.keys.push(entry("p", State::Pending));
        set.store(&path).unwrap();
        let e = load_active(&path).unwrap_err().to_string();
        assert!(e.contains("portvakt rotate"), "{e}");
        let debug = format!("{set:?}");
        assert!(
            !debug.contains("\"d\"") && !debug.contains(" d:"),
            "{debug}"
        );
        assert!(set.keys[0].public_jwk().get("d").is_none());
        assert_eq!(set.keys[0].public_jwk()["use"], "sig");
    }

    #[test]
    fn times_read_as_unix_seconds_or_rfc3339_and_unknown_fields_are_ignored() {
        let mut set = Keyset::new("c");
        set.keys.push(entry("a", State::Active));
        let mut text: serde_json::Value = serde_json::to_value(&set).unwrap();
        text["environment"] = "prod".into();
        text["keys"][0]["created"] = "2027-01-15T10:00:00Z".into();
        text["keys"][0]["exp"] = "2027-04-15T10:00:00+00:00".into();
        let read = Keyset::parse(text.to_string().as_bytes()).unwrap();
        assert_eq!(read.keys[0].created, 1_800_007_200);
        assert_eq!(read.keys[0].exp, Some(1_807_783_200));
        text["keys"][0]["created"] = "last tuesday".into();
        let e = Keyset::parse(text.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn two_active_keys_or_a_repeated_kid_are_refused() {
        let mut set = Keyset::new("c");
        set.keys.push(entry("a", State::Active));
        set.keys.push(entry("b", State::Active));
        let text = serde_json::to_vec(&set).unwrap();
        assert!(Keyset::parse(&text).is_err());
        set.keys[1] = entry("a", State::Pending);
        let text = serde_json::to_vec(&set).unwrap();
        assert!(Keyset::parse(&text).is_err());
        assert!(Keyset::read(Path::new("/nonexistent/k.json"), "c")
            .unwrap()
            .keys
            .is_empty());
    }
}
