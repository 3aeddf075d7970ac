//! Values several sections of the file share: http(s) URLs and files of extra CA certificates.

use super::reader::Reader;
use super::CaFile;
use http::Uri;
use rustls_pki_types::CertificateDer;
use std::path::Path;

/// An absolute `http://` or `https://` URL.
pub fn http_url(r: &mut Reader, s: &str, path: &str) -> Option<Uri> {
    match s.parse::<Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() =>
        {
            Some(uri)
        }
        _ => {
            r.issue(path, format!("`{s}` is not an http:// or https:// URL"));
            None
        }
    }
}

/// A PEM file of extra CA certificates, trusted besides the Mozilla roots.
pub fn ca_file(r: &mut Reader, file: &Path, path: &str) -> Option<CaFile> {
    use rustls_pki_types::pem::PemObject;
    let certs =
        CertificateDer::pem_file_iter(file).and_then(|certs| certs.collect::<Result<Vec<_>, _>>());
    match certs {
        Ok(certs) if !certs.is_empty() => Some(CaFile {
            path: file.to_path_buf(),
            certs,
        }),
        Ok(_) => {
            r.issue(
                path,
                format!(
                    "{}: no PEM certificate (BEGIN CERTIFICATE) in the file",
                    file.display()
                ),
            );
            None
        }
        Err(e) => {
            r.issue(
                path,
                format!("{}: cannot read the certificates: {e}", file.display()),
            );
            None
        }
    }
}
