//! `portvakt health URL`: exit 0 when URL answers 2xx within 3 s, for a container's
//! HEALTHCHECK, where no curl is installed.

use std::process::ExitCode;

/// Asks `url` (straight, never through a proxy) and says how it went.
pub async fn check(url: &str) -> ExitCode {
    let answer = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .build()
    {
        Ok(http) => http.get(url).send().await,
        Err(e) => {
            eprintln!("portvakt health: {e}");
            return ExitCode::FAILURE;
        }
    };
    match answer {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("portvakt health: {url} answered {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("portvakt health: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
