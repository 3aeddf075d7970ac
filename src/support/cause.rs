//! An error's chain of causes, for operators: the top-level messages of hyper and reqwest alone say
//! little. A leaf module, so that every layer can read causes without importing the others.

/// An error with its causes, joined by `: `.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The error itself, then each of its sources in turn.
pub fn causes<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |err| err.source())
}
