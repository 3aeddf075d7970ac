//! A token's one session: opened and logged into on first use, its key handles found once, and
//! opened again once when the HSM lost it (a removed token, a restarted HSM, a logout).

use super::{short, Open, Token};
use crate::keys::KeyError;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::HashMap;

impl Token {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn name(&self) -> String {
        format!("token `{}` in {}", self.label, self.module_path.display())
    }

    pub(super) fn invalid(&self, message: String) -> KeyError {
        KeyError::Invalid(format!("{}: {message}", self.name()))
    }

    /// The open session, opening one and logging in when there is none.
    pub(super) fn ensure_open<'a>(
        &self,
        open: &'a mut Option<Open>,
    ) -> Result<&'a mut Open, KeyError> {
        // A session kept from before may have been logged out (by another session of this
        // process) or closed (the token went away): log in again, or start afresh.
        if let Some(state) = open.as_ref() {
            match state.session.get_session_info().map(|i| i.session_state()) {
                Ok(SessionState::RoUser | SessionState::RwUser) => {}
                Ok(_) if !state.login_required => {}
                Ok(_) => {
                    tracing::warn!(token = %self.label, module = %self.module_path.display(), "HSM session logged out; logging in again");
                    self.login(&state.session)?;
                }
                Err(e) => {
                    tracing::warn!(token = %self.label, module = %self.module_path.display(), error = %short(&e), "HSM session lost; opening a new one");
                    *open = None;
                }
            }
        }
        if open.is_none() {
            let slot = self.slot()?;
            let session = self
                .module
                .open_ro_session(slot)
                .map_err(|e| self.invalid(format!("no session can be opened: {}", short(&e))))?;
            let login_required = self
                .module
                .get_token_info(slot)
                .map_or(true, |info| info.login_required());
            if login_required {
                self.login(&session)?;
            }
            *open = Some(Open {
                session,
                keys: HashMap::new(),
                login_required,
            });
        }
        open.as_mut()
            .ok_or_else(|| self.invalid("no session".into()))
    }

    pub(super) fn login(&self, session: &Session) -> Result<(), KeyError> {
        let mut pin = self.pin.lock().unwrap_or_else(|e| e.into_inner());
        if pin.1 {
            return Err(self.invalid(
                "the PIN is wrong (the token refused it before, and portvakt does not try it again lest the HSM lock it); correct `pin` or `pin_file`".into(),
            ));
        }
        let secret = AuthPin::from(pin.0.expose().to_string());
        match session.login(UserType::User, Some(&secret)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                pin.1 = true;
                Err(self.invalid(
                    "the PIN is wrong (the token refused the login); check `pin` or `pin_file`"
                        .into(),
                ))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                pin.1 = true;
                Err(self.invalid(
                    "the user PIN is locked after too many wrong attempts; the security officer must unlock it".into(),
                ))
            }
            Err(e) => Err(self.invalid(format!("the login failed: {}", short(&e)))),
        }
    }

    /// The slot whose token has this label; the error lists the labels there are.
    pub fn slot(&self) -> Result<Slot, KeyError> {
        let slots = self
            .module
            .get_slots_with_token()
            .map_err(|e| self.invalid(format!("the slots cannot be listed: {}", short(&e))))?;
        let mut labels = Vec::new();
        for slot in slots {
            let Ok(info) = self.module.get_token_info(slot) else {
                continue;
            };
            let label = info.label().trim_end().to_string();
            if label == self.label {
                return Ok(slot);
            }
            if info.token_initialized() {
                labels.push(format!("`{label}`"));
            }
        }
        Err(KeyError::Invalid(format!(
            "no token labelled `{}` in {}; the tokens there are: {}",
            self.label,
            self.module_path.display(),
            if labels.is_empty() {
                "none".to_string()
            } else {
                labels.join(", ")
            }
        )))
    }

    /// Opens a second, read-write session on this token, logged in (key generation, tests).
    pub fn rw_session(&self) -> Result<Session, KeyError> {
        let session = self
            .module
            .open_rw_session(self.slot()?)
            .map_err(|e| self.invalid(format!("no session can be opened: {}", short(&e))))?;
        self.login(&session)?;
        Ok(session)
    }
}
