//! Category values are XML elements stored verbatim. This module checks that a value
//! is one well-formed element without DTDs or entity declarations (the classic
//! billion-laughs and external-entity attacks need a DTD), and offers a small element
//! tree for the few categories the server itself reads (state, device, note,
//! contactCard).

use crate::limits::MAX_XML_DEPTH;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("XML document type declarations and entities are not accepted")]
    Dtd,
    #[error("the value must be exactly one XML element")]
    NotOneElement,
    #[error("XML nesting deeper than {MAX_XML_DEPTH} levels")]
    TooDeep,
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// One XML element: local name (for lookups), the name as written (for
/// serialisation), attributes under the names as written, and children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub qname: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: &str) -> Self {
        Element {
            name: local(name.as_bytes()),
            qname: name.to_string(),
            ..Default::default()
        }
    }

    /// An attribute by local name (`type` finds `xsi:type`); namespace declarations
    /// only by their full name.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| {
                k == local
                    || (!k.starts_with("xmlns")
                        && k.rsplit_once(':').is_some_and(|(_, l)| l == local))
            })
            .map(|(_, v)| v.as_str())
    }

    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.push((name.to_string(), value.into()));
        self
    }

    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn child(&self, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == local)
    }

    /// Concatenated text of this element's direct text children, trimmed.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s.trim().to_string()
    }

    /// Serialises the element. Attribute names are written as stored, so a caller that
    /// needs `xmlns` or `xsi:type` stores them with those names.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.qname);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            escape_into(v, out);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for c in &self.children {
            match c {
                Node::Element(e) => e.write(out),
                Node::Text(t) => escape_into(t, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.qname);
        out.push('>');
    }
}

/// Escapes text for use in XML character data or a double-quoted attribute.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    escape_into(text, &mut s);
    s
}

fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

fn local(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    match s.rsplit_once(':') {
        Some((_, l)) => l.to_string(),
        None => s.into_owned(),
    }
}

/// An entity reference that is not one of the five predefined ones can only be
/// resolved through a DTD, so it is reported as one.
fn escape_error(msg: String) -> XmlError {
    if msg.to_ascii_lowercase().contains("entity") {
        XmlError::Dtd
    } else {
        XmlError::Malformed(msg)
    }
}

/// An XML name: a letter, `_` or `:` first, then letters, digits, `-`, `.`, `_`, `:`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_alphanumeric() || "-._:".contains(c))
}

/// Characters XML 1.0 forbids (C0 controls other than tab, line feed and carriage
/// return), which also break the SIP bodies values are embedded in.
fn check_chars(s: &str) -> Result<(), XmlError> {
    match s
        .chars()
        .find(|c| (*c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
    {
        Some(c) => Err(XmlError::Malformed(format!(
            "control character U+{:04X}",
            c as u32
        ))),
        None => Ok(()),
    }
}

fn start_element(start: &BytesStart) -> Result<Element, XmlError> {
    let qname = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    if !valid_name(&qname) {
        return Err(XmlError::Malformed(format!(
            "invalid element name {qname:?}"
        )));
    }
    let mut el = Element::new(&qname);
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        if !valid_name(&key) {
            return Err(XmlError::Malformed(format!(
                "invalid attribute name {key:?}"
            )));
        }
        if attr.value.contains(&b'<') {
            return Err(XmlError::Malformed(format!("'<' in the value of {key}")));
        }
        let value = attr
            .unescape_value()
            .map_err(|e| escape_error(e.to_string()))?
            .into_owned();
        check_chars(&value)?;
        el.attrs.push((key, value));
    }
    Ok(el)
}

/// Parses and validates a category value: exactly one element (comments and
/// surrounding white space allowed), no DOCTYPE, no entities beyond the five
/// predefined ones and character references, at most [`MAX_XML_DEPTH`] deep, and
/// nothing that would break a document it is embedded in (no XML declaration, no
/// processing instruction, no control characters, no `<` in attribute values).
pub fn parse(input: &str) -> Result<Element, XmlError> {
    parse_with(input, false)
}

/// Like [`parse`], for a whole request body, which may start with an XML declaration.
pub fn parse_document(input: &str) -> Result<Element, XmlError> {
    parse_with(input, true)
}

fn parse_with(input: &str, declaration_allowed: bool) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(input);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut has_declaration = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Start(start) => {
                if root.is_some() {
                    return Err(XmlError::NotOneElement);
                }
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                stack.push(start_element(&start)?);
            }
            Event::Empty(start) => {
                if root.is_some() {
                    return Err(XmlError::NotOneElement);
                }
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let el = start_element(&start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(text) => {
                if text.windows(3).any(|w| w == b"]]>") {
                    return Err(XmlError::Malformed("']]>' in character data".into()));
                }
                let unescaped = text.unescape().map_err(|e| escape_error(e.to_string()))?;
                check_chars(&unescaped)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Text(unescaped.into_owned())),
                    None if unescaped.trim().is_empty() => {}
                    None => return Err(XmlError::NotOneElement),
                }
            }
            Event::CData(data) => {
                let text = String::from_utf8_lossy(&data.into_inner()).into_owned();
                check_chars(&text)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Text(text)),
                    None => return Err(XmlError::NotOneElement),
                }
            }
            // Values are embedded in other documents (SIP bodies), so they are
            // single elements: no declaration or processing instruction of their own.
            // (Reported after the whole value is read, so a DTD still reads as one.)
            Event::Decl(_) | Event::PI(_) => has_declaration = true,
            Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed("unclosed element".into()));
    }
    if has_declaration && !declaration_allowed {
        return Err(XmlError::Malformed(
            "a value is one element, without an XML declaration or processing instructions".into(),
        ));
    }
    root.ok_or(XmlError::NotOneElement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_element() {
        let el = parse(r#" <note xmlns="urn:x"><body type="personal">a &amp; b</body></note> "#)
            .unwrap();
        assert_eq!(el.name, "note");
        assert_eq!(el.child("body").unwrap().text(), "a & b");
        assert_eq!(el.child("body").unwrap().attr("type"), Some("personal"));
        assert_eq!(el.attr("xmlns"), Some("urn:x"));
    }

    #[test]
    fn strips_prefixes_to_local_names() {
        let el = parse(r#"<s:state xmlns:s="urn:s" xmlns:xsi="x" xsi:type="userState"><s:availability>3500</s:availability></s:state>"#).unwrap();
        assert_eq!(el.name, "state");
        assert_eq!(el.attr("type"), Some("userState"));
        assert_eq!(el.child("availability").unwrap().text(), "3500");
    }

    #[test]
    fn refuses_dtds_and_entities() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert_eq!(parse(bomb), Err(XmlError::Dtd));
        assert_eq!(parse("<a>&custom;</a>"), Err(XmlError::Dtd));
        assert!(parse("<a>&#65;&lt;</a>").is_ok());
    }

    #[test]
    fn refuses_what_cannot_be_embedded_safely() {
        for bad in [
            "<?xml version=\"1.0\"?><note/>",
            "<note><?pi x?></note>",
            "<a x=\"</category><x>\"/>",
            "<a>]]></a>",
            "<a>\u{1}</a>",
            "<a>&#1;</a>",
            "<a><![CDATA[\u{2}]]></a>",
            "<1a/>",
            "<a 1b=\"x\"/>",
        ] {
            assert!(matches!(parse(bad), Err(XmlError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn keeps_qualified_names_for_serialisation() {
        let src = r#"<state xmlns="urn:s" xmlns:xsi="urn:i" xsi:type="userState"><p:b xmlns:p="urn:p">1</p:b></state>"#;
        let el = parse(src).unwrap();
        assert_eq!(el.attr("type"), Some("userState"));
        assert_eq!(el.child("b").unwrap().qname, "p:b");
        assert_eq!(el.to_xml(), src);
    }

    #[test]
    fn refuses_non_elements() {
        assert_eq!(parse(""), Err(XmlError::NotOneElement));
        assert_eq!(parse("text"), Err(XmlError::NotOneElement));
        assert_eq!(parse("<a/><b/>"), Err(XmlError::NotOneElement));
        assert_eq!(parse("<a/>tail"), Err(XmlError::NotOneElement));
        assert!(matches!(parse("<a><b></a>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse("<a>"), Err(XmlError::Malformed(_))));
    }

    #[test]
    fn depth_limit_at_boundary() {
        let ok = format!(
            "{}{}",
            "<a>".repeat(MAX_XML_DEPTH),
            "</a>".repeat(MAX_XML_DEPTH)
        );
        assert!(parse(&ok).is_ok());
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_XML_DEPTH + 1),
            "</a>".repeat(MAX_XML_DEPTH + 1)
        );
        assert_eq!(parse(&deep), Err(XmlError::TooDeep));
    }

    #[test]
    fn serialises_round_trip() {
        let el = Element::new("x")
            .with_attr("a", "1\"<")
            .with_child(Element::new("y").with_text("t&"));
        let xml = el.to_xml();
        assert_eq!(xml, r#"<x a="1&quot;&lt;"><y>t&amp;</y></x>"#);
        assert_eq!(parse(&xml).unwrap(), el);
    }
}
