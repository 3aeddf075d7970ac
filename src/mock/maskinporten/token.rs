//! The mock's token endpoint: a form-encoded grant in, a JWT access token or Maskinporten's
//! error out, under the mode, delay and clock the test set.

use super::*;

pub(super) async fn token(inner: &Inner, request: Request<CallerBody>) -> Answer {
    let mut answer = token_answer(inner, request).await;
    // Maskinporten's Date header tells a client how far its clock is off.
    if let Ok(date) = http::HeaderValue::from_str(&crate::token::clock::http_date(now(inner))) {
        answer.headers_mut().insert(header::DATE, date);
    }
    answer
}

async fn token_answer(inner: &Inner, request: Request<CallerBody>) -> Answer {
    inner.token_requests.fetch_add(1, Ordering::SeqCst);
    let delay = inner.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mode = *lock(&inner.mode);
    match mode {
        Mode::Normal => {}
        Mode::Failing(status) | Mode::Throttling(status, _) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut answer = json_answer(status, &json!({ "error": "temporarily_unavailable" }));
            if let Mode::Throttling(_, seconds) = mode {
                answer
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            }
            return answer;
        }
        Mode::Garbage => {
            return crate::request::body::full(
                StatusCode::OK,
                "text/html",
                "<html>proxy login</html>",
            )
        }
        Mode::NoAccessToken => {
            return json_answer(
                StatusCode::OK,
                &json!({ "token_type": "Bearer", "expires_in": 120 }),
            )
        }
    }
    let form_ok = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = match Limited::new(request.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error_answer(&refuse(
                "invalid_request",
                "MP-000",
                "unreadable or too large body",
            ))
        }
    };
    if !form_ok {
        return error_answer(&refuse(
            "invalid_request",
            "MP-000",
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return error_answer(&refuse(
            "unsupported_grant_type",
            "MP-000",
            "grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer",
        ));
    }
    let Some(assertion) = form.get("assertion") else {
        return error_answer(&refuse("invalid_request", "MP-000", "assertion is missing"));
    };
    let header = jsonwebtoken::decode_header(assertion).ok();
    let claims: Option<Map<String, Value>> =
        jsonwebtoken::dangerous::insecure_decode_claims(assertion).ok();
    let outcome = match (&header, &claims) {
        (Some(h), Some(c)) => check_grant(inner, assertion, h, c),
        _ => Err(refuse(
            "invalid_grant",
            "MP-000",
            "Invalid assertion: not a JWT",
        )),
    };
    if let Some(claims) = claims {
        lock(&inner.grants).push(RecordedGrant {
            header: header
                .as_ref()
                .and_then(|h| serde_json::to_value(h).ok())
                .unwrap_or(Value::Null),
            claims,
            rejected: outcome.as_ref().err().map(|r| r.code.to_string()),
        });
    }
    match outcome {
        Ok(answer) => json_answer(StatusCode::OK, &answer),
        Err(refusal) => error_answer(&refusal),
    }
}

fn error_answer(r: &Refusal) -> Answer {
    let page = "https://docs.digdir.no/docs/Maskinporten/maskinporten_feilsoking";
    // A refusal without an MP code (a consent's) names none.
    let (description, uri) = if r.code.is_empty() {
        (r.description.clone(), page.to_string())
    } else {
        (
            format!("{} ({})", r.description, r.code),
            format!("{page}#{}", r.code),
        )
    };
    json_answer(
        r.status,
        &json!({ "error": r.error, "error_description": description, "error_uri": uri }),
    )
}
