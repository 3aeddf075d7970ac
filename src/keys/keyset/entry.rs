//! One key of a keyset: its state in the renewal (pending, active, retiring), its dates, and the
//! private JWK it signs with, which never prints.

use crate::keys::{jwk, KeyError, SigningKey};
use crate::support::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Made and stored; registered or about to be; never signs.
    Pending,
    /// The one key grants are signed with.
    Active,
    /// Replaced; stays registered until `retire_after`, so tokens and replicas that still use it work.
    Retiring,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Retiring => "retiring",
        }
    }
}

/// One key of the set. Times are written as Unix seconds; RFC 3339 date-times are read too, for
/// a keyset written by hand or by another tool.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub kid: String,
    pub state: State,
    #[serde(deserialize_with = "crate::support::time::unix_or_rfc3339::required")]
    pub created: i64,
    /// When Digdir was first seen to list it (set by the renewer).
    #[serde(
        default,
        deserialize_with = "crate::support::time::unix_or_rfc3339::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub registered: Option<i64>,
    #[serde(
        default,
        deserialize_with = "crate::support::time::unix_or_rfc3339::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub activated: Option<i64>,
    /// A retiring key is removed from Digdir's set after this.
    #[serde(
        default,
        deserialize_with = "crate::support::time::unix_or_rfc3339::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub retire_after: Option<i64>,
    /// The `exp` Digdir last reported for it.
    #[serde(
        default,
        deserialize_with = "crate::support::time::unix_or_rfc3339::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp: Option<i64>,
    /// The private RSA JWK (with `d`, `p`, `q`...).
    #[serde(with = "secret_json")]
    pub jwk: Secret<Value>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("kid", &self.kid)
            .field("state", &self.state)
            .field("created", &self.created)
            .field("registered", &self.registered)
            .field("activated", &self.activated)
            .field("retire_after", &self.retire_after)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// The public half, as Digdir's JWKS takes it (`kty, use, alg, kid, n, e`).
    pub fn public_jwk(&self) -> Value {
        let private = self.jwk.expose();
        let mut public = serde_json::Map::new();
        for name in ["kty", "use", "alg", "kid", "n", "e"] {
            if let Some(v) = private.get(name) {
                public.insert(name.into(), v.clone());
            }
        }
        public.insert("use".into(), "sig".into());
        public.entry("alg").or_insert_with(|| "RS256".into());
        Value::Object(public)
    }

    /// The key, loaded for signing.
    pub fn signing_key(&self) -> Result<SigningKey, KeyError> {
        Entry::signing_key_of(self.jwk.expose())
    }

    /// A private JWK, loaded for signing.
    pub fn signing_key_of(private: &Value) -> Result<SigningKey, KeyError> {
        jwk::load(private.to_string().as_bytes(), "keyset")
    }
}

/// A JWK kept as a secret: written as its JSON, never printed.
mod secret_json {
    use crate::support::secret::Secret;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(value: &Secret<Value>, s: S) -> Result<S::Ok, S::Error> {
        value.expose().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Secret<Value>, D::Error> {
        Value::deserialize(d).map(Secret::new)
    }
}
