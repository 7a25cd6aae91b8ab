#![no_main]
//! Feeds arbitrary bytes to the parser: it must never panic, and whatever it accepts
//! must serialize to bytes that parse to the same message.

use libfuzzer_sys::fuzz_target;
use sip_proto::{Limits, Parsed, parse};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(Parsed::Message { message, .. }) = parse(data, &limits) {
        let again = message.to_bytes();
        match parse(&again, &limits) {
            Ok(Parsed::Message { message: reparsed, .. }) => {
                let strip = |mut m: sip_proto::Message| {
                    m.headers.retain(|h| h.name != "Content-Length");
                    m
                };
                assert_eq!(strip(reparsed), strip(message));
            }
            other => panic!("serialized message did not parse: {other:?}"),
        }
    }
});
