//! The password-based cryptography of PKCS#12 (RFC 7292, appendix B; RFC 8018): the PKCS#12 key
//! derivation for the MAC and the legacy ciphers (3DES, RC2-40), and PBES2 (PBKDF2 with AES).

use super::{self as der, Element};
use aws_lc_rs::{digest, hmac};

/// Why a file could not be opened, worded for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkcs12Error {
    NotPkcs12,
    WrongPassword,
    Unsupported(String),
}

impl std::fmt::Display for Pkcs12Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pkcs12Error::NotPkcs12 => f.write_str("not a PKCS#12 (.p12/.pfx) file"),
            Pkcs12Error::WrongPassword => f.write_str(
                "wrong password for the PKCS#12 file (or the file is damaged): check password / password_file",
            ),
            Pkcs12Error::Unsupported(what) => write!(f, "unsupported PKCS#12 content: {what}"),
        }
    }
}

impl From<der::Malformed> for Pkcs12Error {
    fn from(_: der::Malformed) -> Self {
        Pkcs12Error::NotPkcs12
    }
}

pub(super) type Result<T> = std::result::Result<T, Pkcs12Error>;

const PBES2: &str = "1.2.840.113549.1.5.13";
const PBKDF2: &str = "1.2.840.113549.1.5.12";
/// Iteration counts above this are refused rather than computed (files use 2,048 to 600,000).
const MAX_ITERATIONS: u64 = 10_000_000;

pub(super) fn iterations(n: u64) -> Result<u32> {
    if n == 0 || n > MAX_ITERATIONS {
        return Err(Pkcs12Error::Unsupported(format!("{n} iterations")));
    }
    Ok(n as u32)
}

pub(super) struct Hash {
    pub(super) digest: &'static digest::Algorithm,
    pub(super) hmac: hmac::Algorithm,
    /// The hash's block size in bytes (`v` in RFC 7292 appendix B).
    pub(super) block: usize,
}

impl Hash {
    pub(super) fn from_digest_oid(oid: &str) -> Result<Hash> {
        Ok(match oid {
            "1.3.14.3.2.26" => Hash {
                digest: &digest::SHA1_FOR_LEGACY_USE_ONLY,
                hmac: hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                block: 64,
            },
            "2.16.840.1.101.3.4.2.1" => Hash {
                digest: &digest::SHA256,
                hmac: hmac::HMAC_SHA256,
                block: 64,
            },
            "2.16.840.1.101.3.4.2.2" => Hash {
                digest: &digest::SHA384,
                hmac: hmac::HMAC_SHA384,
                block: 128,
            },
            "2.16.840.1.101.3.4.2.3" => Hash {
                digest: &digest::SHA512,
                hmac: hmac::HMAC_SHA512,
                block: 128,
            },
            other => return Err(Pkcs12Error::Unsupported(format!("MAC digest {other}"))),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.digest.output_len()
    }
}

/// The password as PKCS#12's KDF takes it: UTF-16BE with a terminating zero.
pub(super) fn bmp_password(password: &str) -> Vec<u8> {
    password
        .encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_be_bytes)
        .collect()
}

/// RFC 7292 appendix B.2: derives `n` bytes of key (`id` 1), IV (2) or MAC key (3).
pub(super) fn pkcs12_kdf(
    hash: &Hash,
    password: &[u8],
    salt: &[u8],
    id: u8,
    iterations: u32,
    n: usize,
) -> Vec<u8> {
    let v = hash.block;
    let stretch = |s: &[u8]| -> Vec<u8> {
        if s.is_empty() {
            return Vec::new();
        }
        let len = v * s.len().div_ceil(v);
        s.iter().copied().cycle().take(len).collect()
    };
    let mut i = stretch(salt);
    i.extend(stretch(password));
    let d = vec![id; v];
    let mut out = Vec::with_capacity(n + hash.len());
    loop {
        let mut ctx = digest::Context::new(hash.digest);
        ctx.update(&d);
        ctx.update(&i);
        let mut a = ctx.finish();
        for _ in 1..iterations {
            a = digest::digest(hash.digest, a.as_ref());
        }
        out.extend_from_slice(a.as_ref());
        if out.len() >= n {
            out.truncate(n);
            return out;
        }
        let b: Vec<u8> = a.as_ref().iter().copied().cycle().take(v).collect();
        for block in i.chunks_mut(v) {
            // block = (block + b + 1) mod 2^(8v)
            let mut carry = 1u16;
            for k in (0..v).rev() {
                let sum = block[k] as u16 + b[k] as u16 + carry;
                block[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
}

/// Decrypts a shrouded key or an encrypted safe with the scheme its AlgorithmIdentifier names.
pub(super) fn decrypt(algorithm: &Element<'_>, data: &[u8], password: &str) -> Result<Vec<u8>> {
    use des::{TdesEde2, TdesEde3};
    let (oid, params) = der::algorithm(algorithm)?;
    let params = params.ok_or(Pkcs12Error::NotPkcs12)?;
    if oid == PBES2 {
        return pbes2(&params, data, password);
    }
    let mut r = params.children();
    let salt = r.expect(der::OCTET_STRING)?.octets()?;
    let rounds = iterations(r.expect(der::INTEGER)?.small_uint()?)?;
    let sha1 = Hash::from_digest_oid("1.3.14.3.2.26")?;
    let pass = bmp_password(password);
    let derive = |id: u8, n: usize| pkcs12_kdf(&sha1, &pass, &salt, id, rounds, n);
    let plain = match oid.as_str() {
        "1.2.840.113549.1.12.1.3" => cbc::<TdesEde3>(&derive(1, 24), &derive(2, 8), data),
        "1.2.840.113549.1.12.1.4" => cbc::<TdesEde2>(&derive(1, 16), &derive(2, 8), data),
        "1.2.840.113549.1.12.1.5" => rc2(&derive(1, 16), 128, &derive(2, 8), data),
        "1.2.840.113549.1.12.1.6" => rc2(&derive(1, 5), 40, &derive(2, 8), data),
        other => {
            return Err(Pkcs12Error::Unsupported(format!(
                "encryption {other} (supported: 3DES, RC2, PBES2 with AES)"
            )))
        }
    };
    plain.ok_or(Pkcs12Error::WrongPassword)
}

/// PBES2 (RFC 8018): PBKDF2 with an HMAC, then AES-CBC (or 3DES-CBC).
fn pbes2(params: &Element<'_>, data: &[u8], password: &str) -> Result<Vec<u8>> {
    use aws_lc_rs::{cipher, iv::FixedLength, pbkdf2};
    let mut r = params.children();
    let (kdf, kdf_params) = der::algorithm(&r.expect(der::SEQUENCE)?)?;
    let (scheme, scheme_params) = der::algorithm(&r.expect(der::SEQUENCE)?)?;
    if kdf != PBKDF2 {
        return Err(Pkcs12Error::Unsupported(format!("key derivation {kdf}")));
    }
    let mut k = kdf_params.ok_or(Pkcs12Error::NotPkcs12)?.children();
    let salt = k.expect(der::OCTET_STRING)?.octets()?;
    let rounds = iterations(k.expect(der::INTEGER)?.small_uint()?)?;
    k.optional(der::INTEGER)?; // keyLength: implied by the cipher
    let prf = match k.optional(der::SEQUENCE)? {
        Some(prf) => der::algorithm(&prf)?.0,
        None => "1.2.840.113549.2.7".into(),
    };
    let prf = match prf.as_str() {
        "1.2.840.113549.2.7" => pbkdf2::PBKDF2_HMAC_SHA1,
        "1.2.840.113549.2.9" => pbkdf2::PBKDF2_HMAC_SHA256,
        "1.2.840.113549.2.10" => pbkdf2::PBKDF2_HMAC_SHA384,
        "1.2.840.113549.2.11" => pbkdf2::PBKDF2_HMAC_SHA512,
        other => return Err(Pkcs12Error::Unsupported(format!("PBKDF2 PRF {other}"))),
    };
    let iv = scheme_params.ok_or(Pkcs12Error::NotPkcs12)?;
    let iv = iv.octets()?;
    let (aes, key_len) = match scheme.as_str() {
        "2.16.840.1.101.3.4.1.2" => (Some(&cipher::AES_128), 16),
        "2.16.840.1.101.3.4.1.22" => (Some(&cipher::AES_192), 24),
        "2.16.840.1.101.3.4.1.42" => (Some(&cipher::AES_256), 32),
        // des-ede3-cbc, which some older tools pair with PBES2.
        "1.2.840.113549.3.7" => (None, 24),
        other => return Err(Pkcs12Error::Unsupported(format!("cipher {other}"))),
    };
    let mut key = vec![0u8; key_len];
    let rounds = std::num::NonZeroU32::new(rounds).ok_or(Pkcs12Error::NotPkcs12)?;
    pbkdf2::derive(prf, rounds, &salt, password.as_bytes(), &mut key);
    let Some(aes) = aes else {
        return cbc::<des::TdesEde3>(&key, &iv, data).ok_or(Pkcs12Error::WrongPassword);
    };
    let iv: [u8; 16] = iv.as_ref().try_into().map_err(|_| Pkcs12Error::NotPkcs12)?;
    let unbound = cipher::UnboundCipherKey::new(aes, &key).map_err(|_| Pkcs12Error::NotPkcs12)?;
    let decrypting =
        cipher::PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| Pkcs12Error::NotPkcs12)?;
    let mut buf = data.to_vec();
    let plain = decrypting
        .decrypt(
            &mut buf,
            cipher::DecryptionContext::Iv128(FixedLength::from(iv)),
        )
        .map_err(|_| Pkcs12Error::WrongPassword)?;
    Ok(plain.to_vec())
}

fn rc2(key: &[u8], effective_bits: usize, iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    cbc_with(
        rc2::Rc2::new_with_eff_key_len(key, effective_bits),
        iv,
        data,
    )
}

fn cbc<C: des::cipher::KeyInit + des::cipher::BlockCipherDecrypt>(
    key: &[u8],
    iv: &[u8],
    data: &[u8],
) -> Option<Vec<u8>> {
    cbc_with(C::new_from_slice(key).ok()?, iv, data)
}

/// CBC decryption with PKCS#7 padding over a 64-bit block cipher. `None` when the padding is wrong,
/// which with these schemes means a wrong password.
fn cbc_with<C: des::cipher::BlockCipherDecrypt>(
    cipher: C,
    iv: &[u8],
    data: &[u8],
) -> Option<Vec<u8>> {
    let size = C::block_size();
    if data.is_empty() || !data.len().is_multiple_of(size) || iv.len() != size {
        return None;
    }
    let mut out = Vec::with_capacity(data.len());
    let mut previous = iv;
    for chunk in data.chunks(size) {
        let mut block = des::cipher::Block::<C>::try_from(chunk).ok()?;
        cipher.decrypt_block(&mut block);
        out.extend(block.iter().zip(previous).map(|(a, b)| a ^ b));
        previous = chunk;
    }
    let pad = *out.last()? as usize;
    if pad == 0 || pad > size || !out[out.len() - pad..].iter().all(|b| *b as usize == pad) {
        return None;
    }
    out.truncate(out.len() - pad);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The KDF against OpenSSL's own test vector (test/pkcs12_format_test / RFC 7292 style):
    /// password "smeg", salt 0A58CF64530D823F, id 1, 1 iteration, 24 bytes.
    #[test]
    fn kdf_matches_the_openssl_vector() {
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        let sha1 = Hash::from_digest_oid("1.3.14.3.2.26").unwrap();
        let key = pkcs12_kdf(&sha1, &bmp_password("smeg"), &salt, 1, 1, 24);
        let hex: String = key.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, "8AAAE6297B6CB04642AB5B077851284EB7128F1A2A7FBCA3");
    }
}
