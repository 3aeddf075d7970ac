//! Where a client's key comes from (`clients.<name>.key`): a file in one of its forms, a
//! keyset, a value from the environment, a PKCS#12 file with its password, or a key inside an HSM;
//! and [`load`], which reads any of them into one [`SigningKey`], naming the file when it fails.

use super::{jwk, keyset, pkcs11, KeyError, SigningKey};
use crate::support::secret::Secret;
use std::path::{Path, PathBuf};

/// A secret given in the config itself (usually from `${ENV}`) or read from a file (`*_file`), as
/// Kubernetes mounts secrets. Files are read again when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretValue {
    Inline(Secret<String>),
    File(PathBuf),
}

impl SecretValue {
    pub fn read(&self) -> Result<Secret<String>, KeyError> {
        match self {
            SecretValue::Inline(value) => Ok(value.clone()),
            // Secret files usually end in a newline that is not part of the secret.
            SecretValue::File(path) => {
                let bytes = read(path)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    KeyError::Invalid(format!("{}: not UTF-8 text", path.display()))
                })?;
                Ok(Secret::new(text.trim_end_matches(['\r', '\n']).to_string()))
            }
        }
    }

    pub fn file(&self) -> Option<&Path> {
        match self {
            SecretValue::Inline(_) => None,
            SecretValue::File(path) => Some(path),
        }
    }
}

/// Where a client's key comes from (`clients.<name>.key` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Pem {
        path: PathBuf,
        kid: String,
    },
    Jwk {
        path: PathBuf,
    },
    JwkBase64 {
        value: SecretValue,
    },
    /// A virksomhetssertifikat: the grant carries the certificate (`x5c`) instead of a `kid`.
    Pkcs12 {
        path: PathBuf,
        password: SecretValue,
        alias: Option<String>,
        /// Send the whole chain in `x5c`, not only the leaf.
        chain: bool,
    },
    /// A keyset that `portvakt rotate` keeps: its active key signs.
    Keyset {
        path: PathBuf,
    },
    /// A key inside an HSM, reached through its PKCS#11 library.
    Pkcs11 {
        at: pkcs11::Pkcs11Source,
        /// A registered key's id; without it the token's certificate is sent as `x5c`.
        kid: Option<String>,
        chain: bool,
    },
}

impl KeySource {
    /// The files this key is read from, which the key watcher checks for changes.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            KeySource::Pem { path, .. } | KeySource::Jwk { path } | KeySource::Keyset { path } => {
                vec![path]
            }
            KeySource::JwkBase64 { value } => value.file().into_iter().collect(),
            KeySource::Pkcs12 { path, password, .. } => {
                let mut files = vec![path.as_path()];
                files.extend(password.file());
                files
            }
            KeySource::Pkcs11 { at, .. } => at.pin.file().into_iter().collect(),
        }
    }
}

/// Loads and checks a key from its source. Errors name the file.
pub fn load(source: &KeySource) -> Result<SigningKey, KeyError> {
    match source {
        KeySource::Pem { path, kid } => {
            SigningKey::from_pem(&read(path)?, kid).map_err(in_file(path))
        }
        KeySource::Jwk { path } => jwk::load(&read(path)?, "jwk").map_err(in_file(path)),
        KeySource::Keyset { path } => keyset::load_active(path),
        KeySource::JwkBase64 { value } => {
            let load = || jwk::load(&jwk::decode_base64(value.read()?.expose())?, "jwk_base64");
            match value.file() {
                Some(path) => load().map_err(in_file(path)),
                None => load(),
            }
        }
        KeySource::Pkcs12 {
            path,
            password,
            alias,
            chain,
        } => {
            let password = password.read()?;
            SigningKey::from_pkcs12(
                &read(path)?,
                password.expose(),
                alias.as_deref(),
                *chain,
                crate::support::time::unix_now() as i64,
            )
            .map_err(in_file(path))
        }
        KeySource::Pkcs11 { at, kid, chain } => {
            let found = pkcs11::load(at)?;
            SigningKey::from_hsm(
                found,
                kid.clone(),
                *chain,
                crate::support::time::unix_now() as i64,
            )
            .map_err(|e| match e {
                KeyError::Invalid(m) => KeyError::Invalid(format!(
                    "token `{}` in {}: {m}",
                    at.token,
                    at.module.display()
                )),
                read => read,
            })
        }
    }
}

/// Prefixes a key problem with the file it is in.
fn in_file(path: &Path) -> impl Fn(KeyError) -> KeyError + '_ {
    move |e| match e {
        KeyError::Invalid(m) => KeyError::Invalid(format!("{}: {m}", path.display())),
        read => read,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}
