//! The incremental parser.

use crate::header::{Header, canonical_name};
use crate::message::{Message, Method, StartLine};

/// Hard limits on what one message may be. Defaults suit presence traffic: a
/// roaming-self document of a large user is tens of kilobytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Start line plus headers, in bytes.
    pub max_header_bytes: usize,
    /// Header lines (continuations not counted).
    pub max_headers: usize,
    /// Body bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 128,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// What [`parse`] found at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// This many bytes of CRLF keep-alive precede anything else; drop them.
    KeepAlive(usize),
    /// One message, which used `len` bytes.
    Message { message: Message, len: usize },
}

/// Why bytes are not a usable message. [`ParseError::status`] is the response code;
/// [`ParseError::partial`] holds what was read of the headers when that much is
/// known (to address the error response), and [`ParseError::skip`] how many bytes the
/// bad message occupies when its framing is still known (else the connection must
/// be closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed start line: {0}")]
    BadStartLine(String),
    #[error("unsupported SIP version {0}")]
    BadVersion(String),
    #[error("malformed header line: {0}")]
    BadHeader(String),
    #[error("headers longer than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("more than {0} header lines")]
    TooManyHeaders(usize),
    #[error("missing {header} header")]
    MissingHeader {
        header: &'static str,
        partial: Box<Message>,
        skip: Option<usize>,
    },
    #[error("invalid Content-Length")]
    BadContentLength { partial: Box<Message> },
    #[error("body of {length} bytes; the limit is {limit}")]
    BodyTooLarge {
        length: usize,
        limit: usize,
        partial: Box<Message>,
    },
    /// A request whose start line is unusable but whose headers could be read, so
    /// it can still be answered (400, or 505 for another SIP version).
    #[error("{source}")]
    BadRequestLine {
        source: Box<ParseError>,
        partial: Box<Message>,
        skip: Option<usize>,
    },
}

impl ParseError {
    pub fn status(&self) -> u16 {
        match self {
            ParseError::BadVersion(_) => 505,
            ParseError::BadRequestLine { source, .. } => source.status(),
            ParseError::HeadersTooLarge(_)
            | ParseError::TooManyHeaders(_)
            | ParseError::BodyTooLarge { .. } => 413,
            _ => 400,
        }
    }

    pub fn partial(&self) -> Option<&Message> {
        match self {
            ParseError::MissingHeader { partial, .. }
            | ParseError::BadContentLength { partial }
            | ParseError::BodyTooLarge { partial, .. }
            | ParseError::BadRequestLine { partial, .. } => Some(partial),
            _ => None,
        }
    }

    pub fn skip(&self) -> Option<usize> {
        match self {
            ParseError::MissingHeader { skip, .. } | ParseError::BadRequestLine { skip, .. } => {
                *skip
            }
            _ => None,
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn start_line(line: &str) -> Result<StartLine, ParseError> {
    let bad = || ParseError::BadStartLine(line.chars().take(80).collect());
    if let Some(rest) = line.strip_prefix("SIP/") {
        let (version, rest) = rest.split_once(' ').ok_or_else(bad)?;
        if version != "2.0" {
            return Err(ParseError::BadVersion(version.chars().take(16).collect()));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&code) {
            return Err(bad());
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.trim().to_string(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !is_token(method) || uri.is_empty() || !uri.contains(':') {
        return Err(bad());
    }
    match version.strip_prefix("SIP/") {
        Some("2.0") => {}
        Some(v) => return Err(ParseError::BadVersion(v.chars().take(16).collect())),
        None => return Err(bad()),
    }
    Ok(StartLine::Request {
        method: Method::parse(method),
        uri: uri.to_string(),
    })
}

/// Headers every request must carry. SIPE omits the Via branch, so Via is not
/// checked further than being optional here.
const REQUIRED: [&str; 4] = ["Call-ID", "CSeq", "From", "To"];

/// Parses the message at the start of `buf` (see [`Parsed`]).
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let crlf = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if crlf > 0 {
        return Ok(Parsed::KeepAlive(crlf));
    }
    let window = &buf[..buf.len().min(limits.max_header_bytes + 4)];
    let Some(end) = find(window, b"\r\n\r\n") else {
        if buf.len() > limits.max_header_bytes {
            return Err(ParseError::HeadersTooLarge(limits.max_header_bytes));
        }
        return Ok(Parsed::Incomplete);
    };
    let head =
        std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::BadHeader("not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let start = start_line(first);
    // A bad status line cannot be answered; a bad request line can be, once the
    // headers are read.
    if first.starts_with("SIP/") {
        start.clone()?;
    }
    let mut headers: Vec<Header> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers
                .last_mut()
                .ok_or_else(|| ParseError::BadHeader("continuation before any header".into()))?;
            last.value.push(' ');
            last.value.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::BadHeader(line.chars().take(80).collect()))?;
        let name = name.trim_end();
        if !is_token(name) {
            return Err(ParseError::BadHeader(line.chars().take(80).collect()));
        }
        if headers.len() >= limits.max_headers {
            return Err(ParseError::TooManyHeaders(limits.max_headers));
        }
        headers.push(Header {
            name: canonical_name(name),
            value: value.trim().to_string(),
        });
    }
    let header_len = end + 4;
    let start = match start {
        Ok(s) => s,
        Err(source) => {
            let partial = Box::new(Message {
                start: StartLine::Request {
                    method: Method::Other("?".into()),
                    uri: "?".into(),
                },
                headers,
                body: Vec::new(),
            });
            let skip = partial
                .header("Content-Length")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l <= limits.max_body_bytes)
                .map(|l| header_len + l);
            return Err(ParseError::BadRequestLine {
                source: Box::new(source),
                partial,
                skip,
            });
        }
    };
    let mut partial = Box::new(Message {
        start,
        headers,
        body: Vec::new(),
    });
    let lengths: Vec<&str> = partial.headers_named("Content-Length").collect();
    let length = match lengths.as_slice() {
        [] => {
            return Err(ParseError::MissingHeader {
                header: "Content-Length",
                partial,
                skip: None,
            });
        }
        [first, rest @ ..] if rest.iter().all(|r| r == first) => match first.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Err(ParseError::BadContentLength { partial }),
        },
        _ => return Err(ParseError::BadContentLength { partial }),
    };
    if length > limits.max_body_bytes {
        return Err(ParseError::BodyTooLarge {
            length,
            limit: limits.max_body_bytes,
            partial,
        });
    }
    let total = header_len + length;
    if buf.len() < total {
        return Ok(Parsed::Incomplete);
    }
    partial.body = buf[header_len..total].to_vec();
    if partial.method().is_some()
        && let Some(missing) = REQUIRED.iter().find(|h| partial.header(h).is_none())
    {
        return Err(ParseError::MissingHeader {
            header: missing,
            partial,
            skip: Some(total),
        });
    }
    Ok(Parsed::Message {
        message: *partial,
        len: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP 127.0.0.1:50816\r\n\
        From: <sip:alice@example.com>;tag=abc;epid=84d3db8c23\r\n\
        To: <sip:alice@example.com>\r\n\
        i: 123@host\r\n\
        CSeq: 1 REGISTER\r\n\
        k: gruu-10\r\n\
        k: adhoclist\r\n\
        ms-keep-alive: UAC;hop-hop=yes\r\n\
        Content-Length: 0\r\n\r\n";

    fn one(buf: &[u8]) -> (Message, usize) {
        match parse(buf, &Limits::default()).unwrap() {
            Parsed::Message { message, len } => (message, len),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_sipe_register() {
        let (m, len) = one(REGISTER);
        assert_eq!(len, REGISTER.len());
        assert_eq!(m.method(), Some(&Method::Register));
        assert_eq!(m.header("Call-ID"), Some("123@host"));
        assert_eq!(m.header("i"), Some("123@host"));
        assert_eq!(
            m.headers_named("Supported").collect::<Vec<_>>(),
            ["gruu-10", "adhoclist"]
        );
        assert_eq!(m.header("MS-KEEP-ALIVE"), Some("UAC;hop-hop=yes"));
        assert_eq!(m.cseq(), Some((1, Method::Register)));
    }

    #[test]
    fn extension_methods_responses_and_bodies() {
        let raw = b"SERVICE sip:alice@example.com SIP/2.0\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 7 SERVICE\r\nl: 5\r\n\r\nhelloREST";
        let (m, len) = one(raw);
        assert_eq!(m.method(), Some(&Method::Service));
        assert_eq!(m.body, b"hello");
        assert_eq!(&raw[len..], b"REST");
        let (r, _) = one(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            r.start,
            StartLine::Response {
                code: 200,
                reason: "OK".into()
            }
        );
        let (b, _) = one(b"BENOTIFY sip:x@y SIP/2.0\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 BENOTIFY\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(b.method(), Some(&Method::Benotify));
    }

    #[test]
    fn keep_alives_and_partial_input() {
        let l = Limits::default();
        assert_eq!(parse(b"\r\n\r\nREG", &l), Ok(Parsed::KeepAlive(4)));
        for cut in 0..REGISTER.len() {
            assert_eq!(
                parse(&REGISTER[..cut], &l),
                Ok(Parsed::Incomplete),
                "cut at {cut}"
            );
        }
        let with_body = b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\n12345";
        assert_eq!(parse(with_body, &l), Ok(Parsed::Incomplete));
    }

    #[test]
    fn folded_headers_are_joined() {
        let (m, _) = one(b"SIP/2.0 200 OK\r\nSupported: a,\r\n  b\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(m.header("Supported"), Some("a, b"));
    }

    #[test]
    fn malformed_input_gets_the_right_status() {
        let l = Limits::default();
        let status = |b: &[u8]| parse(b, &l).unwrap_err().status();
        assert_eq!(status(b"HELLO\r\n\r\n"), 400);
        // A bad request line with readable headers can be answered and skipped.
        let raw = b"REGISTER example.com SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 2\r\n\r\nhiNEXT";
        let e = parse(raw, &l).unwrap_err();
        assert_eq!((e.status(), e.skip()), (400, Some(raw.len() - 4)));
        assert_eq!(e.partial().unwrap().header("Call-ID"), Some("c"));
        let v = parse(
            b"REGISTER sip:x SIP/3.0\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n",
            &l,
        )
        .unwrap_err();
        assert_eq!((v.status(), v.partial().is_some()), (505, true));
        assert_eq!(
            status(b"REGISTER sip:x SIP/3.0\r\nContent-Length: 0\r\n\r\n"),
            505
        );
        assert_eq!(status(b"SIP/2.0 99 Nope\r\nContent-Length: 0\r\n\r\n"), 400);
        assert_eq!(
            status(b"REGISTER sip:x SIP/2.0\r\nno colon here\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"REGISTER sip:x SIP/2.0\r\n bad continuation\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"REGISTER sip:x SIP/2.0\r\nContent-Length: x\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"REGISTER sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n"),
            400
        );
        let raw = b"REGISTER sip:x SIP/2.0\r\nFrom: a\r\nTo: b\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let missing = parse(raw, &l).unwrap_err();
        assert_eq!(missing.to_string(), "missing Call-ID header");
        assert_eq!(
            missing.skip(),
            Some(raw.len()),
            "the framing is known: skip it"
        );
        assert!(missing.partial().is_some());
        let no_length = parse(b"REGISTER sip:x SIP/2.0\r\nCall-ID: c\r\n\r\n", &l).unwrap_err();
        assert_eq!((no_length.status(), no_length.skip()), (400, None));
    }

    #[test]
    fn limits_at_the_boundary() {
        let l = Limits {
            max_header_bytes: 64,
            max_headers: 2,
            max_body_bytes: 4,
        };
        let ok = b"SIP/2.0 200 OK\r\nA: 1\r\nContent-Length: 4\r\n\r\n1234";
        assert!(matches!(parse(ok, &l), Ok(Parsed::Message { .. })));
        let body = b"SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\n12345";
        let e = parse(body, &l).unwrap_err();
        assert_eq!(e.status(), 413);
        assert!(e.partial().is_some(), "headers known for the 413");
        let many = b"SIP/2.0 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse(many, &l), Err(ParseError::TooManyHeaders(2)));
        let long = [b"SIP/2.0 200 OK\r\nX: ".as_slice(), &[b'a'; 80]].concat();
        assert_eq!(parse(&long, &l), Err(ParseError::HeadersTooLarge(64)));
    }

    #[test]
    fn serializes_one_header_per_line_with_content_length() {
        let m = Message::request(Method::Service, "sip:a@b")
            .with_header("k", "ms-benotify")
            .with_header("Supported", "com.microsoft.autoextend")
            .with_header("Content-Length", "999");
        let mut m = m;
        m.body = b"<x/>".to_vec();
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert_eq!(
            text,
            "SERVICE sip:a@b SIP/2.0\r\nSupported: ms-benotify\r\nSupported: com.microsoft.autoextend\r\nContent-Length: 4\r\n\r\n<x/>"
        );
    }
}
