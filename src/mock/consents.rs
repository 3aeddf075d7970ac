//! The mock's Altinn 3 consents, shared by the mock Altinn (where a data consumer requests one,
//! `POST /accessmanagement/api/v1/enterprise/consentrequests/`) and the mock Maskinporten (which
//! checks a grant's `urn:altinn:consent` against it and puts the consent's details in the token).
//! Tests and the demo play the person: they accept or withdraw a request.

use crate::consent::Giver;
use crate::support::sync::lock;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where a consent request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    /// Asked for; the person has not answered.
    Pending,
    /// Given by the person at this Unix time.
    Accepted(i64),
    /// Withdrawn by the person after it was given.
    Revoked,
}

#[derive(Debug, Clone)]
struct MockConsent {
    /// `urn:altinn:person:identifier-no:...` or `urn:altinn:organization:identifier-no:...`.
    from: String,
    /// The data consumer's organisation number.
    to: String,
    valid_to: i64,
    rights: Value,
    state: ConsentState,
}

/// Why a grant's consent is refused, in the words the token endpoint answers with.
pub struct Refused(pub String);

/// The consents the mocks know, by id.
#[derive(Clone, Default)]
pub struct ConsentStore {
    consents: Arc<Mutex<HashMap<uuid::Uuid, MockConsent>>>,
}

impl ConsentStore {
    /// A consent as a person gives it, straight into the store: `from` a fødselsnummer or
    /// organisation number (bare or as its urn), `to` the data consumer's organisation number.
    pub fn give(&self, id: &str, from: &str, to: &str, valid_to: i64) {
        let (Ok(id), Ok(from)) = (uuid::Uuid::try_parse(id), Giver::parse(from)) else {
            return;
        };
        lock(&self.consents).insert(
            id,
            MockConsent {
                from: from.urn(),
                to: to.to_string(),
                valid_to,
                rights: default_rights(),
                state: ConsentState::Accepted(crate::support::time::unix_now() as i64),
            },
        );
    }

    /// The person accepts the request `id`; false if there is none.
    pub fn accept(&self, id: &str) -> bool {
        self.set(
            id,
            ConsentState::Accepted(crate::support::time::unix_now() as i64),
        )
    }

    /// The person withdraws the consent `id`; false if there is none.
    pub fn revoke(&self, id: &str) -> bool {
        self.set(id, ConsentState::Revoked)
    }

    /// How many consents (and requests) the store holds.
    pub fn len(&self) -> usize {
        lock(&self.consents).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn set(&self, id: &str, state: ConsentState) -> bool {
        let Ok(id) = uuid::Uuid::try_parse(id) else {
            return false;
        };
        lock(&self.consents)
            .get_mut(&id)
            .map(|c| c.state = state)
            .is_some()
    }

    /// A consent request as Altinn's API takes it, from the data consumer `consumer` (the
    /// token's consumer). Returns the request as Altinn answers it, or a 400/409 reason.
    pub fn request(
        &self,
        body: &Value,
        consumer: &str,
        view_base: &str,
    ) -> Result<Value, (u16, String)> {
        let bad = |why: &str| (400, why.to_string());
        let id = body["id"]
            .as_str()
            .and_then(|id| uuid::Uuid::try_parse(id).ok())
            .ok_or_else(|| bad("id must be a UUID"))?;
        let from = body["from"]
            .as_str()
            .filter(|f| f.starts_with("urn:"))
            .and_then(|f| Giver::parse(f).ok())
            .ok_or_else(|| bad("from must be urn:altinn:person:identifier-no:<fødselsnummer> or urn:altinn:organization:identifier-no:<orgnr>"))?;
        let to = body["to"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:altinn:organization:identifier-no:"))
            .filter(|t| crate::support::identifiers::is_org_number(t))
            .ok_or_else(|| bad("to must be urn:altinn:organization:identifier-no:<orgnr>"))?;
        if to != consumer {
            return Err((
                403,
                format!("to must be the organisation the token is for ({consumer})"),
            ));
        }
        let valid_to = body["validTo"]
            .as_str()
            .and_then(crate::support::time::parse_rfc3339)
            .filter(|t| *t > crate::support::time::unix_now() as i64)
            .ok_or_else(|| bad("validTo must be an RFC 3339 time in the future"))?;
        let rights = body["consentRights"].clone();
        if rights.as_array().is_none_or(|r| r.is_empty()) {
            return Err(bad("consentRights must list at least one right"));
        }
        let mut consents = lock(&self.consents);
        if consents.contains_key(&id) {
            return Err((409, format!("a consent request with id {id} exists")));
        }
        consents.insert(
            id,
            MockConsent {
                from: from.urn(),
                to: to.to_string(),
                valid_to,
                rights: rights.clone(),
                state: ConsentState::Pending,
            },
        );
        let mut answer = body.clone();
        answer["viewUri"] = json!(format!(
            "{view_base}accessmanagement/ui/consent/request?id={id}"
        ));
        Ok(answer)
    }

    /// A grant's consent entry, checked as Maskinporten checks it with Altinn for the token's
    /// consumer; the entry as the token carries it when it holds.
    pub fn check(&self, detail: &Value, consumer: &str, now: i64) -> Result<Value, Refused> {
        let id = detail["id"].as_str().unwrap_or_default();
        let refused = |why: String| Refused(format!("Consent {id} {why}"));
        let uuid = uuid::Uuid::try_parse(id).map_err(|_| refused("is not a UUID".into()))?;
        let consents = lock(&self.consents);
        let consent = consents
            .get(&uuid)
            .ok_or_else(|| refused("was not found".into()))?;
        let consented = match consent.state {
            ConsentState::Pending => return Err(refused("has not been accepted".into())),
            ConsentState::Revoked => return Err(refused("has been revoked".into())),
            ConsentState::Accepted(at) => at,
        };
        if consent.valid_to <= now {
            return Err(refused(format!(
                "has expired (validTo {})",
                rfc3339(consent.valid_to)
            )));
        }
        if detail["from"].as_str() != Some(consent.from.as_str()) {
            return Err(refused("is not from the party named in from".into()));
        }
        if consent.to != consumer {
            return Err(refused(format!(
                "was given to another organisation than the consumer {consumer}"
            )));
        }
        Ok(json!({
            "type": crate::consent::CONSENT_TYPE,
            "id": id,
            "from": consent.from,
            "to": { "authority": "iso6523-actorid-upis", "ID": format!("0192:{}", consent.to) },
            "consented": rfc3339(consented),
            "validTo": rfc3339(consent.valid_to),
            "consentRights": consent.rights,
        }))
    }
}

fn default_rights() -> Value {
    json!([{
        "action": ["consent"],
        "resource": [{ "type": "urn:altinn:resource", "value": "standard-samtykke-for-dele-data" }],
        "metaData": { "inntektsaar": "2025" },
    }])
}

/// RFC 3339 in UTC, as Altinn writes `consented` and `validTo`.
fn rfc3339(unix: i64) -> String {
    format!("{}+00:00", crate::support::time::iso(unix))
}
