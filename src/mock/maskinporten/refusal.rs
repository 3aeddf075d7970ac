//! A grant the mock refuses: Maskinporten's `error`, `error_description` and MP code.

use http::StatusCode;

/// A refusal as Maskinporten words it.
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) code: &'static str,
    pub(super) description: String,
}

pub(super) fn refuse(
    error: &'static str,
    code: &'static str,
    description: impl Into<String>,
) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error,
        code,
        description: description.into(),
    }
}
