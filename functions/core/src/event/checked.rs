//! A cursor over JSON text that serde_json has already checked (the scanner captured it as a
//! `RawValue`): read again without checking again.
//!
//! The struct columns re-read their object's text, and with serde_json that re-read cost as much
//! as the first scan (~10 % of the CPU in a profile of the copy's stages: every nested level was
//! parsed again from its own text). Here the grammar is known to hold, so members are found by looking only for quotes,
//! backslashes and braces, and a nested object is read in the same pass. Anything unexpected
//! (which checked text never has) is an `Err(Unexpected)`, and the caller keeps the object's
//! whole text in otherFields instead.

use std::borrow::Cow;

use super::scan::json_str;

/// Checked text was not what it should be.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unexpected;

/// A JSON value read from checked text.
pub(super) struct Value<'a> {
    /// Its text.
    pub raw: &'a str,
    /// A string with no escapes: its contents, borrowed.
    pub plain: Option<&'a str>,
}

pub(super) struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Cursor { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_ws(&mut self) {
        let b = self.bytes();
        while matches!(b.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    pub(super) fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes().get(self.at).copied()
    }

    /// Nothing but whitespace is left.
    pub(super) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Consumes `{`.
    pub(super) fn open_object(&mut self) -> Result<(), Unexpected> {
        self.expect(b'{')
    }

    fn expect(&mut self, byte: u8) -> Result<(), Unexpected> {
        match self.peek() {
            Some(b) if b == byte => {
                self.at += 1;
                Ok(())
            }
            _ => Err(Unexpected),
        }
    }

    /// The next member's name (its `:` consumed), or `None` after the object's `}`. `first`
    /// is true for the object's first call.
    pub(super) fn next_key(&mut self, first: bool) -> Result<Option<Cow<'a, str>>, Unexpected> {
        match self.peek() {
            Some(b'}') => {
                self.at += 1;
                return Ok(None);
            }
            Some(b',') if !first => self.at += 1,
            _ if first => {}
            _ => return Err(Unexpected),
        }
        if self.peek() != Some(b'"') {
            return Err(Unexpected);
        }
        let key = match self.string()? {
            Value { plain: Some(s), .. } => Cow::Borrowed(s),
            Value { raw, .. } => json_str(raw).ok_or(Unexpected)?,
        };
        self.expect(b':')?;
        Ok(Some(key))
    }

    /// The string at the cursor (a `"`).
    fn string(&mut self) -> Result<Value<'a>, Unexpected> {
        let (b, start) = (self.bytes(), self.at);
        let mut at = start + 1;
        let mut escaped = false;
        loop {
            at += memchr::memchr2(b'"', b'\\', b.get(at..).ok_or(Unexpected)?).ok_or(Unexpected)?;
            if b[at] == b'\\' {
                // An escape is a backslash and one byte (`\uXXXX`'s hex digits hold no quote).
                escaped = true;
                at += 2;
            } else {
                self.at = at + 1;
                let raw = self.text.get(start..at + 1).ok_or(Unexpected)?;
                let plain = if escaped { None } else { Some(self.text.get(start + 1..at).ok_or(Unexpected)?) };
                return Ok(Value { raw, plain });
            }
        }
    }

    /// The value at the cursor, consumed.
    pub(super) fn value(&mut self) -> Result<Value<'a>, Unexpected> {
        let first = self.peek().ok_or(Unexpected)?;
        let (b, start) = (self.bytes(), self.at);
        match first {
            b'"' => return self.string(),
            open @ (b'{' | b'[') => {
                // In valid JSON, braces balance outside strings whatever brackets do, and the same
                // for brackets: only the value's own kind is counted.
                let close = if open == b'{' { b'}' } else { b']' };
                let mut depth = 0usize;
                loop {
                    self.at +=
                        memchr::memchr3(b'"', open, close, b.get(self.at..).ok_or(Unexpected)?).ok_or(Unexpected)?;
                    let c = b[self.at];
                    if c == b'"' {
                        self.string()?;
                        continue;
                    }
                    self.at += 1;
                    if c == open {
                        depth += 1;
                    } else {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                }
            }
            // A number, true, false or null: up to the next delimiter.
            _ => {
                let n =
                    b[self.at..].iter().position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'));
                self.at = n.map_or(b.len(), |n| self.at + n);
            }
        }
        match self.text.get(start..self.at) {
            Some(raw) if !raw.is_empty() => Ok(Value { raw, plain: None }),
            _ => Err(Unexpected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    /// serde_json's reading of the same text: the reference.
    fn serde_members(text: &str) -> Option<Vec<(String, String)>> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<super::super::scan::Key<'de>, &'de RawValue>()? {
                    out.push((k.0.into_owned(), v.get().to_string()));
                }
                Ok(out)
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let out = de.deserialize_map(V).ok()?;
        de.end().ok()?;
        Some(out)
    }

    /// Each member's name and raw text, as the cursor reads them.
    fn cursor_members(text: &str) -> Result<Vec<(String, String)>, Unexpected> {
        let mut c = Cursor::new(text);
        c.open_object()?;
        let mut out = Vec::new();
        while let Some(key) = c.next_key(out.is_empty())? {
            let value = c.value()?;
            if let Some(s) = value.plain {
                assert_eq!(format!("\"{s}\""), value.raw);
            }
            let raw = value.raw.to_string();
            out.push((key.into_owned(), raw));
        }
        if !c.at_end() {
            return Err(Unexpected);
        }
        Ok(out)
    }

    #[test]
    fn members_match_serde_json_on_checked_objects() {
        for text in [
            "{}",
            " { } ",
            r#"{"a":1}"#,
            r#"{"type":"AssumedRole","sessionContext":{"attributes":{"creationDate":"2024-01-01T00:00:00Z","mfaAuthenticated":"false"},"sessionIssuer":{"arn":"arn:aws:iam::1:role/x"}},"n":null}"#,
            "{ \"a\" : [ 1 , { \"b\" : \"]}\\\"{[\" } , -2.5e+3 ] ,\n\t\"c\\u0041\\n\":true\r}",
            r#"{"s":"\\","t":"\\\"","u":"é \u00e9 \ud83d\ude00","v":[[],[[{}]]],"w":false,"x":{"y":["}",{"z":"{"}]}}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"":"","x":{"":{"":[]}}}"#,
        ] {
            let reference = serde_members(text).expect("the case is a JSON object");
            assert_eq!(cursor_members(text), Ok(reference), "{text}");
        }
    }

    #[test]
    fn text_that_is_not_one_object_is_refused_not_misread() {
        for text in [
            "",
            "[]",
            "\"a\"",
            "null",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "{\"a\":1}x",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":1,}",
            "{\"a\":}",
            "{\"a\":{\"b\":1}",
            "{\"a\":\"x}",
        ] {
            assert_eq!(cursor_members(text), Err(Unexpected), "{text}");
        }
    }
}
