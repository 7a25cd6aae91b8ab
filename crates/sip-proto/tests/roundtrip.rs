//! Property tests: serialization and parsing are inverse; no input makes the parser
//! panic; a message split anywhere parses the same once complete.

use proptest::prelude::*;
use sip_proto::{Header, Limits, Message, Method, Parsed, StartLine, parse};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,15}"
}

fn header() -> impl Strategy<Value = Header> {
    let names = prop_oneof![
        Just("Via".to_string()),
        Just("Contact".to_string()),
        Just("Supported".to_string()),
        Just("Event".to_string()),
        Just("ms-keep-alive".to_string()),
        Just("Proxy-Require".to_string()),
        token(),
    ];
    // Values: printable, no CR/LF, no surrounding white space (the parser trims).
    (names, "[!-~]([ -~]{0,40}[!-~])?").prop_map(|(n, v)| Header::new(&n, v))
}

fn message() -> impl Strategy<Value = Message> {
    let request = (
        prop_oneof![
            Just(Method::Register),
            Just(Method::Subscribe),
            Just(Method::Service),
            Just(Method::Benotify),
            "[A-Z]{3,10}".prop_map(|m| Method::parse(&m)),
        ],
        "sip:[a-z]{1,8}@[a-z]{1,8}\\.com",
    )
        .prop_map(|(method, uri)| StartLine::Request { method, uri });
    let response = (100u16..700, "[A-Za-z][A-Za-z ]{0,20}[A-Za-z]")
        .prop_map(|(code, reason)| StartLine::Response { code, reason });
    (
        prop_oneof![request, response],
        prop::collection::vec(header(), 0..12),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(start, mut headers, body)| {
            headers.retain(|h| h.name != "Content-Length");
            let mut m = Message {
                start,
                headers,
                body,
            };
            if m.method().is_some() {
                for (n, v) in [
                    ("Call-ID", "c@h"),
                    ("CSeq", "1 REGISTER"),
                    ("From", "<sip:a@b>"),
                    ("To", "<sip:a@b>"),
                ] {
                    if m.header(n).is_none() {
                        m.push_header(n, v);
                    }
                }
            }
            m
        })
}

fn without_length(mut m: Message) -> Message {
    m.headers.retain(|h| h.name != "Content-Length");
    m
}

proptest! {
    #[test]
    fn parse_inverts_serialize(m in message()) {
        let bytes = m.to_bytes();
        match parse(&bytes, &Limits::default()) {
            Ok(Parsed::Message { message, len }) => {
                prop_assert_eq!(len, bytes.len());
                prop_assert_eq!(without_length(message), m);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn split_input_parses_once_complete(m in message(), cut in any::<prop::sample::Index>()) {
        let bytes = m.to_bytes();
        let at = cut.index(bytes.len());
        prop_assert_eq!(parse(&bytes[..at], &Limits::default()), Ok(Parsed::Incomplete));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes, &Limits::default());
    }
}
