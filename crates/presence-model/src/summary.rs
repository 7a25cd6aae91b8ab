//! Decoded summaries of the categories JSON clients care about, so they need not parse
//! XML: availability (with its class), activity, note text and display name.

use crate::xml::{self, Element};

/// What MS-PRES availability numbers mean to a person (SIPE decodes them the same way).
pub fn availability_class(availability: u32) -> &'static str {
    match availability {
        3000..=4499 => "available",
        4500..=5999 => "idle",
        6000..=7499 => "busy",
        7500..=8999 => "busy-idle",
        9000..=11999 => "do-not-disturb",
        12000..=14999 => "be-right-back",
        15000..=17999 => "away",
        _ => "offline",
    }
}

/// The decoded fields of one instance; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub availability: Option<u32>,
    pub availability_class: Option<&'static str>,
    pub activity: Option<String>,
    pub note: Option<String>,
    pub display_name: Option<String>,
}

impl Summary {
    pub fn is_empty(&self) -> bool {
        *self == Summary::default()
    }
}

/// The activity of a `state` element: its token, or else its first custom text.
pub fn activity_of(activity: &Element) -> Option<String> {
    if let Some(token) = activity.attr("token").filter(|t| !t.is_empty()) {
        return Some(token.to_string());
    }
    activity
        .child("custom")
        .map(Element::text)
        .filter(|t| !t.is_empty())
}

/// Summarises a value of category `state`, `note` or `contactCard`; `None` for other
/// categories or values that carry nothing to summarise.
pub fn summarize(category: &str, value: &str) -> Option<Summary> {
    if !matches!(category, "state" | "note" | "contactCard") {
        return None;
    }
    let root = xml::parse(value).ok()?;
    let mut s = Summary::default();
    match category {
        "state" => {
            s.availability = root
                .child("availability")
                .and_then(|a| a.text().parse().ok());
            s.availability_class = s.availability.map(availability_class);
            s.activity = root.child("activity").and_then(activity_of);
        }
        "note" => {
            // A personal note is what people set; an out-of-office note wins only
            // when there is no personal one.
            let bodies: Vec<&Element> = root.elements().filter(|e| e.name == "body").collect();
            let pick = bodies
                .iter()
                .find(|b| b.attr("type").is_none_or(|t| t == "personal"))
                .or(bodies.first());
            s.note = pick.map(|b| b.text()).filter(|t| !t.is_empty());
        }
        _ => {
            s.display_name = root
                .child("identity")
                .and_then(|i| i.child("name"))
                .and_then(|n| n.child("displayName"))
                .map(Element::text)
                .filter(|t| !t.is_empty());
        }
    }
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_at_boundaries() {
        let cases = [
            (0, "offline"),
            (2999, "offline"),
            (3000, "available"),
            (4499, "available"),
            (4500, "idle"),
            (6000, "busy"),
            (7500, "busy-idle"),
            (9000, "do-not-disturb"),
            (11999, "do-not-disturb"),
            (12000, "be-right-back"),
            (15000, "away"),
            (17999, "away"),
            (18000, "offline"),
            (18500, "offline"),
        ];
        for (a, c) in cases {
            assert_eq!(availability_class(a), c, "{a}");
        }
    }

    #[test]
    fn summarises_state_note_card() {
        let s = summarize(
            "state",
            r#"<state xmlns="http://schemas.microsoft.com/2006/09/sip/state"><availability>6500</availability><activity token="on-the-phone"/></state>"#,
        )
        .unwrap();
        assert_eq!(s.availability, Some(6500));
        assert_eq!(s.availability_class, Some("busy"));
        assert_eq!(s.activity.as_deref(), Some("on-the-phone"));

        let n = summarize(
            "note",
            r#"<note><body type="OOF">gone</body><body type="personal">In the office</body></note>"#,
        )
        .unwrap();
        assert_eq!(n.note.as_deref(), Some("In the office"));

        let c = summarize(
            "contactCard",
            r#"<contactCard><identity><name><displayName>Alice A</displayName></name></identity></contactCard>"#,
        )
        .unwrap();
        assert_eq!(c.display_name.as_deref(), Some("Alice A"));

        assert_eq!(summarize("calendarData", "<calendarData/>"), None);
        assert_eq!(summarize("note", "<note/>"), None);
    }
}
