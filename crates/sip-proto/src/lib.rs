//! A sans-IO SIP message parser and serializer for the Microsoft dialect of SIP
//! (MS-SIP): the extension methods SERVICE and BENOTIFY, compact header forms, `ms-*`
//! headers, and CRLF keep-alives between messages on stream transports.
//!
//! [`parse`] takes the bytes received so far and either reports that more are
//! needed, skips keep-alive CRLFs, or returns one message and how many bytes it used.
//! It never reads a socket. Hard limits ([`Limits`]) bound what a peer can make the
//! server buffer; each violation is an error carrying the status code to answer with.
//! Header values are kept byte-for-byte (as UTF-8 text), since MS-SIPAE message
//! signatures are computed over them.

mod header;
mod message;
mod name_addr;
mod parse;

pub use header::{Header, canonical_name};
pub use message::{Message, Method, StartLine};
pub use name_addr::NameAddr;
pub use parse::{Limits, ParseError, Parsed, parse};
