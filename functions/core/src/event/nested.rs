//! A struct column's object (userIdentity, tlsDetails) → one slot per field of its shape, and
//! the members that do not fit (unknown names, a JSON type other than the field's) → a member
//! list for `otherFields`, nested the way the object is: `"sessionContext":{"attributes":{"x":1}}`.

use std::borrow::Cow;

use super::checked::{Cursor, Unexpected};
use super::scan::json_str;
use super::schema::{NodeKind, Shape};

/// One field's value in an event, borrowed from the text.
#[derive(Debug, Clone, Default)]
pub enum Leaf<'a> {
    #[default]
    Absent,
    /// A struct field that was an object.
    Present,
    Str(Cow<'a, str>),
    /// A free-form field's JSON text (never `null`).
    Json(&'a str),
}

/// Reads the object text `raw` as struct node `node` of `shape` into `slots` (one per node;
/// `slots[node]` is left to the caller). Members that do not fit are appended to `other`.
/// `false` (nothing written) when `raw` is not a JSON object.
///
/// `raw` is text the scanner has checked, so it is walked without serde_json (`checked`). If that
/// walk meets anything it does not expect (checked text cannot hold it), what it wrote is undone
/// and the answer is `false`: the caller keeps the whole value in otherFields, so nothing is lost.
pub fn read_object<'a>(shape: &Shape, node: usize, raw: &'a str, slots: &mut [Leaf<'a>], other: &mut String) -> bool {
    if !raw.starts_with('{') {
        return false;
    }
    let mark = other.len();
    let mut cursor = Cursor::new(raw);
    if read_checked(shape, node, &mut cursor, slots, other).is_ok() && cursor.at_end() {
        return true;
    }
    other.truncate(mark);
    clear_below(shape, node, slots);
    false
}

/// [`read_object`] on checked text, in one pass and without serde_json; the tests check it makes
/// the same choices as a serde_json visitor (`serde_reference`). A nested object is read where it
/// stands, not captured and read again.
fn read_checked<'a>(
    shape: &Shape,
    node: usize,
    cursor: &mut Cursor<'a>,
    slots: &mut [Leaf<'a>],
    other: &mut String,
) -> Result<(), Unexpected> {
    cursor.open_object()?;
    let mut first = true;
    while let Some(key) = cursor.next_key(first)? {
        first = false;
        let child = shape.child(node, &key);
        let kind = child.map(|c| shape.nodes[c].kind);
        if let (Some(c), Some(NodeKind::Struct)) = (child, kind)
            && cursor.peek() == Some(b'{')
        {
            let mark = other.len();
            open_member(other, &key);
            let inner = other.len();
            read_checked(shape, c, cursor, slots, other)?;
            slots[c] = Leaf::Present;
            close_member(other, mark, inner);
            continue;
        }
        let value = cursor.value()?;
        match (child, kind) {
            (Some(c), Some(NodeKind::Str)) => match value.plain.map(Cow::Borrowed).or_else(|| json_str(value.raw)) {
                Some(s) => slots[c] = Leaf::Str(s),
                None => push_member(other, &key, value.raw),
            },
            (Some(c), Some(NodeKind::Json)) if value.raw != "null" => slots[c] = Leaf::Json(value.raw),
            // Unknown names, `null` free-form fields, struct fields that are not objects.
            _ => push_member(other, &key, value.raw),
        }
    }
    Ok(())
}

/// Forgets the fields of struct node `node`'s descendants.
fn clear_below(shape: &Shape, node: usize, slots: &mut [Leaf]) {
    for &c in &shape.nodes[node].children {
        slots[c] = Leaf::Absent;
        clear_below(shape, c, slots);
    }
}

/// Appends `"name":raw` to a member list (the list may be inside an object opened with `{`).
pub(super) fn push_member(list: &mut String, name: &str, raw: &str) {
    push_key(list, name);
    list.push_str(raw);
}

/// Opens `"name":{` for a nested member list; [`close_member`] closes it or, if nothing was
/// written inside, removes it.
pub(super) fn open_member(list: &mut String, name: &str) {
    push_key(list, name);
    list.push('{');
}

pub(super) fn close_member(list: &mut String, mark: usize, inner: usize) {
    if list.len() == inner {
        list.truncate(mark);
    } else {
        list.push('}');
    }
}

fn push_key(list: &mut String, name: &str) {
    if !list.is_empty() && !list.ends_with('{') {
        list.push(',');
    }
    push_json_string(list, name);
    list.push(':');
}

/// Appends `s` as a JSON string.
pub fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // A &str always serializes.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

/// The reference the tests hold [`read_object`] to: the same read by a serde_json visitor.
#[cfg(test)]
mod serde_reference {
    use std::fmt;

    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    use super::*;
    use crate::event::scan::Key;

    pub(super) fn read_serde<'a>(
        shape: &Shape,
        node: usize,
        raw: &'a str,
        slots: &mut [Leaf<'a>],
        other: &mut String,
    ) -> bool {
        if !raw.starts_with('{') {
            return false;
        }
        let mut de = serde_json::Deserializer::from_str(raw);
        de.deserialize_map(ObjectVisitor { shape, node, slots, other }).is_ok()
    }

    struct ObjectVisitor<'s, 'o, 'a> {
        shape: &'s Shape,
        node: usize,
        slots: &'o mut [Leaf<'a>],
        other: &'o mut String,
    }

    impl<'de> Visitor<'de> for ObjectVisitor<'_, '_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
            let Self { shape, node, slots, other } = self;
            while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                let text = value.get();
                let Some(c) = shape.child(node, &key) else {
                    push_member(other, &key, text);
                    continue;
                };
                match shape.nodes[c].kind {
                    NodeKind::Str => match json_str(text) {
                        Some(s) => slots[c] = Leaf::Str(s),
                        None => push_member(other, &key, text),
                    },
                    NodeKind::Json if text != "null" => slots[c] = Leaf::Json(text),
                    NodeKind::Json => push_member(other, &key, text),
                    NodeKind::Struct => {
                        let mark = other.len();
                        open_member(other, &key);
                        let inner = other.len();
                        if read_serde(shape, c, text, slots, other) {
                            slots[c] = Leaf::Present;
                            close_member(other, mark, inner);
                        } else {
                            other.truncate(mark);
                            push_member(other, &key, text);
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::event::schema::Nested;

    /// JSON values whose member names are often the struct's own, at any depth.
    fn arb_value(names: Vec<&'static str>) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "[a-z\"\\\\é{}\\[\\],: \u{1}]{0,8}".prop_map(Value::String),
        ];
        let name = prop_oneof![3 => prop::sample::select(names), 1 => Just("x\"{"), 1 => Just("")];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((name.clone().prop_map(String::from), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn read(text: &str, checked: bool) -> (bool, String, String) {
        let shape = Nested::UserIdentity.shape();
        let mut slots = vec![Leaf::Absent; shape.nodes.len()];
        let mut other = String::new();
        let read = if checked { read_object } else { serde_reference::read_serde };
        let ok = read(shape, 0, text, &mut slots, &mut other);
        (ok, format!("{slots:?}"), other)
    }

    proptest! {
        /// The one-pass read of checked text fills the same fields and the same otherFields as
        /// serde_json's, compact or pretty, escapes and nesting included.
        #[test]
        fn checked_read_matches_serde_json(
            value in arb_value(Nested::UserIdentity.shape().nodes.iter().map(|n| n.name).collect()),
            pretty in any::<bool>(),
        ) {
            let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) };
            let text = text.expect("a Value serializes");
            prop_assert_eq!(read(&text, true), read(&text, false), "{}", text);
        }
    }

    #[test]
    fn text_the_cursor_does_not_expect_is_not_read_at_all() {
        // Not JSON, so never checked text; what the cursor wrote before it stopped is undone,
        // and the caller keeps the whole value in otherFields.
        for text in [r#"{"type":"A","x":1,}"#, r#"{"type":"A","sessionContext":{"attributes":{"mfaAuthenticated":"f"}"#]
        {
            let (ok, slots, other) = read(text, true);
            assert!(!ok, "{text}");
            assert_eq!(other, "", "{text}");
            assert!(!slots.contains("Str") && !slots.contains("Present"), "{text}: {slots}");
        }
    }

    #[test]
    fn checked_read_reads_nested_fields_and_keeps_the_rest() {
        let text = r#"{"type":"AssumedRole","x":{"y":1},"sessionContext":{"attributes":{"mfaAuthenticated":"false","z":[1,{"}":"{"}]},"sessionIssuer":"not an object","sourceIdentity":"a\u0041"}}"#;
        let (ok, slots, other) = read(text, true);
        assert!(ok);
        assert_eq!((ok, &slots, &other), (true, &read(text, false).1, &read(text, false).2));
        assert_eq!(
            other,
            r#""x":{"y":1},"sessionContext":{"attributes":{"z":[1,{"}":"{"}]},"sessionIssuer":"not an object"}"#
        );
        assert!(slots.contains(r#"Str("AssumedRole")"#) && slots.contains(r#"Str("aA")"#), "{slots}");
    }
}
