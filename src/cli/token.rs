//! `portvakt token`: fetch one token exactly as a route would and print it, for debugging an
//! integration from a shell. The token goes to stdout because that is what was asked for; nothing
//! is logged.

use crate::config::{Config, RouteConfig};
use crate::token::FetchError;
use crate::token::GrantSpec;
use base64::Engine as _;
use serde_json::{json, Value};

/// What the command prints and how it exits.
pub struct Outcome {
    pub json: Value,
    /// A line for stderr when Maskinporten refused or could not be reached.
    pub error: Option<String>,
}

/// Fetches a token for `route_name` with the route's client, key and grant, acting for `party`
/// (a consumer org or system user org the route allows) when given. For a route with
/// `altinn_exchange`, the token is exchanged at Altinn too, and both are printed.
pub async fn run(
    config: &Config,
    route_name: &str,
    party: Option<&str>,
    consent: Option<(&str, &str)>,
    decode: bool,
) -> anyhow::Result<Outcome> {
    let Some(route) = config.routes.iter().find(|r| r.name == route_name) else {
        let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!(
            "no route named `{route_name}` (routes: {})",
            names.join(", ")
        );
    };
    let Some(client) = config.clients.iter().find(|c| c.name == route.client) else {
        anyhow::bail!("route {route_name} names unknown client {}", route.client);
    };
    let tls = crate::build::tls_config(&[])?;
    let endpoint = crate::build::token_endpoint(config, &tls)?;
    let spec = crate::build::party_grant_spec(route, party).map_err(anyhow::Error::msg)?;
    let spec = with_consent(spec, route, consent)?;
    let mut out = json!({
        "route": route.name,
        "client": client.name,
        "client_id": client.client_id,
        "key": client.key.label(),
        "token_endpoint": endpoint.url(),
        "requested_scope": spec.scope,
    });
    if let Some(org) = &spec.consumer_org {
        out["consumer_org"] = json!(org);
    }
    if let Some(details) = &spec.authorization_details {
        out["authorization_details"] = serde_json::from_str(details).unwrap_or(Value::Null);
    }
    let asked = endpoint
        .request(&client.client_id, &client.key, &spec)
        .await;
    // As the route's token slot takes it: a consent's refusal told apart, its life bounded.
    let asked =
        crate::token::consents::settle(&spec, asked, crate::support::time::unix_now() as i64);
    let issued = match asked {
        Ok(issued) => issued,
        Err(e) => return Ok(failed(out, &e)),
    };
    let token = issued.access_token.expose();
    out["access_token"] = json!(token);
    out["token_type"] = json!("Bearer");
    out["expires_in"] = json!(issued.expires_in);
    if let Some(scope) = &issued.scope {
        out["scope"] = json!(scope);
    }
    if decode {
        describe(&mut out, token, "header", "claims");
    }
    let Some(altinn) = &route.altinn_exchange else {
        return Ok(Outcome {
            json: out,
            error: None,
        });
    };
    exchanged(config, tls, &altinn.url, token, out, decode).await
}

/// The route's grant with the consent named on the command line, where the route takes one.
fn with_consent(
    spec: GrantSpec,
    route: &RouteConfig,
    consent: Option<(&str, &str)>,
) -> anyhow::Result<GrantSpec> {
    let route_name = &route.name;
    Ok(match (consent, route.consent.per_call) {
        (Some((id, from)), true) => {
            spec.with_detail(named_consent(id, from)?.authorization_detail())
        }
        (None, false) => spec,
        (Some(_), false) => anyhow::bail!(
            "route {route_name} does not take a consent per call (consent_per_call is not set)"
        ),
        (None, true) => anyhow::bail!(
            "route {route_name} takes a consent per call: name it with --consent ID --from FNR"
        ),
    })
}

/// The Maskinporten token exchanged at Altinn (`url`), added to `out`.
async fn exchanged(
    config: &Config,
    tls: rustls::ClientConfig,
    url: &str,
    token: &str,
    mut out: Value,
    decode: bool,
) -> anyhow::Result<Outcome> {
    out["altinn_exchange"] = json!(url);
    let http = crate::token::client::http_client(
        tls,
        config.maskinporten.timeout,
        config.maskinporten.connect_timeout,
        &config.maskinporten.proxy,
    )?;
    let exchange = crate::token::AltinnExchange::new(http, url.to_string());
    let bearer = http::HeaderValue::try_from(format!("Bearer {token}"))?;
    match exchange.exchange(&bearer).await {
        Ok(altinn) => {
            let token = altinn.access_token.expose();
            out["altinn_token"] = json!(token);
            out["altinn_expires_in"] = json!(altinn.expires_in);
            if decode {
                describe(&mut out, token, "altinn_header", "altinn_claims");
            }
            Ok(Outcome {
                json: out,
                error: None,
            })
        }
        Err(e) => Ok(failed(out, &e)),
    }
}

/// Adds a JWT's decoded header and claims under the keys given.
fn describe(out: &mut Value, token: &str, header_key: &str, claims_key: &str) {
    match decode_jwt(token) {
        Some((header, claims)) => {
            out[header_key] = header;
            out[claims_key] = claims;
        }
        None => out[claims_key] = json!("the token is opaque (not a JWT)"),
    }
}

/// The output when Maskinporten or Altinn refused: the error with its code and hint, on stdout
/// as JSON and on stderr as a line.
fn failed(mut out: Value, e: &FetchError) -> Outcome {
    let mut error = json!({ "message": e.to_string() });
    match e {
        FetchError::Rejected {
            error: code_word,
            description,
            code,
            ..
        }
        | FetchError::ConsentRefused {
            error: code_word,
            description,
            code,
            ..
        } => {
            error["error"] = json!(code_word);
            error["error_description"] = json!(description);
            error["code"] = json!(code);
        }
        FetchError::Exchange { status, .. } => error["altinn_status"] = json!(status),
        _ => {}
    }
    let line = match e.hint() {
        Some(hint) => {
            error["hint"] = json!(hint);
            format!("{e}\nhint: {hint}")
        }
        None => e.to_string(),
    };
    out["error"] = error;
    Outcome {
        json: out,
        error: Some(line),
    }
}

/// The header and claims of a JWT, read without verifying (this is for reading, not trusting).
fn decode_jwt(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (header, claims, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    let read = |part: &str| -> Option<Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    Some((read(header)?, read(claims)?))
}

/// `--consent` and `--from`, checked as the route's headers are.
fn named_consent(id: &str, from: &str) -> anyhow::Result<crate::consent::Consent> {
    let id = uuid::Uuid::try_parse(id.trim())
        .map_err(|_| anyhow::anyhow!("--consent {id} is not a consent id (a UUID)"))?;
    let from = crate::consent::Giver::parse(from).map_err(|why| anyhow::anyhow!("--from {why}"))?;
    Ok(crate::consent::Consent { id, from })
}
