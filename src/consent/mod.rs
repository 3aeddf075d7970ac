//! Altinn 3 consent (samtykke) per call. Since Altinn II closed, Maskinporten issues the consent
//! token: the grant names the consent in `authorization_details` (`urn:altinn:consent`, its id, and
//! whom it is from), and each person's consent is a token of its own. A route that takes consent
//! per call reads the consent's id and giver from two headers, checks them before any Maskinporten
//! call, and gets the token from a bounded cache of consent slots
//! ([`crate::token::consents`]).
//!
//! A consent names a person by fødselsnummer: personal data. It never reaches a log line, a metric
//! label, `/readyz` or the status page; [`Giver`]'s `Debug` and `Display` mask it, and
//! [`mask_person_numbers`] cleans text that comes back from Maskinporten.

use crate::support::identifiers::{is_org_number, is_person_number};
use http::{HeaderMap, HeaderName};
use serde_json::{json, Value};
use std::fmt;

/// The `authorization_details` type of an Altinn consent.
pub const CONSENT_TYPE: &str = "urn:altinn:consent";
const PERSON: &str = "urn:altinn:person:identifier-no:";
const ORGANISATION: &str = "urn:altinn:organization:identifier-no:";

/// Who gave a consent: a person (fødselsnummer or D-number) or an organisation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Giver {
    Person(String),
    Organisation(String),
}

impl Giver {
    /// A header value: `urn:altinn:person:identifier-no:<11 digits>`,
    /// `urn:altinn:organization:identifier-no:<9 digits>`, or the bare number.
    pub fn parse(value: &str) -> Result<Giver, &'static str> {
        let value = value.trim();
        let (number, kind) = if let Some(n) = value.strip_prefix(PERSON) {
            (n, Some(true))
        } else if let Some(n) = value.strip_prefix(ORGANISATION) {
            (n, Some(false))
        } else if value.starts_with("urn:") {
            return Err("names neither urn:altinn:person:identifier-no: nor urn:altinn:organization:identifier-no:");
        } else {
            (value, None)
        };
        match (number.len(), kind) {
            (11, None | Some(true)) if is_person_number(number) => {
                Ok(Giver::Person(number.to_string()))
            }
            (11, _) => {
                Err("is not a fødselsnummer or D-number: 11 digits with both check digits right")
            }
            (9, None | Some(false)) if is_org_number(number) => {
                Ok(Giver::Organisation(number.to_string()))
            }
            (9, _) => Err("is not an organisation number: 9 digits with a valid check digit"),
            _ => {
                Err("is neither a fødselsnummer (11 digits) nor an organisation number (9 digits)")
            }
        }
    }

    /// The `from` of the grant's consent entry.
    pub fn urn(&self) -> String {
        match self {
            Giver::Person(n) => format!("{PERSON}{n}"),
            Giver::Organisation(n) => format!("{ORGANISATION}{n}"),
        }
    }
}

/// A person is never shown; an organisation number is no personal data.
impl fmt::Display for Giver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Giver::Person(_) => f.write_str("a person (fødselsnummer masked)"),
            Giver::Organisation(n) => write!(f, "organisation {n}"),
        }
    }
}

impl fmt::Debug for Giver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Giver::Person(_) => f.write_str("Person(***********)"),
            Giver::Organisation(n) => write!(f, "Organisation({n})"),
        }
    }
}

/// One consent named by a caller: its id (the consent request's UUID) and its giver.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Consent {
    pub id: uuid::Uuid,
    pub from: Giver,
}

impl Consent {
    /// The grant's `authorization_details` entry, as Altinn's guide writes it.
    pub fn authorization_detail(&self) -> Value {
        json!({ "type": CONSENT_TYPE, "id": self.id.to_string(), "from": self.from.urn() })
    }
}

/// Why a request's consent headers cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    /// The route takes consent per call, and the caller named none (or only half of one).
    #[error("this route calls on a person's consent: name it in the {id_header} (the consent's id) and {from_header} (whom it is from) headers{}", missing_note(.missing))]
    Missing {
        id_header: HeaderName,
        from_header: HeaderName,
        missing: Option<HeaderName>,
    },
    /// A header's value is not what it must be.
    #[error("{header}: the value {why}")]
    Invalid {
        header: HeaderName,
        why: &'static str,
    },
    /// The route takes no consent, and the caller named one.
    #[error(
        "{header}: this route does not take a consent per call; the request was not forwarded"
    )]
    NotTaken { header: HeaderName },
}

fn missing_note(missing: &Option<HeaderName>) -> String {
    missing
        .as_ref()
        .map(|h| format!("; {h} is missing"))
        .unwrap_or_default()
}

/// The consent part of a route: whether it takes a consent per call, and the headers a caller
/// names it in (a route that takes none still refuses a caller naming one).
#[derive(Debug, Clone)]
pub struct ConsentRule {
    pub per_call: bool,
    pub id_header: HeaderName,
    pub from_header: HeaderName,
}

impl ConsentRule {
    /// The consent this request names, checked: `Ok(None)` on a route that takes none.
    pub fn named(&self, headers: &HeaderMap) -> Result<Option<Consent>, ConsentError> {
        let id = headers.get(&self.id_header);
        let from = headers.get(&self.from_header);
        if !self.per_call {
            return match (id, from) {
                (None, None) => Ok(None),
                (Some(_), _) => Err(ConsentError::NotTaken {
                    header: self.id_header.clone(),
                }),
                (None, Some(_)) => Err(ConsentError::NotTaken {
                    header: self.from_header.clone(),
                }),
            };
        }
        let (Some(id), Some(from)) = (id, from) else {
            return Err(ConsentError::Missing {
                id_header: self.id_header.clone(),
                from_header: self.from_header.clone(),
                missing: match (id, from) {
                    (None, None) => None,
                    (None, _) => Some(self.id_header.clone()),
                    _ => Some(self.from_header.clone()),
                },
            });
        };
        let invalid = |header: &HeaderName, why| ConsentError::Invalid {
            header: header.clone(),
            why,
        };
        for header in [&self.id_header, &self.from_header] {
            if headers.get_all(header).iter().nth(1).is_some() {
                return Err(invalid(
                    header,
                    "is given more than once: name one consent per call",
                ));
            }
        }
        let id = id
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|s| s.len() == 36)
            .and_then(|s| uuid::Uuid::try_parse(s).ok())
            .ok_or_else(|| {
                invalid(
                    &self.id_header,
                    "is not a consent id: a UUID such as 77ed8698-e619-4066-9eb4-5c1eb3f165a1",
                )
            })?;
        let from = from
            .to_str()
            .map_err(|_| invalid(&self.from_header, "is not printable ASCII"))
            .and_then(|v| Giver::parse(v).map_err(|why| invalid(&self.from_header, why)))?;
        Ok(Some(Consent { id, from }))
    }

    /// The headers removed before forwarding.
    pub fn headers(&self) -> [&HeaderName; 2] {
        [&self.id_header, &self.from_header]
    }
}

/// `text` with every run of exactly 11 digits that reads as a fødselsnummer masked, for text from
/// outside (Maskinporten's error descriptions, a request path) on its way to a log or an answer.
pub fn mask_person_numbers(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 11 && is_person_number(&text[start..i]) {
                runs.push(start);
            }
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for start in runs {
        out.replace_range(start..start + 11, "***********");
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A synthetic person from Altinn's guide (not a real one).
    const TENOR: &str = "25922947409";

    #[test]
    fn givers_come_bare_or_as_urns_and_are_never_shown() {
        let person = Giver::parse(&format!("{PERSON}{TENOR}")).unwrap();
        assert_eq!(person, Giver::parse(TENOR).unwrap());
        assert_eq!(person.urn(), format!("{PERSON}{TENOR}"));
        assert!(!format!("{person} {person:?}").contains(TENOR));
        let org = Giver::parse("urn:altinn:organization:identifier-no:910753614").unwrap();
        assert_eq!(org, Giver::Organisation("910753614".into()));
        assert!(Giver::parse(&format!("{ORGANISATION}{TENOR}")).is_err());
        assert!(Giver::parse(&format!("{PERSON}910753614")).is_err());
        assert!(Giver::parse("01010012357").is_err());
        assert!(Giver::parse("urn:altinn:party:id:5").is_err());
    }

    #[test]
    fn person_numbers_are_masked_in_text() {
        let text = format!(
            "consent from urn:altinn:person:identifier-no:{TENOR} not found; order 12345678901"
        );
        let masked = mask_person_numbers(&text);
        assert!(!masked.contains(TENOR), "{masked}");
        assert!(masked.contains("identifier-no:***********"));
        // Not a valid fødselsnummer: left as it is.
        assert!(masked.contains("12345678901"));
        assert!(matches!(
            mask_person_numbers("no digits"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
