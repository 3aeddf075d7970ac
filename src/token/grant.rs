//! The JWT grant (RFC 7523) exactly as Maskinporten documents it: only documented claims, minted just
//! before it is sent.

use crate::keys::{SignError, SigningKey};
use base64::Engine as _;
use jsonwebtoken::Header;
use serde::Serialize;
use serde_json::Value;

/// Grants live this long; Maskinporten refuses `exp - iat` above 120 s.
pub const GRANT_LIFETIME_SECS: u64 = 120;

/// What a route asks Maskinporten for. Everything in it changes the token, so it is part of the cache key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GrantSpec {
    /// Space-joined, as the grant's `scope` claim.
    pub scope: String,
    /// Canonical JSON of the `resource` claim (a string or a list, as configured).
    pub resource: Option<String>,
    pub consumer_org: Option<String>,
    /// Canonical JSON of the `authorization_details` list.
    pub authorization_details: Option<String>,
}

impl GrantSpec {
    pub fn new(
        scopes: &[String],
        resource: Option<&Value>,
        consumer_org: Option<&str>,
        details: &[Value],
    ) -> Self {
        GrantSpec {
            scope: scopes.join(" "),
            resource: resource.map(Value::to_string),
            consumer_org: consumer_org.map(str::to_string),
            authorization_details: (!details.is_empty())
                .then(|| Value::Array(details.to_vec()).to_string()),
        }
    }

    /// The same grant with `detail` added to its `authorization_details` (a consent).
    pub fn with_detail(&self, detail: Value) -> GrantSpec {
        let mut details = match self
            .authorization_details
            .as_deref()
            .map(serde_json::from_str)
        {
            Some(Ok(Value::Array(details))) => details,
            _ => Vec::new(),
        };
        details.push(detail);
        GrantSpec {
            authorization_details: Some(Value::Array(details).to_string()),
            ..self.clone()
        }
    }
}

/// A consent's `from` may name a person: its fødselsnummer is masked.
impl std::fmt::Debug for GrantSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantSpec")
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .field("consumer_org", &self.consumer_org)
            .field(
                "authorization_details",
                &self
                    .authorization_details
                    .as_deref()
                    .map(crate::consent::mask_person_numbers),
            )
            .finish()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer_org: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<Value>,
}

/// Signs a fresh grant: new `jti`, `iat` = `now_unix`, `exp` = `iat` + 120, header `alg` and `kid`
/// (or `x5c` for a virksomhetssertifikat). The key signs the JWS input in this process or, for a
/// key in an HSM, inside the HSM.
pub async fn sign(
    audience: &str,
    client_id: &str,
    key: &SigningKey,
    spec: &GrantSpec,
    now_unix: u64,
) -> Result<String, SignError> {
    let mut header = Header::new(key.algorithm());
    // Exactly one of the two: a registered key's kid, or the virksomhetssertifikat itself.
    header.kid = key.kid().map(str::to_string);
    header.x5c = key.x5c().map(<[String]>::to_vec);
    let parse = |s: &Option<String>| s.as_deref().and_then(|j| serde_json::from_str(j).ok());
    let claims = Claims {
        aud: audience,
        iss: client_id,
        iat: now_unix,
        exp: now_unix + GRANT_LIFETIME_SECS,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: &spec.scope,
        resource: parse(&spec.resource),
        consumer_org: spec.consumer_org.as_deref(),
        authorization_details: parse(&spec.authorization_details),
    };
    let part = |json: Result<Vec<u8>, serde_json::Error>| {
        json.map(|bytes| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
            .map_err(|e| SignError::Software(e.to_string()))
    };
    let message = format!(
        "{}.{}",
        part(serde_json::to_vec(&header))?,
        part(serde_json::to_vec(&claims))?
    );
    let signature = key.sign(message.clone()).await?;
    Ok(format!("{message}.{signature}"))
}

pub use crate::support::time::unix_now;
