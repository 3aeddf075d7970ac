//! Small leaves the other rooms share, each importing nothing of portvakt's: secrets that do not
//! print, dates, files only the owner reads, check digits, a lock that survives a panic, and the
//! whole chain of an error's causes.

pub mod cause;
pub mod fault;
pub mod identifiers;
pub mod private_file;
pub mod secret;
pub mod sync;
pub mod time;
