//! The upstream's answer as the fast lane relays it: its head rewritten for the caller, its body
//! passed through byte for byte, its framing read only to find where the answer ends.

use super::head::{decimal, line, named_by_connection, tokens};
use crate::request_id;
use crate::upstream::is_hop_by_hop;

/// Why an upstream's answer cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the upstream's answer is not valid HTTP/1.1: {0}")]
pub struct Invalid(pub &'static str);

/// Where the answer's body ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// So many bytes (none for HEAD, 204 and 304 answers).
    Length(u64),
    /// Chunked transfer coding, passed through as it is.
    Chunked(Chunked),
    /// Until the upstream closes the connection.
    UntilClose,
}

impl Framing {
    /// How many of `bytes` belong to the answer, and whether the answer ends there.
    pub fn take(&mut self, bytes: &[u8]) -> Result<(usize, bool), Invalid> {
        match self {
            Framing::Length(left) => {
                let n = usize::try_from(*left).map_or(bytes.len(), |l| l.min(bytes.len()));
                *left -= n as u64;
                Ok((n, *left == 0))
            }
            Framing::Chunked(chunked) => chunked.advance(bytes),
            Framing::UntilClose => Ok((bytes.len(), false)),
        }
    }
}

/// An answer's head, read and rewritten for the caller.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The head's length in the upstream's bytes.
    pub len: usize,
    pub framing: Framing,
    /// The upstream keeps the connection open after this answer.
    pub reusable: bool,
    /// The caller's connection must close after this answer.
    pub close: bool,
}

pub enum Parsed {
    Partial,
    /// A 1xx answer of `len` bytes, which the lane does not relay: the real one follows.
    Informational(usize),
    Answer(Answer),
}

/// How a head for the caller is written.
pub struct Rewrite<'a> {
    /// The request was HEAD: the answer has no body whatever its headers say.
    pub head_request: bool,
    pub request_id: &'a [u8],
    /// The caller's connection closes after this answer (the caller asked, or portvakt stops).
    pub close: bool,
}

/// Reads the upstream's answer head from `buf` and, when it is complete, writes the caller's head
/// into `out`: hop-by-hop headers dropped (a chunked body keeps its `Transfer-Encoding`, since its
/// bytes go through as they are), the request id set.
pub fn parse(buf: &[u8], how: &Rewrite<'_>, out: &mut Vec<u8>) -> Result<Parsed, Invalid> {
    let mut headers = [httparse::EMPTY_HEADER; super::head::MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(Invalid("malformed head")),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(Invalid("malformed head"));
    };
    if status == 101 {
        return Err(Invalid(
            "101 Switching Protocols to a request that asked for no upgrade",
        ));
    }
    if (100..200).contains(&status) {
        return Ok(Parsed::Informational(len));
    }
    let headers: &[httparse::Header<'_>] = response.headers;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close_token, mut keep_alive_token) = (false, false);
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: chunked ends by itself, anything else at the close.
            let last = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .map(<[u8]>::trim_ascii);
            chunked = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|b| *b == b',') {
                let n = decimal(part).ok_or(Invalid("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Invalid("conflicting Content-Length headers"));
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                close_token |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = if how.head_request || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked(Chunked::default()),
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    let until_close = framing == Framing::UntilClose;
    let reusable = !until_close
        && if version == 1 {
            !close_token
        } else {
            keep_alive_token
        };
    let close = how.close || until_close;

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .or(response.reason)
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let relayed_chunked = matches!(framing, Framing::Chunked(_));
    for h in headers {
        let name = h.name;
        let keep = if name.eq_ignore_ascii_case("transfer-encoding") {
            relayed_chunked
        } else if name.eq_ignore_ascii_case("content-length") {
            // With a transfer coding the length is the coding's business (RFC 9112 6.3).
            chunked.is_none()
        } else {
            !(is_hop_by_hop(name)
                || name.eq_ignore_ascii_case(request_id::HEADER.as_str())
                || named_by_connection(headers, name))
        };
        if keep {
            line(out, name.as_bytes(), h.value);
        }
    }
    line(out, request_id::HEADER.as_str().as_bytes(), how.request_id);
    if close {
        line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Answer(Answer {
        status,
        len,
        framing,
        reusable,
        close,
    }))
}

/// A status code's three digits (httparse reads exactly three).
fn itoa3(status: u16) -> [u8; 3] {
    let digit = |n: u16| b'0' + (n % 10) as u8;
    [digit(status / 100), digit(status / 10), digit(status)]
}

/// Finds the end of a chunked body (RFC 9112 7.1) without changing a byte of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    /// The chunk size being read, or the data left in the current chunk.
    size: u64,
    digits: u8,
    /// Bytes of chunk extensions and trailers, bounded so a broken upstream cannot stream
    /// them forever.
    extra: u32,
}

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

const MAX_EXTRA: u32 = 16 * 1024;

impl Chunked {
    /// How many of `bytes` belong to the body, and whether the body ends there.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<(usize, bool), Invalid> {
        let mut i = 0;
        while i < bytes.len() && self.state != State::Done {
            if self.state == State::Data {
                let n =
                    usize::try_from(self.size).map_or(bytes.len() - i, |s| s.min(bytes.len() - i));
                self.size -= n as u64;
                i += n;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == 15 {
                        return Err(Invalid("chunk size too large"));
                    }
                    self.digits += 1;
                    // A hex digit's value, below 16.
                    let value = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size * 16 + u64::from(value);
                    State::Size
                }
                (State::Size, b';' | b' ' | b'\t') if self.digits > 0 => State::Extension,
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, _) => {
                    self.extra += 1;
                    State::Extension
                }
                (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
                (State::SizeLf, b'\n') => State::Data,
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.digits = 0;
                    State::Size
                }
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::Trailer, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::Trailer, _) => {
                    self.extra += 1;
                    State::Trailer
                }
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => State::Done,
                _ => return Err(Invalid("malformed chunked body")),
            };
            if self.extra > MAX_EXTRA {
                return Err(Invalid("chunk extensions or trailers too large"));
            }
        }
        Ok((i, self.state == State::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(raw: &str, head_request: bool) -> (Answer, String) {
        let mut out = Vec::new();
        let how = Rewrite {
            head_request,
            request_id: b"id-1",
            close: false,
        };
        match parse(raw.as_bytes(), &how, &mut out).unwrap() {
            Parsed::Answer(a) => (a, String::from_utf8(out).unwrap()),
            _ => panic!("not an answer"),
        }
    }

    #[test]
    fn rewrites_the_head_for_the_caller() {
        let raw = "HTTP/1.1 200 Whatever\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Request-Id: theirs\r\nX-Kept: yes\r\n\r\nhello";
        let (a, head) = answer(raw, false);
        assert_eq!(
            (a.status, a.len, a.reusable, a.close),
            (200, raw.len() - 5, true, false)
        );
        assert_eq!(a.framing, Framing::Length(5));
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kept: yes\r\nx-request-id: id-1\r\n\r\n"
        );
    }

    #[test]
    fn reads_the_framing() {
        let chunked = answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert!(matches!(chunked.0.framing, Framing::Chunked(_)));
        assert!(chunked.1.contains("Transfer-Encoding: chunked\r\n"));
        assert!(!chunked.1.contains("Content-Length"));
        let eof = answer("HTTP/1.1 200 OK\r\n\r\n", false).0;
        assert_eq!(
            (eof.framing, eof.reusable, eof.close),
            (Framing::UntilClose, false, true)
        );
        let head = answer("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).0;
        assert_eq!(head.framing, Framing::Length(0));
        let old = answer("HTTP/1.0 204 No Content\r\n\r\n", false).0;
        assert_eq!((old.framing, old.reusable), (Framing::Length(0), false));
        let mut out = Vec::new();
        let how = Rewrite {
            head_request: false,
            request_id: b"x",
            close: false,
        };
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(parse(bad.as_bytes(), &how, &mut out).is_err(), "{bad}");
        }
        assert!(matches!(
            parse(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1",
                &how,
                &mut out
            ),
            Ok(Parsed::Informational(40))
        ));
    }

    /// Heads made of the words that matter to framing, in random order: read or refused, never
    /// a panic, and the length relayed is the length the caller is told.
    #[test]
    fn random_answer_heads_are_read_or_refused() {
        let words: [&[u8]; 12] = [
            b"Content-Length: ",
            b"Transfer-Encoding: ",
            b"Connection: ",
            b"chunked",
            b"gzip, ",
            b"close",
            b"5",
            b"18446744073709551616",
            b", ",
            b"\r\n",
            b"X-A: b",
            b" ",
        ];
        let mut rng = fastrand::Rng::with_seed(11);
        let how = Rewrite {
            head_request: false,
            request_id: b"id",
            close: false,
        };
        for _ in 0..5000 {
            let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
            for _ in 0..rng.usize(0..12) {
                raw.extend_from_slice(words[rng.usize(..words.len())]);
            }
            raw.extend_from_slice(b"\r\n\r\n");
            let mut out = Vec::new();
            if let Ok(Parsed::Answer(a)) = parse(&raw, &how, &mut out) {
                assert!(out.ends_with(b"\r\n\r\n"));
                // A length the caller is told is the length the lane relays.
                if let Framing::Length(n) = a.framing {
                    let told = String::from_utf8_lossy(&out).to_ascii_lowercase();
                    assert!(
                        n == 0 || told.contains(&format!("content-length: {n}")),
                        "{told}"
                    );
                }
            }
        }
    }

    /// Random chunked bodies, cut at random points, end where they end; random bytes never panic
    /// and are read the same however they are cut.
    #[test]
    fn chunked_bodies_end_at_the_same_byte_however_they_arrive() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let mut body = Vec::new();
            for _ in 0..rng.usize(0..5) {
                let len = rng.usize(1..300);
                body.extend_from_slice(format!("{len:x}").as_bytes());
                if rng.bool() {
                    body.extend_from_slice(b";name=value");
                }
                body.extend_from_slice(b"\r\n");
                body.extend((0..len).map(|_| rng.u8(..)));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            if rng.bool() {
                body.extend_from_slice(b"X-Trailer: 1\r\n");
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let (mut c, mut at) = (Chunked::default(), 0);
            loop {
                let piece = rng.usize(1..64).min(body.len() - at);
                let (n, done) = c.advance(&body[at..at + piece]).unwrap();
                at += n;
                if done {
                    break;
                }
                assert_eq!(n, piece);
            }
            assert_eq!(at, end);
        }
        for _ in 0..2000 {
            let noise: Vec<u8> = (0..rng.usize(0..200))
                .map(|_| *rng.choice(b"0123456789abcdef;\r\n xX").unwrap_or(&b'0'))
                .collect();
            let whole = Chunked::default().advance(&noise);
            let mut c = Chunked::default();
            let mut pieced = Ok((0, false));
            let mut at = 0;
            while at < noise.len() {
                let piece = rng.usize(1..16).min(noise.len() - at);
                match c.advance(&noise[at..at + piece]) {
                    Ok((n, done)) => {
                        at += n;
                        pieced = Ok((at, done));
                        if done {
                            break;
                        }
                    }
                    Err(e) => {
                        pieced = Err(e);
                        break;
                    }
                }
            }
            if noise.is_empty() {
                continue;
            }
            assert_eq!(whole.is_ok(), pieced.is_ok(), "{noise:?}");
            if let (Ok(w), Ok(p)) = (whole, pieced) {
                assert_eq!(w, p, "{noise:?}");
            }
        }
    }

    #[test]
    fn finds_the_end_of_a_chunked_body_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut c = Chunked::default();
            let (a, done_a) = c.advance(&body[..split]).unwrap();
            assert_eq!(a, split.min(end));
            let (b, done_b) = if done_a {
                (0, true)
            } else {
                c.advance(&body[split..]).unwrap()
            };
            assert!(done_b, "split at {split}");
            assert_eq!(a + b, end);
        }
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloX",
            b"\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert!(Chunked::default().advance(bad).is_err(), "{bad:?}");
        }
    }
}
