//! Signing with a key inside the token, and finding it again when the session was lost.

use super::{find_key, short, HsmKey, Open, Placement};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use std::fmt;

impl HsmKey {
    /// Signs `message` with RSASSA-PKCS1-v1_5 over SHA-256 inside the token. Blocks: call it off
    /// the async workers. A lost session or login is re-established once before giving up.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut open = self.token.lock();
        match self.sign_in(&mut open, message) {
            Ok(signature) => Ok(signature),
            Err(first) => {
                tracing::warn!(
                    token = %self.token.label,
                    module = %self.token.module_path.display(),
                    key = %self.label,
                    error = %first,
                    "HSM session lost; opening a new session and logging in again"
                );
                // Closing a session of a token that is gone may fail too; nothing to do about it.
                *open = None;
                self.sign_in(&mut open, message)
                    .map_err(|e| format!("{}: {e}", self.token.name()))
            }
        }
    }

    fn sign_in(&self, open: &mut Option<Open>, message: &[u8]) -> Result<Vec<u8>, String> {
        let state = self.token.ensure_open(open).map_err(|e| e.to_string())?;
        let handle = match state.keys.get(&self.label) {
            Some(handle) => *handle,
            None => {
                let handle = find_key(&state.session, &self.label).map_err(|e| e.to_string())?;
                // The label may now name another key (a re-initialised token): never sign with it.
                let modulus = match state
                    .session
                    .get_attributes(handle, &[AttributeType::Modulus])
                {
                    Ok(attrs) => attrs.into_iter().find_map(|a| match a {
                        Attribute::Modulus(n) => {
                            Some(crate::keys::der::x509::trim_leading_zeros(&n))
                        }
                        _ => None,
                    }),
                    Err(e) => return Err(short(&e)),
                };
                if modulus.as_ref() != Some(&self.modulus) {
                    return Err(format!(
                        "the key labelled `{}` is no longer the key portvakt loaded; reload the configuration",
                        self.label
                    ));
                }
                state.keys.insert(self.label.clone(), handle);
                handle
            }
        };
        state
            .session
            .sign(&Mechanism::Sha256RsaPkcs, handle, message)
            .map_err(|e| {
                // The handle may be stale; find the key again next time.
                state.keys.remove(&self.label);
                short(&e)
            })
    }

    pub fn placement(&self) -> Placement {
        Placement {
            module: self.token.module_path.clone(),
            token: self.token.label.clone(),
            label: self.label.clone(),
        }
    }
}

impl fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmKey")
            .field("module", &self.token.module_path)
            .field("token", &self.token.label)
            .field("label", &self.label)
            .finish()
    }
}
