//! The little DER key loading needs: a reader for PKCS#12, PKCS#8 and X.509 structures (with the
//! BER indefinite lengths some Windows and Java tools write), and the PKCS#1 RSAPrivateKey encoding
//! for JWK components.

mod pbe;
pub mod pkcs12;
pub mod x509;

use std::borrow::Cow;

/// Why a structure could not be read; the caller says which file and what it expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

pub type Result<T> = std::result::Result<T, Malformed>;

pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const UTC_TIME: u8 = 0x17;
pub const GENERALIZED_TIME: u8 = 0x18;
/// `[0]` constructed (EXPLICIT), as ContentInfo and SafeBag wrap their content.
pub const CONTEXT_0: u8 = 0xa0;

/// One element: its tag, its contents and the whole encoding (for hashing or passing on).
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    pub tag: u8,
    pub body: &'a [u8],
    pub raw: &'a [u8],
}

/// Reads elements one after the other from a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    // Not an Iterator: a malformed element is an error, not the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Element<'a>> {
        let (element, used) = element(self.rest, 0)?;
        self.rest = &self.rest[used..];
        Ok(element)
    }

    /// The next element, which must carry `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<Element<'a>> {
        let e = self.next()?;
        if e.tag == tag {
            Ok(e)
        } else {
            Err(Malformed("unexpected element"))
        }
    }

    /// The next element if it carries `tag`; nothing is consumed otherwise.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Element<'a>>> {
        if self.peek_tag() == Some(tag) {
            self.next().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Nested BER constructions deeper than this are refused rather than followed.
const MAX_DEPTH: usize = 32;

/// Parses one element at the start of `bytes`: the element and how many bytes it took.
fn element(bytes: &[u8], depth: usize) -> Result<(Element<'_>, usize)> {
    if depth > MAX_DEPTH {
        return Err(Malformed("nested too deeply"));
    }
    let (&tag, after_tag) = bytes.split_first().ok_or(Malformed("truncated"))?;
    if tag & 0x1f == 0x1f {
        return Err(Malformed("multi-byte tags are not used in these formats"));
    }
    let (&first, after_len) = after_tag.split_first().ok_or(Malformed("truncated"))?;
    let header = 2;
    if first == 0x80 {
        // BER indefinite length: contents run to an end-of-contents marker (00 00).
        if tag & 0x20 == 0 {
            return Err(Malformed("indefinite length on a primitive element"));
        }
        let mut at = 0;
        loop {
            let rest = &after_len[at..];
            if rest.starts_with(&[0, 0]) {
                let total = header + at + 2;
                return Ok((
                    Element {
                        tag,
                        body: &after_len[..at],
                        raw: &bytes[..total],
                    },
                    total,
                ));
            }
            let (_, used) = element(rest, depth + 1)?;
            at += used;
        }
    }
    let (len, len_bytes) = if first < 0x80 {
        (first as usize, 0)
    } else {
        let n = (first & 0x7f) as usize;
        if n > 4 || after_len.len() < n {
            return Err(Malformed("bad length"));
        }
        let len = after_len[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, n)
    };
    let start = header + len_bytes;
    let end = start.checked_add(len).ok_or(Malformed("bad length"))?;
    if bytes.len() < end {
        return Err(Malformed("truncated"));
    }
    Ok((
        Element {
            tag,
            body: &bytes[start..end],
            raw: &bytes[..end],
        },
        end,
    ))
}

impl<'a> Element<'a> {
    /// The elements inside a constructed element.
    pub fn children(&self) -> Reader<'a> {
        Reader::new(self.body)
    }

    /// An OCTET STRING's bytes; BER allows them split into a constructed string of pieces.
    pub fn octets(&self) -> Result<Cow<'a, [u8]>> {
        if self.tag & 0x20 == 0 {
            return Ok(Cow::Borrowed(self.body));
        }
        let mut out = Vec::new();
        let mut pieces = self.children();
        while !pieces.is_empty() {
            out.extend_from_slice(&pieces.next()?.octets()?);
        }
        Ok(Cow::Owned(out))
    }

    /// A BMPString (UTF-16BE), as PKCS#12 friendly names and some certificate names are written.
    pub fn bmp_string(&self) -> String {
        let units: Vec<u16> = self
            .body
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        String::from_utf16_lossy(&units)
    }

    /// A small non-negative INTEGER (iteration counts, versions, key lengths).
    pub fn small_uint(&self) -> Result<u64> {
        if self.tag != INTEGER || self.body.is_empty() || self.body.len() > 8 {
            return Err(Malformed("expected a small integer"));
        }
        if self.body[0] & 0x80 != 0 {
            return Err(Malformed("negative integer"));
        }
        Ok(self.body.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
    }

    /// An OBJECT IDENTIFIER in dotted form, for comparing with the OIDs the standards name.
    pub fn oid(&self) -> Result<String> {
        if self.tag != OID || self.body.is_empty() {
            return Err(Malformed("expected an object identifier"));
        }
        let mut arcs: Vec<u64> = Vec::new();
        let mut value: u64 = 0;
        for (i, b) in self.body.iter().enumerate() {
            if value > (u64::MAX >> 7) {
                return Err(Malformed("object identifier arc too large"));
            }
            value = (value << 7) | (b & 0x7f) as u64;
            if b & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (value / 40).min(2);
                    arcs.push(first);
                    arcs.push(value - first * 40);
                } else {
                    arcs.push(value);
                }
                value = 0;
            } else if i == self.body.len() - 1 {
                return Err(Malformed("truncated object identifier"));
            }
        }
        Ok(arcs
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."))
    }
}

/// An AlgorithmIdentifier: its OID and its parameters, if any.
pub fn algorithm<'a>(e: &Element<'a>) -> Result<(String, Option<Element<'a>>)> {
    let mut r = e.children();
    let oid = r.expect(OID)?.oid()?;
    let params = if r.is_empty() { None } else { Some(r.next()?) };
    Ok((oid, params))
}

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
    fn reads_back_what_it_writes() {
        let key = rsa_private_key([&[1], &[2], &[3], &[4], &[5], &[6], &[7], &[0x80]]);
        let seq = Reader::new(&key).expect(SEQUENCE).unwrap();
        let mut r = seq.children();
        let mut values = Vec::new();
        while !r.is_empty() {
            values.push(r.next().unwrap().small_uint().unwrap());
        }
        assert_eq!(values, [0, 1, 2, 3, 4, 5, 6, 7, 0x80]);
    }

    #[test]
    fn oids_read_in_dotted_form() {
        // 1.2.840.113549.1.7.1 (PKCS#7 data)
        let der = [6, 9, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 7, 1];
        let e = Reader::new(&der).next().unwrap();
        assert_eq!(e.oid().unwrap(), "1.2.840.113549.1.7.1");
    }

    #[test]
    fn indefinite_lengths_and_split_octet_strings_are_read() {
        // SEQUENCE (indefinite) { OCTET STRING (constructed, indefinite) { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 4, 2, b'a', b'b', 4, 1, b'c', 0, 0, 0, 0, 0x05, 0x00,
        ];
        let mut r = Reader::new(&ber);
        let seq = r.expect(SEQUENCE).unwrap();
        assert_eq!(seq.raw.len(), 15);
        let s = seq.children().next().unwrap();
        assert_eq!(&*s.octets().unwrap(), b"abc");
        assert_eq!(r.next().unwrap().tag, 0x05);
        assert!(r.is_empty());
    }

    #[test]
    fn truncated_and_oversized_input_is_refused() {
        assert!(Reader::new(&[0x30, 0x05, 1]).next().is_err());
        assert!(Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).next().is_err());
        assert!(Reader::new(&[0x30, 0x80, 0x30, 0x80]).next().is_err());
        let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 40).flatten().collect();
        assert!(Reader::new(&deep).next().is_err());
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        let t = tlv(0x04, &[0u8; 300]);
        assert_eq!(&t[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
