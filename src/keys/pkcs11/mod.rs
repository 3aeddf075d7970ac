//! Keys that never leave an HSM: grants are signed inside the token through PKCS#11
//! (`CKM_SHA256_RSA_PKCS`), and the private key is never read.
//!
//! A PKCS#11 library is initialised once per process and a token is logged into once per process
//! (login state belongs to the application, not to a session), so both live in process-wide
//! registries: every client whose key is in the same token shares one [`Token`] and its session.
//! A session lost to a removed token, a restarted HSM or a logout is noticed on the next signature,
//! logged, and opened again once; only when that fails too does the signature fail.

mod generate;
mod key;
mod session;

pub use generate::{generate, Made};

use super::{KeyError, SecretValue};
use crate::support::secret::Secret;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Where a key is kept in an HSM (`key.pkcs11` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Source {
    /// The vendor's PKCS#11 library.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// `CKA_LABEL` of the private key (and of its certificate, for a virksomhetssertifikat).
    pub label: String,
    pub pin: SecretValue,
}

/// A token, logged into once, with one session that every signature with its keys shares.
pub struct Token {
    module_path: PathBuf,
    label: String,
    module: Pkcs11,
    /// The user PIN, and whether the token refused it: a refused PIN is not tried again until a
    /// new one is loaded, as HSMs lock the PIN after a few wrong tries.
    pin: Mutex<(Secret<String>, bool)>,
    open: Mutex<Option<Open>>,
}

/// A session with the user logged in, and the key handles found through it.
struct Open {
    session: Session,
    keys: HashMap<String, ObjectHandle>,
    /// Whether the token wants a login at all (`CKF_LOGIN_REQUIRED`); some cloud HSMs' libraries
    /// take their credentials elsewhere and have none.
    login_required: bool,
}

/// A private key inside a token: its label and the public half read from the token.
pub struct HsmKey {
    token: Arc<Token>,
    label: String,
    modulus: Vec<u8>,
}

/// What `check` and the status page show about an HSM key.
#[derive(Debug, Clone)]
pub struct Placement {
    pub module: PathBuf,
    pub token: String,
    pub label: String,
}

/// What was read from the token when the key was loaded.
pub struct Found {
    pub key: HsmKey,
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
    /// The certificate stored under the key's label, and every other certificate in the token
    /// (the CA chain), as DER.
    pub certificate: Option<Vec<u8>>,
    pub others: Vec<Vec<u8>>,
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(Default::default)
}

/// Tokens by module path and token label.
type Tokens = Mutex<HashMap<(PathBuf, String), Arc<Token>>>;

/// A certificate in a token, as DER.
type Der = Vec<u8>;

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

/// The PKCS#11 library at `path`, loaded and initialised once for the whole process.
pub fn module(path: &Path) -> Result<Pkcs11, KeyError> {
    let mut modules = modules().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(module) = modules.get(path) {
        return Ok(module.clone());
    }
    let module = Pkcs11::new(path).map_err(|e| {
        KeyError::Invalid(format!(
            "the PKCS#11 module {} cannot be loaded ({e}): install the HSM vendor's library or correct `module`",
            path.display()
        ))
    })?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(KeyError::Invalid(format!(
                "the PKCS#11 module {} cannot be initialised: {}",
                path.display(),
                short(&e)
            )))
        }
    }
    modules.insert(path.to_path_buf(), module.clone());
    Ok(module)
}

/// The token labelled `label` in the module at `path`, shared by every key kept in it.
pub fn token(path: &Path, label: &str, pin: Secret<String>) -> Result<Arc<Token>, KeyError> {
    let module = module(path)?;
    let mut tokens = tokens().lock().unwrap_or_else(|e| e.into_inner());
    let key = (path.to_path_buf(), label.to_string());
    if let Some(token) = tokens.get(&key) {
        // A reloaded configuration may bring a new PIN; the next login uses it. The same PIN
        // again (another client in this token, a reload that kept it) keeps its mark: a refused
        // PIN is never tried twice, lest the HSM lock the user PIN after a few failures.
        let mut held = token.pin.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 != pin {
            *held = (pin, false);
        }
        return Ok(Arc::clone(token));
    }
    let token = Arc::new(Token {
        module_path: path.to_path_buf(),
        label: label.to_string(),
        module,
        pin: Mutex::new((pin, false)),
        open: Mutex::new(None),
    });
    tokens.insert(key, Arc::clone(&token));
    Ok(token)
}

/// Finds the private key and what belongs with it, checking that it can sign RS256 grants.
pub fn load(source: &Pkcs11Source) -> Result<Found, KeyError> {
    let pin = source.pin.read()?;
    let token = token(&source.module, &source.token, pin)?;
    let mut open = token.lock();
    let result = (|| {
        let open = token.ensure_open(&mut open)?;
        let session = &open.session;
        let handle = find_key(session, &source.label).map_err(|e| token.invalid(e.to_string()))?;
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::Sign,
                ],
            )
            .map_err(|e| {
                token.invalid(format!(
                    "the key's attributes cannot be read: {}",
                    short(&e)
                ))
            })?;
        let (mut modulus, mut exponent, mut kind, mut sign) = (None, None, None, true);
        for attr in attrs {
            match attr {
                Attribute::KeyType(k) => kind = Some(k),
                Attribute::Modulus(n) => modulus = Some(n),
                Attribute::PublicExponent(e) => exponent = Some(e),
                Attribute::Sign(s) => sign = s,
                _ => {}
            }
        }
        if kind != Some(KeyType::RSA) {
            return Err(token.invalid(format!(
                "the key `{}` is not an RSA key: Maskinporten takes RSA keys only (RS256)",
                source.label
            )));
        }
        let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
            return Err(token.invalid(format!(
                "the token does not show the public half (modulus, exponent) of `{}`",
                source.label
            )));
        };
        let modulus = super::der::x509::trim_leading_zeros(&modulus);
        let bits = modulus.len() * 8;
        if bits < super::MIN_RSA_BITS {
            return Err(token.invalid(format!(
                "the key `{}` has {bits} bits; Maskinporten needs at least {}",
                source.label,
                super::MIN_RSA_BITS
            )));
        }
        if !sign {
            return Err(token.invalid(format!(
                "the key `{}` may not sign (CKA_SIGN is false)",
                source.label
            )));
        }
        let (certificate, others) = certificates(session, &source.label).map_err(|e| {
            token.invalid(format!("the certificates cannot be read: {}", short(&e)))
        })?;
        open.keys.insert(source.label.clone(), handle);
        Ok(Found {
            key: HsmKey {
                token: Arc::clone(&token),
                label: source.label.clone(),
                modulus: modulus.clone(),
            },
            exponent: super::der::x509::trim_leading_zeros(&exponent),
            modulus,
            certificate,
            others,
        })
    })();
    drop(open);
    result
}

/// The private key labelled `label`; the error lists the private keys' labels.
fn find_key(session: &Session, label: &str) -> Result<ObjectHandle, KeyError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| KeyError::Invalid(format!("the keys cannot be listed: {}", short(&e))))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => {
            let all = session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .unwrap_or_default();
            let mut labels: Vec<String> = all
                .into_iter()
                .filter_map(|h| session.get_attributes(h, &[AttributeType::Label]).ok())
                .flatten()
                .filter_map(|a| match a {
                    Attribute::Label(l) => Some(format!("`{}`", String::from_utf8_lossy(&l))),
                    _ => None,
                })
                .collect();
            labels.sort();
            Err(KeyError::Invalid(format!(
                "no private key labelled `{label}` in the token; its private keys are: {}",
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels.join(", ")
                }
            )))
        }
        many => Err(KeyError::Invalid(format!(
            "{} private keys are labelled `{label}` in the token: give the key a label of its own",
            many.len()
        ))),
    }
}

/// The certificate labelled `label`, and every other certificate in the token.
fn certificates(session: &Session, label: &str) -> Result<(Option<Der>, Vec<Der>), CkError> {
    let mut own = None;
    let mut others = Vec::new();
    for handle in session.find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])? {
        let (mut value, mut name) = (None, None);
        for attr in session.get_attributes(handle, &[AttributeType::Value, AttributeType::Label])? {
            match attr {
                Attribute::Value(v) => value = Some(v),
                Attribute::Label(l) => name = Some(l),
                _ => {}
            }
        }
        let Some(value) = value else { continue };
        if own.is_none() && name.as_deref() == Some(label.as_bytes()) {
            own = Some(value);
        } else {
            others.push(value);
        }
    }
    Ok((own, others))
}

/// A PKCS#11 error in one line: the return value's name, not the specification's paragraph.
fn short(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}
