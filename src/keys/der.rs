//! The few DER encodings key loading needs: a PKCS#1 RSAPrivateKey from JWK components.

/// `RSAPrivateKey ::= SEQUENCE { version 0, n, e, d, p, q, dp, dq, qi }` (RFC 8017 A.1.2).
pub fn rsa_private_key(components: [&[u8]; 8]) -> Vec<u8> {
    let mut body = integer(&[0]);
    for c in components {
        body.extend(integer(c));
    }
    tlv(0x30, &body)
}

fn integer(big_endian: &[u8]) -> Vec<u8> {
    let trimmed = match big_endian.iter().position(|b| *b != 0) {
        Some(i) => &big_endian[i..],
        None => &[0u8][..],
    };
    // A set high bit would read as negative: DER integers are two's complement.
    if trimmed[0] & 0x80 != 0 {
        let mut padded = Vec::with_capacity(trimmed.len() + 1);
        padded.push(0);
        padded.extend_from_slice(trimmed);
        tlv(0x02, &padded)
    } else {
        tlv(0x02, trimmed)
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(integer(&[0, 0, 5]), vec![2, 1, 5]);
        assert_eq!(integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(integer(&[]), vec![2, 1, 0]);
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        let t = tlv(0x04, &[0u8; 300]);
        assert_eq!(&t[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
