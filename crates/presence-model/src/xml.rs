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

/// One XML element: local name, attributes (local names) and children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
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
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == local)
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
        out.push_str(&self.name);
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
        out.push_str(&self.name);
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

fn start_element(start: &BytesStart) -> Result<Element, XmlError> {
    let mut el = Element::new(&local(start.name().as_ref()));
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr
            .unescape_value()
            .map_err(|e| escape_error(e.to_string()))?
            .into_owned();
        // Namespace declarations are kept under their full name; others by local name.
        let key = if key.starts_with("xmlns") {
            key
        } else {
            local(key.as_bytes())
        };
        el.attrs.push((key, value));
    }
    Ok(el)
}

/// Parses and validates a category value: exactly one element (an XML declaration,
/// comments and surrounding white space allowed), no DOCTYPE, no entities beyond the
/// five predefined ones and character references, at most [`MAX_XML_DEPTH`] deep.
pub fn parse(input: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(input);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
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
                let unescaped = text.unescape().map_err(|e| escape_error(e.to_string()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Text(unescaped.into_owned())),
                    None if unescaped.trim().is_empty() => {}
                    None => return Err(XmlError::NotOneElement),
                }
            }
            Event::CData(data) => match stack.last_mut() {
                Some(parent) => parent.children.push(Node::Text(
                    String::from_utf8_lossy(&data.into_inner()).into_owned(),
                )),
                None => return Err(XmlError::NotOneElement),
            },
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed("unclosed element".into()));
    }
    root.ok_or(XmlError::NotOneElement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_element() {
        let el = parse(r#"<?xml version="1.0"?> <note xmlns="urn:x"><body type="personal">a &amp; b</body></note> "#)
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
