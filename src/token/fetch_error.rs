//! Why no token came back ([`FetchError`]), told so an operator can act: Maskinporten's MP code
//! read out of its answer, and a hint per code that names the scope, the key, the clock or the
//! parties involved. Nothing here ever holds a token or a whole answer body.

use super::grant::GrantSpec;
use std::time::Duration;

/// Why no token came back. Cloned to every request that waited for the same fetch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// Maskinporten refused the grant (4xx): retrying the same grant will not help.
    #[error("Maskinporten rejected the grant: {error}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Rejected {
        error: String,
        description: Option<String>,
        code: Option<String>,
        hint: String,
    },
    /// Maskinporten refused a grant for its consent (unknown, expired, withdrawn, not accepted,
    /// or given to another organisation): the caller's consent, not the route, is at fault.
    #[error("Maskinporten refused the consent: {error}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    ConsentRefused {
        error: String,
        description: Option<String>,
        code: Option<String>,
        hint: String,
    },
    /// Unreachable, timed out, 5xx or 429: worth retrying later.
    #[error("Maskinporten is unavailable: {0}")]
    Unavailable(String),
    /// Unavailable, and it is known when to ask again: Maskinporten's `Retry-After`, or the circuit
    /// breaker holding requests back.
    #[error("Maskinporten is unavailable: {reason}; next attempt in {} s", retry_after.as_secs().max(1))]
    Throttled {
        reason: String,
        retry_after: Duration,
    },
    #[error("Maskinporten's answer is not a token: {0}")]
    InvalidAnswer(String),
    #[error("the grant could not be signed: {0}")]
    Signing(String),
    /// The HSM holding the client's key could not sign (unreachable, session lost and not
    /// re-established): a token still valid keeps serving.
    #[error("the HSM holding the client's key could not sign the grant: {0}")]
    Hsm(String),
    /// Altinn's token exchange failed: not reachable (`status` None), or answered without a token.
    #[error("Altinn's token exchange failed: {reason}")]
    Exchange {
        status: Option<u16>,
        reason: String,
        hint: String,
    },
}

impl FetchError {
    /// The label for the token fetch metric.
    pub fn result_label(&self) -> &'static str {
        match self {
            FetchError::Rejected { .. } => "rejected",
            FetchError::ConsentRefused { .. } => "consent_refused",
            FetchError::Unavailable(_) | FetchError::Throttled { .. } => "unavailable",
            FetchError::InvalidAnswer(_) => "invalid_answer",
            FetchError::Signing(_) => "signing_failed",
            FetchError::Hsm(_) => "hsm_unavailable",
            FetchError::Exchange { .. } => "exchange_failed",
        }
    }

    /// Worth a quick second attempt within the same fetch: the other side was unreachable or busy.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Unavailable(_) | FetchError::Throttled { .. } => true,
            FetchError::Exchange { status, .. } => status.is_none_or(|s| s >= 500 || s == 429),
            _ => false,
        }
    }

    /// When it is worth asking again, where the other side said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Maskinporten's MP code, when it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            FetchError::Rejected { code, .. } | FetchError::ConsentRefused { code, .. } => {
                code.as_deref()
            }
            _ => None,
        }
    }

    /// The `code` label of the token fetch metric: the MP code, else the OAuth error (both come
    /// from small fixed sets), or Altinn's HTTP status.
    pub fn code_label(&self) -> String {
        match self {
            FetchError::Rejected {
                code: Some(code), ..
            }
            | FetchError::ConsentRefused {
                code: Some(code), ..
            } => code.clone(),
            FetchError::Rejected { error, .. } | FetchError::ConsentRefused { error, .. } => {
                error.clone()
            }
            FetchError::Exchange {
                status: Some(status),
                ..
            } => status.to_string(),
            _ => String::new(),
        }
    }

    /// One line an operator can act on.
    pub fn hint(&self) -> Option<&str> {
        match self {
            FetchError::Rejected { hint, .. }
            | FetchError::ConsentRefused { hint, .. }
            | FetchError::Exchange { hint, .. } => Some(hint),
            _ => None,
        }
    }
}

/// The `MP-123` code at the end of `error_uri` (or inside a description).
pub(super) fn mp_code(text: Option<&str>) -> Option<String> {
    let text = text?;
    let start = text.rfind("MP-")?;
    let digits: String = text[start + 3..]
        .chars()
        .take_while(char::is_ascii_digit)
        .take(5)
        .collect();
    // Maskinporten's codes are three digits (MP-100 to MP-199); a run of digits is no code, and
    // the code becomes a metric label, which must stay short.
    (1..=4)
        .contains(&digits.len())
        .then(|| format!("MP-{digits}"))
}

/// The system user's organisation in the grant, if it names one.
fn systemuser_org(spec: &GrantSpec) -> Option<String> {
    let details: serde_json::Value =
        serde_json::from_str(spec.authorization_details.as_deref()?).ok()?;
    details.as_array()?.iter().find_map(|d| {
        let id = d.get("systemuser_org")?.get("ID")?.as_str()?;
        Some(id.strip_prefix("0192:").unwrap_or(id).to_string())
    })
}

/// Keeps an error field short and printable, with no fødselsnummer: it goes into logs and
/// problem+json details.
pub(super) fn clean(s: &str) -> String {
    let short: String = s.chars().filter(|c| !c.is_control()).take(300).collect();
    crate::consent::mask_person_numbers(&short).into_owned()
}

/// What portvakt knows besides the grant when it explains a rejection.
#[derive(Debug, Default)]
pub struct Seen<'a> {
    /// The client's own organisation, when its virksomhetssertifikat names it.
    pub supplier_org: Option<&'a str>,
    /// Seconds Maskinporten's clock (its `Date` header) is ahead of this machine's.
    pub clock_skew: Option<i64>,
    /// When the key was made, where its kid or certificate tells.
    pub key_created: Option<i64>,
}

/// What an operator should do about a rejection, from Maskinporten's error codes.
pub fn hint(code: Option<&str>, error: &str, spec: &GrantSpec, seen: &Seen) -> String {
    let scope = &spec.scope;
    let supplier = seen.supplier_org.map_or_else(
        || "this client's organisation (the supplier)".to_string(),
        |o| format!("supplier {o}"),
    );
    let clock = match seen.clock_skew {
        Some(s) if s.abs() > 5 => format!(
            "{}: fix NTP on this machine",
            super::clock::describe_skew(s)
        ),
        Some(s) => format!(
            "{} (within 5 s), so check the grant's iat/exp",
            super::clock::describe_skew(s)
        ),
        None => "check this machine's clock (NTP): Maskinporten allows 10 s".to_string(),
    };
    let systemuser = systemuser_org(spec);
    match code {
        Some("MP-100") => "client not found: check client_id, and that maskinporten.environment is the one the client was created in (test and prod are separate worlds)".into(),
        Some("MP-110") => "wrong audience: maskinporten.environment or issuer does not match the token endpoint".into(),
        Some("MP-120") => "the virksomhetssertifikat was not accepted: it must be a valid Buypass or Commfides certificate for this environment (test certificates in test, prod in prod), or the client uses registered keys and needs kid".into(),
        Some("MP-124") => "the signature was not accepted: the kid is not registered on the client, or the key does not match it; upload the public JWK in Samarbeidsportalen (portvakt keygen writes it)".into(),
        Some("MP-121") => {
            let made = seen
                .key_created
                .map(|t| format!(" (this one dates from {})", crate::support::time::date(t)))
                .unwrap_or_default();
            format!("the registered key has expired: keys live at most one year after upload{made}; create a new one with portvakt keygen and register it in Samarbeidsportalen")
        }
        Some("MP-122") => "the virksomhetssertifikat belongs to another organisation than the client: use the certificate of the organisation that owns the client".into(),
        Some("MP-123") => "the grant's x5c or kid is malformed: x5c must be standard base64 DER, leaf first".into(),
        Some("MP-130") => format!("the grant was outside Maskinporten's time window: {clock}"),
        Some("MP-012") => "the grant was reused (same jti): another process may be replaying grants".into(),
        Some("MP-200" | "MP-201") => format!("the client lacks scope {scope}: ask the API owner for access (for ks:fiks, KS must register the organisation first)"),
        Some("MP-250" | "MP-251") => match &spec.consumer_org {
            Some(org) => format!("no delegation in Altinn from consumer {org} to {supplier} for scope {scope}: {org} must delegate it (Altinn > Tilgangsstyring > Delegere), and must have the scope itself"),
            None => format!("the consumer lacks scope {scope} or has not delegated it"),
        },
        Some("MP-303") => match &systemuser {
            Some(org) => format!("the system user for {org} was not accepted with this externalRef: set externalRef on the route (or in systemuser_orgs) exactly as the system user was created, or leave it out if it has none"),
            None => "authorization_details was not accepted: check externalRef".into(),
        },
        Some("MP-302") => match &systemuser {
            Some(org) => format!("{org} has no system user for this client's system: the organisation must create (approve) one in Altinn for the system registered with this client_id"),
            None => "authorization_details names a party Maskinporten does not know".into(),
        },
        Some("MP-301") => "authorization_details is malformed: for a system user it is type urn:altinn:systemuser with systemuser_org {authority: iso6523-actorid-upis, ID: 0192:<orgno>}".into(),
        _ => match error {
            "invalid_scope" => format!("the client lacks scope {scope}: ask the API owner for access"),
            "invalid_client" | "invalid_grant" => format!("check client_id, key and kid against Samarbeidsportalen; {clock}"),
            "forbidden" | "access_denied" => format!("access to scope {scope} was refused: check delegations in Altinn"),
            "invalid_request" => "the grant was malformed: check resource and authorization_details".into(),
            _ => "see Maskinporten's error description".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mp_codes() {
        assert_eq!(
            mp_code(Some(
                "https://docs.digdir.no/maskinporten_feilsoking#MP-121"
            ))
            .as_deref(),
            Some("MP-121")
        );
        assert_eq!(
            mp_code(Some("Invalid scope (MP-200)")).as_deref(),
            Some("MP-200")
        );
        assert_eq!(mp_code(Some("nothing")), None);
        assert_eq!(mp_code(None), None);
        // Found by the fuzzer: a run of digits became an unbounded metric label.
        assert_eq!(mp_code(Some(&format!("(MP-{})", "2".repeat(300)))), None);
    }

    #[test]
    fn hints_name_the_scope() {
        let spec = GrantSpec::new(&["nav:x".to_string()], None, None, &[]);
        let seen = Seen::default();
        assert!(hint(Some("MP-200"), "invalid_scope", &spec, &seen).contains("lacks scope nav:x"));
        assert!(hint(None, "invalid_scope", &spec, &seen).contains("ask the API owner"));
    }

    #[test]
    fn hints_name_the_key_date_the_clock_and_the_parties() {
        let spec = GrantSpec::new(&["nav:x".to_string()], None, Some("910753614"), &[]);
        let seen = Seen {
            supplier_org: Some("991825827"),
            clock_skew: Some(-42),
            key_created: Some(1_761_955_200), // 2025-11-01
        };
        assert!(hint(Some("MP-121"), "invalid_grant", &spec, &seen)
            .contains("(this one dates from 2025-11-01)"));
        assert!(hint(Some("MP-130"), "invalid_grant", &spec, &seen)
            .contains("this machine's clock is 42 s ahead of Maskinporten's: fix NTP"));
        assert!(hint(Some("MP-251"), "forbidden", &spec, &seen).contains(
            "no delegation in Altinn from consumer 910753614 to supplier 991825827 for scope nav:x"
        ));
        let user = serde_json::json!({"type": "urn:altinn:systemuser", "systemuser_org": {"authority": "iso6523-actorid-upis", "ID": "0192:889640782"}});
        let spec = GrantSpec::new(&["altinn:x".to_string()], None, None, &[user]);
        assert!(hint(Some("MP-303"), "invalid_request", &spec, &seen)
            .contains("the system user for 889640782 was not accepted with this externalRef"));
    }
}
