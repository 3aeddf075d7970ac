//! What an operator opens: the admin listener (health, readiness, metrics, reload) and its status
//! page. They read the proxy's state; nothing on the request path reads them.

pub mod admin;
pub mod status_page;
