//! A struct column's object (userIdentity, tlsDetails) → one slot per field of its shape, and
//! the members that do not fit (unknown names, a JSON type other than the field's) → a member
//! list for `otherFields`, nested the way the object is: `"sessionContext":{"attributes":{"x":1}}`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::scan::{Key, json_str};
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
pub fn read_object<'a>(shape: &Shape, node: usize, raw: &'a str, slots: &mut [Leaf<'a>], other: &mut String) -> bool {
    if !raw.starts_with('{') {
        return false;
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    // `raw` is a JSON object the scanner already checked, so this cannot fail on syntax.
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
                    if read_object(shape, c, text, slots, other) {
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
