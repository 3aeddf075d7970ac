//! `clients.<name>.key`: which key form, its fields, and the key loaded, with every problem located.

use super::reader::{join, Reader};
use crate::keys::pkcs11::Pkcs11Source;
use crate::keys::{self, KeySource, SecretValue};
use crate::support::secret::Secret;
use serde_json::{Map, Value};
use std::path::Path;

const FORMS: [&str; 7] = [
    "pem",
    "jwk",
    "jwk_base64",
    "jwk_base64_file",
    "pkcs12",
    "pkcs11",
    "keyset",
];

/// The one key form a key is given in.
fn one_form(r: &mut Reader, k: &Map<String, Value>, path: &str) -> Option<&'static str> {
    let forms: Vec<&str> = FORMS.into_iter().filter(|f| k.contains_key(*f)).collect();
    if forms.len() != 1 {
        let found = if forms.is_empty() {
            "none".to_string()
        } else {
            forms.join(" and ")
        };
        r.issue(
            path,
            format!("needs exactly one key form (pem + kid, jwk, jwk_base64, jwk_base64_file, or pkcs12 + password), found {found}; or pkcs11 for a key in an HSM, or keyset for keys portvakt renews"),
        );
        return None;
    }
    Some(forms[0])
}

/// What may go with the form: a password only with pkcs12, `x5c_chain` only where a chain is
/// sent, a kid in Digdir's alphabet. Returns `x5c_chain`.
fn companions(
    r: &mut Reader,
    k: &Map<String, Value>,
    path: &str,
    form: &str,
    kid: Option<&str>,
) -> Option<Option<bool>> {
    let kid_path = join(path, "kid");
    let chain = r.boolean(k.get("x5c_chain"), &join(path, "x5c_chain"));
    if form != "pkcs12" {
        for only in ["password", "password_file", "alias"] {
            if k.contains_key(only) {
                r.issue(&join(path, only), "only goes with pkcs12");
            }
        }
    }
    if k.contains_key("x5c_chain") {
        match form {
            "pkcs12" => {}
            "pkcs11" if kid.is_some() => {
                r.issue(
                    &join(path, "x5c_chain"),
                    "does not go with kid: with pkcs11 it sends the token's certificate chain, which only a key without kid sends",
                );
                return None;
            }
            "pkcs11" => {}
            _ => r.issue(
                &join(path, "x5c_chain"),
                "only goes with pkcs12 (or pkcs11 without kid)",
            ),
        }
    }
    if let Some(kid) = kid {
        if !crate::keys::in_kid_alphabet(kid) {
            r.issue(&kid_path, "may hold only letters, digits, `.`, `_` and `-`");
            return None;
        }
    }
    Some(chain)
}

/// A virksomhetssertifikat's PKCS#12 file with its password (inline or in a file) and alias.
fn pkcs12(
    r: &mut Reader,
    k: &Map<String, Value>,
    path: &str,
    base: &Path,
    chain: Option<bool>,
) -> Option<KeySource> {
    let file = r.required_string(k.get("pkcs12"), &join(path, "pkcs12"));
    let password = inline_or_file(
        r,
        k,
        (path, base),
        "password",
        "pkcs12 needs the file's password: set password (e.g. ${P12_PASSWORD}) or password_file",
    );
    let alias = r.string(k.get("alias"), &join(path, "alias"));
    Some(KeySource::Pkcs12 {
        path: base.join(file?),
        password: password?,
        alias,
        chain: chain.unwrap_or(false),
    })
}

/// The key loaded from its source; a file that does not load is reported at its own field.
fn loaded(
    r: &mut Reader,
    source: KeySource,
    path: &str,
    form_path: String,
) -> Option<(KeySource, keys::SigningKey)> {
    match keys::load(&source) {
        Ok(key) => Some((source, key)),
        Err(e) => {
            // A password file that cannot be read is reported at password_file, not at the key.
            let at = match (&e, &source) {
                (
                    keys::KeyError::Read { path: unread, .. },
                    KeySource::Pkcs12 {
                        password: SecretValue::File(password_file),
                        ..
                    },
                ) if unread == password_file => join(path, "password_file"),
                (keys::KeyError::Read { path: unread, .. }, KeySource::Pkcs11 { at, .. })
                    if at.pin.file() == Some(unread.as_path()) =>
                {
                    join(&form_path, "pin_file")
                }
                _ => form_path,
            };
            r.issue(&at, e.to_string());
            None
        }
    }
}

pub(super) fn key(
    r: &mut Reader,
    v: &Value,
    path: &str,
    base: &Path,
) -> Option<(KeySource, keys::SigningKey)> {
    let k = r.mapping(v, path, &super::schema::KEY.keys())?;
    let form = one_form(r, k, path)?;
    let form_path = join(path, form);
    let kid_path = join(path, "kid");
    let kid = r.string(k.get("kid"), &kid_path);
    let chain = companions(r, k, path, form, kid.as_deref())?;
    let source = match form {
        "pem" => {
            let Some(kid) = kid else {
                r.issue(&kid_path, "is required with pem: the key id registered for this key in Samarbeidsportalen");
                return None;
            };
            KeySource::Pem {
                path: base.join(r.required_string(k.get("pem"), &form_path)?),
                kid,
            }
        }
        "pkcs11" => KeySource::Pkcs11 {
            at: pkcs11(r, k.get("pkcs11"), &form_path, base)?,
            kid,
            chain: chain.unwrap_or(false),
        },
        _ if kid.is_some() => {
            let why = match form {
                "pkcs12" => "a virksomhetssertifikat is sent as x5c, never with a kid",
                "keyset" => "the kid is the keyset's active key's",
                _ => "the kid comes from the JWK itself",
            };
            r.issue(&kid_path, format!("does not go with {form}: {why}"));
            return None;
        }
        "keyset" => KeySource::Keyset {
            path: base.join(r.required_string(k.get("keyset"), &form_path)?),
        },
        "jwk" => KeySource::Jwk {
            path: base.join(r.required_string(k.get("jwk"), &form_path)?),
        },
        "jwk_base64" => KeySource::JwkBase64 {
            value: SecretValue::Inline(Secret::new(
                r.required_string(k.get("jwk_base64"), &form_path)?,
            )),
        },
        "jwk_base64_file" => KeySource::JwkBase64 {
            value: SecretValue::File(
                base.join(r.required_string(k.get("jwk_base64_file"), &form_path)?),
            ),
        },
        _ => pkcs12(r, k, path, base, chain)?,
    };
    loaded(r, source, path, form_path)
}

/// `key.pkcs11`: the module, the token's label, the key's label and the PIN.
fn pkcs11(r: &mut Reader, v: Option<&Value>, path: &str, base: &Path) -> Option<Pkcs11Source> {
    let m = r.mapping(v?, path, &super::schema::PKCS11.keys())?;
    let module = r.required_string(m.get("module"), &join(path, "module"));
    let token = r.required_string(m.get("token"), &join(path, "token"));
    let label = r.required_string(m.get("key"), &join(path, "key"));
    let pin = inline_or_file(
        r,
        m,
        (path, base),
        "pin",
        "needs the token's user PIN: set pin (e.g. ${HSM_PIN}) or pin_file",
    );
    Some(Pkcs11Source {
        module: base.join(module?),
        token: token?,
        label: label?,
        pin: pin?,
    })
}

/// A secret given inline as `name` (usually `${ENV}`) or read from the file `name_file`: one of
/// the two, never both; `missing` is the problem when neither is set.
fn inline_or_file(
    r: &mut Reader,
    m: &Map<String, Value>,
    (path, base): (&str, &Path),
    name: &str,
    missing: &str,
) -> Option<SecretValue> {
    let file_key = format!("{name}_file");
    match (m.get(name), m.get(&file_key)) {
        (Some(_), Some(_)) => {
            r.issue(path, format!("has both {name} and {file_key}: keep one"));
            None
        }
        (Some(p), None) => r
            .string(Some(p), &join(path, name))
            .map(|p| SecretValue::Inline(Secret::new(p))),
        (None, Some(f)) => r
            .required_string(Some(f), &join(path, &file_key))
            .map(|f| SecretValue::File(base.join(f))),
        (None, None) => {
            r.issue(path, missing);
            None
        }
    }
}
