//! `portvakt token`: fetch one token exactly as a route would and print it, for debugging an
//! integration from a shell. The token goes to stdout because that is what was asked for; nothing
//! is logged.

use crate::config::Config;
use crate::token::FetchError;
use base64::Engine as _;
use serde_json::{json, Value};

/// What the command prints and how it exits.
pub struct Outcome {
    pub json: Value,
    /// A line for stderr when Maskinporten refused or could not be reached.
    pub error: Option<String>,
}

/// Fetches a token for `route_name` with the route's client, key and grant.
pub async fn run(config: &Config, route_name: &str, decode: bool) -> anyhow::Result<Outcome> {
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
    let endpoint = crate::app::token_endpoint(config, &crate::app::tls_config(&[])?)?;
    let spec = crate::app::grant_spec(route);
    let mut out = json!({
        "route": route.name,
        "client": client.name,
        "client_id": client.client_id,
        "key": client.key.label(),
        "token_endpoint": endpoint.url(),
        "requested_scope": spec.scope,
    });
    if let Some(org) = &route.consumer_org {
        out["consumer_org"] = json!(org);
    }
    match endpoint
        .request(&client.client_id, &client.key, &spec)
        .await
    {
        Ok(issued) => {
            let token = issued.access_token.expose();
            out["access_token"] = json!(token);
            out["token_type"] = json!("Bearer");
            out["expires_in"] = json!(issued.expires_in);
            if let Some(scope) = issued.scope {
                out["scope"] = json!(scope);
            }
            if decode {
                match decode_jwt(token) {
                    Some((header, claims)) => {
                        out["header"] = header;
                        out["claims"] = claims;
                    }
                    None => out["claims"] = json!("the token is opaque (not a JWT)"),
                }
            }
            Ok(Outcome {
                json: out,
                error: None,
            })
        }
        Err(e) => {
            let mut error = json!({ "message": e.to_string() });
            if let FetchError::Rejected {
                error: code_word,
                description,
                code,
                hint,
            } = &e
            {
                error["error"] = json!(code_word);
                error["error_description"] = json!(description);
                error["code"] = json!(code);
                error["hint"] = json!(hint);
            }
            let line = match &e {
                FetchError::Rejected { hint, .. } => format!("{e}\nhint: {hint}"),
                other => other.to_string(),
            };
            out["error"] = error;
            Ok(Outcome {
                json: out,
                error: Some(line),
            })
        }
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
