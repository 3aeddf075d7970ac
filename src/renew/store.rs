//! Where the renewer keeps a keyset: a file (0600, renamed into place, one writer at a time by a
//! lock file beside it), or a Kubernetes Secret (written with `resourceVersion`, so a write made on a
//! stale read is refused and the pass plans again). Replicas read either as a file: a Secret is
//! mounted as a volume at `key.keyset`.

use super::kubernetes::{KubeError, Kubernetes};
use crate::config::{Renewal, SecretRef};
use crate::keys::keyset::Keyset;
use base64::Engine as _;
use std::fs::File;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the keyset since this pass read it.
    #[error("the keyset changed since this pass read it")]
    Conflict,
    /// Another renewer holds the keyset now.
    #[error("another renewer is at work on this keyset ({0})")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
}

pub enum Store {
    File {
        path: PathBuf,
        client_id: String,
        /// Held for the whole pass.
        lock: Option<File>,
    },
    Secret {
        kube: Kubernetes,
        at: SecretRef,
        client_id: String,
        /// The `resourceVersion` of the last read.
        version: Option<String>,
    },
}

impl Store {
    pub fn for_renewal(renewal: &Renewal) -> Result<Store, StoreError> {
        match &renewal.renew.kubernetes_secret {
            None => Ok(Store::File {
                path: renewal.keyset.clone(),
                client_id: renewal.client_id.clone(),
                lock: None,
            }),
            Some(at) => Ok(Store::Secret {
                kube: Kubernetes::new(&at.api).map_err(|e| StoreError::Failed(e.to_string()))?,
                at: at.clone(),
                client_id: renewal.client_id.clone(),
                version: None,
            }),
        }
    }

    /// Makes this pass the only writer: the lock file beside a file keyset. (A Secret needs no
    /// lock: its writes compare `resourceVersion`.)
    pub fn begin(&mut self) -> Result<(), StoreError> {
        let Store::File { path, lock, .. } = self else {
            return Ok(());
        };
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let at = PathBuf::from(name);
        let file = crate::support::private_file::open_lock(&at).map_err(|e| {
            StoreError::Failed(format!("cannot open the lock file {}: {e}", at.display()))
        })?;
        match file.try_lock() {
            Ok(()) => {
                *lock = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(StoreError::Busy(format!("{} is locked", at.display())))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Failed(format!(
                "cannot lock {}: {e}",
                at.display()
            ))),
        }
    }

    pub async fn read(&mut self) -> Result<Keyset, StoreError> {
        match self {
            Store::File {
                path, client_id, ..
            } => Keyset::read(path, client_id).map_err(|e| StoreError::Failed(e.to_string())),
            Store::Secret {
                kube,
                at,
                client_id,
                version,
            } => {
                let secret = kube
                    .get_secret(&at.namespace, &at.name)
                    .await
                    .map_err(|e| {
                        StoreError::Failed(format!(
                            "reading Secret {}/{}: {e}",
                            at.namespace, at.name
                        ))
                    })?;
                *version = Some(secret.resource_version);
                let Some(data) = secret.data.get(&at.key) else {
                    return Ok(Keyset::new(client_id));
                };
                let set = Keyset::parse(data).map_err(|e| {
                    StoreError::Failed(format!(
                        "Secret {}/{} key {}: {e}",
                        at.namespace, at.name, at.key
                    ))
                })?;
                if &set.client_id != client_id {
                    return Err(StoreError::Failed(format!(
                        "Secret {}/{} holds the keyset of client_id {}, not {client_id}",
                        at.namespace, at.name, set.client_id
                    )));
                }
                Ok(set)
            }
        }
    }

    /// Writes durably: a file fsynced and renamed into place, or a Secret update that returned 200.
    pub async fn write(&mut self, keyset: &Keyset) -> Result<(), StoreError> {
        match self {
            Store::File { path, .. } => keyset
                .store(path)
                .map_err(|e| StoreError::Failed(format!("the keyset cannot be written: {e}"))),
            Store::Secret {
                kube, at, version, ..
            } => {
                let json = serde_json::to_vec_pretty(keyset)
                    .map_err(|e| StoreError::Failed(e.to_string()))?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(json);
                match kube
                    .update_secret_key(
                        &at.namespace,
                        &at.name,
                        &at.key,
                        &encoded,
                        version.as_deref(),
                    )
                    .await
                {
                    Ok(new_version) => {
                        *version = Some(new_version);
                        Ok(())
                    }
                    Err(KubeError::Conflict) => Err(StoreError::Conflict),
                    Err(e) => Err(StoreError::Failed(format!(
                        "writing Secret {}/{}: {e}",
                        at.namespace, at.name
                    ))),
                }
            }
        }
    }
}
