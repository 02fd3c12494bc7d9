//! The common event read by hand: an Azure event object (Event Grid or CloudEvents)
//! whose keys and strings hold no escapes, scanned once into the [`Fields`] that serde's
//! one-pass read would give. serde_json spent about 7,500 instructions on a typical
//! Event Grid event (a visitor per field, a key compared against every field name, an
//! `Option` per value); this scan reads the same bytes in a fraction of that.
//!
//! It answers only when it is sure: anything it does not handle (an escape anywhere, a
//! repeated key, a key of another schema, a field of another type than the Azure
//! schemas want, a `contentLength` that is not a plain integer, nesting deeper than
//! [`MAX_DEPTH`]) gives `None`, and the caller reads the object with serde, which finds
//! the same answer or says why. Nor does it accept text serde_json would refuse: every
//! value it passes over is checked against the JSON grammar. The property tests hold it
//! to serde's read of the same text.

use std::borrow::Cow;

use super::azure::AzureData;
use super::{BorrowedStr, Fields, Text};

/// Deeper nesting in a value passed over is left to serde (whose own limit is 128).
const MAX_DEPTH: u32 = 64;

/// The one-pass read of the event object `text` (no whitespace around it), or `None`
/// when this scan cannot be sure of it.
pub(super) fn fields(text: &str) -> Option<Fields<'_>> {
    let mut s = Scan {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let mut f = Fields {
        records: None,
        minio_event_name: None,
        specversion: None,
        event_type: None,
        subject: None,
        bucket: None,
        name: None,
        s3_service_event: None,
        id: None,
        topic: None,
        event_time: None,
        data: None,
        ce_type: None,
        source: None,
        time: None,
    };
    // Keys seen, one bit each (a repeated key is serde's error to report).
    let mut seen = 0u16;
    s.object(|s, key| {
        let (bit, slot) = match key {
            b"specversion" => (0, &mut f.specversion),
            b"eventType" => (1, &mut f.event_type),
            b"subject" => (2, &mut f.subject),
            b"id" => (3, &mut f.id),
            b"topic" => (4, &mut f.topic),
            b"eventTime" => (5, &mut f.event_time),
            b"type" => (6, &mut f.ce_type),
            b"source" => (7, &mut f.source),
            b"time" => (8, &mut f.time),
            b"data" => {
                once(&mut seen, 9)?;
                f.data = s.data()?;
                return Some(());
            }
            // The other schemas' keys: their events are read the usual way.
            b"Records" | b"EventName" | b"bucket" | b"name" | b"Event" => return None,
            _ => return s.skip_value(),
        };
        once(&mut seen, bit)?;
        *slot = s.text()?;
        Some(())
    })?;
    // All of `text`: the caller trimmed the whitespace around it.
    (s.pos == s.bytes.len()).then_some(f)
}

/// Marks key `bit` as seen; `None` if it was already.
fn once(seen: &mut u16, bit: u16) -> Option<()> {
    let mask = 1 << bit;
    if *seen & mask != 0 {
        return None;
    }
    *seen |= mask;
    Some(())
}

struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Steps over JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Steps over `b`, which must come next.
    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// A string without escapes, from its opening quote (which must come next) to after
    /// its closing one: its contents.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.pos + 1;
        let end = start + self.string_bytes()?.len();
        // Both ends are next to an ASCII quote: char boundaries.
        self.text.get(start..end)
    }

    /// [`Self::string`] as bytes, for keys and skipped strings: no char boundary to check.
    #[inline(always)]
    fn string_bytes(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = &self.bytes[self.pos..];
        let len = special(rest)?;
        if rest[len] != b'"' {
            // An escape (left to serde) or a control character (invalid).
            return None;
        }
        self.pos += len + 1;
        Some(&rest[..len])
    }

    /// An object's key and the colon after it (whitespace around both stepped over).
    fn key(&mut self) -> Option<&'a [u8]> {
        self.ws();
        let key = self.string_bytes()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(key)
    }

    /// After a member of an object closed by `close` (or an element of an array): a
    /// comma (`false`, another follows) or `close` (`true`, the last).
    fn next_member(&mut self, close: u8) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.pos += 1;
                Some(false)
            }
            b if b == close => {
                self.pos += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// An object, from its `{` (which must come next) to after its `}`: `member` reads
    /// each member's value, the cursor after its key and colon.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.key()?;
            member(self, key)?;
            if self.next_member(b'}')? {
                return Some(());
            }
        }
    }

    /// A string field as serde's read of [`Text`] has it: `null` is `None`.
    fn text(&mut self) -> Option<Text<'a>> {
        match self.peek()? {
            b'"' => Some(Some(BorrowedStr(Cow::Borrowed(self.string()?)))),
            b'n' => self.literal(b"null").map(|()| None),
            _ => None,
        }
    }

    /// `data` as [`AzureData`] reads it: `null`, or an object whose `contentLength` is
    /// a `u64` (or `null`) and whose `eTag` and `contentType` are strings (or `null`).
    fn data(&mut self) -> Option<Option<AzureData<'a>>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        let (mut length, mut etag, mut content_type) = (None, None, None);
        let mut seen = 0u16;
        self.object(|s, key| match key {
            b"contentLength" => {
                once(&mut seen, 0)?;
                length = s.length()?;
                Some(())
            }
            b"eTag" => {
                once(&mut seen, 1)?;
                etag = s.text()?;
                Some(())
            }
            b"contentType" => {
                once(&mut seen, 2)?;
                content_type = s.text()?;
                Some(())
            }
            _ => s.skip_value(),
        })?;
        Some(Some(AzureData::new(length, etag, content_type)))
    }

    /// `contentLength`: `null`, or an integer that fits a `u64` (what serde reads into
    /// one; a sign, a fraction or an exponent is left to it).
    fn length(&mut self) -> Option<Option<u64>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| None),
            b'0'..=b'9' => {
                let start = self.pos;
                let mut n: u64 = 0;
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                    self.pos += 1;
                }
                // A fraction or an exponent after the digits is no separator: the
                // caller refuses it.
                let leading_zero = self.bytes[start] == b'0' && self.pos - start > 1;
                (!leading_zero).then_some(Some(n))
            }
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// A JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// One digit or more.
    fn some_digits(&mut self) -> Option<()> {
        let start = self.pos;
        self.digits();
        (self.pos > start).then_some(())
    }

    /// Passes over one JSON value of any kind, checking it against the grammar, without
    /// recursion: `open` holds, one bit per level, whether each enclosing container is
    /// an object.
    fn skip_value(&mut self) -> Option<()> {
        let mut open: u64 = 0;
        let mut depth: u32 = 0;
        loop {
            // A value is due.
            match self.peek()? {
                b'"' => {
                    self.string_bytes()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                container @ (b'{' | b'[') => {
                    self.pos += 1;
                    let object = container == b'{';
                    self.ws();
                    if self.eat(if object { b'}' } else { b']' }).is_none() {
                        if depth == MAX_DEPTH {
                            return None;
                        }
                        open = open << 1 | u64::from(object);
                        depth += 1;
                        if object {
                            self.key()?;
                        } else {
                            self.ws();
                        }
                        continue;
                    }
                }
                _ => return None,
            }
            // A value ended: close the containers it ends, then the next one is due.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let object = open & 1 == 1;
                if self.next_member(if object { b'}' } else { b']' })? {
                    open >>= 1;
                    depth -= 1;
                    continue;
                }
                if object {
                    self.key()?;
                } else {
                    self.ws();
                }
                break;
            }
        }
    }
}

/// The position of the first byte JSON escapes in a string (`"`, `\` or a control
/// character, below 0x20) in `bytes`: where a string without escapes ends, and whether
/// one the envelope writes needs escaping. Sixteen bytes at a time where there are that
/// many (SSE2, which every x86_64 has), then eight at a time.
fn special(bytes: &[u8]) -> Option<usize> {
    // Where the blocks of sixteen ended without a find.
    #[cfg(target_arch = "x86_64")]
    let at = {
        let mut at = 0;
        while at + 16 <= bytes.len() {
            let mask = sse2::special_mask(sse2::block(&bytes[at..at + 16]));
            if mask != 0 {
                return Some(at + mask.trailing_zeros() as usize);
            }
            at += 16;
        }
        at
    };
    #[cfg(not(target_arch = "x86_64"))]
    let at = 0;
    special_by_words(&bytes[at..]).map(|i| at + i)
}

/// Whether `bytes` holds a byte [`special`] finds. For the envelope's strings, which are
/// short and rarely hold one: every block is looked at and the answer taken once at the
/// end (the last few bytes padded with a byte that needs no escape), no branch per block.
pub(crate) fn needs_escape(bytes: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut blocks = bytes.chunks_exact(16);
        let mut found = 0;
        for block in &mut blocks {
            found |= sse2::special_mask(sse2::block(block));
        }
        let mut last = [b'a'; 16];
        last[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
        found |= sse2::special_mask(sse2::block(&last));
        found != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        special_by_words(bytes).is_some()
    }
}

/// Sixteen bytes at a time with SSE2, which every x86_64 has.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// The 16 bytes of `block` in a register.
    #[inline(always)]
    pub(super) fn block(block: &[u8]) -> __m128i {
        assert!(block.len() >= 16);
        // SAFETY: SSE2 is in x86_64's baseline; the load reads the first 16 bytes of
        // `block`, which has them, and may be unaligned.
        unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>()) }
    }

    /// One bit per byte of `v` (lowest first): set where it is `"`, `\` or below 0x20.
    #[inline(always)]
    pub(super) fn special_mask(v: __m128i) -> u32 {
        // SAFETY: SSE2 is in x86_64's baseline; these work on registers only.
        unsafe {
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // A byte at most 0x1f (unsigned) is its own minimum with 0x1f.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        }
    }
}

/// [`special`] eight bytes at a time (the tail of a search, or all of it elsewhere).
fn special_by_words(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set below where it is zero (or below 0x20); the lowest
        // such byte is exact, those above it may be false alarms, which is all we use.
        let hits = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGH;
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

/// What a read holds, comparable.
#[cfg(test)]
type Seen<'a> = (
    [Option<&'a str>; 9],
    Option<(Option<u64>, Option<&'a str>, Option<&'a str>)>,
    [bool; 5],
);

#[cfg(test)]
fn seen<'a>(f: &'a Fields<'a>) -> Seen<'a> {
    let t = |t: &'a Text<'a>| t.as_ref().map(|s| s.0.as_ref());
    (
        [
            t(&f.specversion),
            t(&f.event_type),
            t(&f.subject),
            t(&f.id),
            t(&f.topic),
            t(&f.event_time),
            t(&f.ce_type),
            t(&f.source),
            t(&f.time),
        ],
        f.data.as_ref().map(|d| {
            let (length, etag, content_type) = d.parts();
            (length, t(etag), t(content_type))
        }),
        [
            f.records.is_some(),
            f.minio_event_name.is_some(),
            f.bucket.is_some(),
            f.name.is_some(),
            f.s3_service_event.is_some(),
        ],
    )
}

/// Where the scan reads `text`, serde's one-pass read does too, to the same fields
/// (`Ok(true)`); `Ok(false)` where the scan leaves it to serde.
#[cfg(test)]
pub(super) fn agrees_with_serde(text: &str) -> Result<bool, String> {
    let Some(scanned) = fields(text) else {
        return Ok(false);
    };
    match serde_json::from_str::<Fields<'_>>(text) {
        Ok(read) if seen(&read) == seen(&scanned) => Ok(true),
        Ok(read) => Err(format!(
            "{:?} against serde's {:?}",
            seen(&scanned),
            seen(&read)
        )),
        Err(e) => Err(format!(
            "scanned {:?}, but serde refuses it: {e}",
            seen(&scanned)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typical_event_grid_event_is_scanned() {
        let text = r#"{"topic": "/subscriptions/s/providers/Microsoft.Storage/storageAccounts/a",
            "subject": "/blobServices/default/containers/c/blobs/p.json",
            "eventType": "Microsoft.Storage.BlobCreated", "id": "e-1",
            "data": {"api": "PutBlob", "contentLength": 18234, "eTag": "0x8D", "contentType": null,
                     "nested": [1, -2.5e+3, true, false, null, {"k": []}, "s"]},
            "dataVersion": "", "metadataVersion": "1", "eventTime": "2024-05-14T09:21:37Z"}"#;
        assert_eq!(agrees_with_serde(text), Ok(true));
        let f = fields(text).unwrap();
        assert_eq!(f.id.unwrap().0, "e-1");
        assert_eq!(f.data.unwrap().parts().0, Some(18234));
        assert!(f.specversion.is_none());
    }

    #[test]
    fn what_it_is_not_sure_of_is_left_to_serde() {
        for text in [
            r#"{"id": "a\"b"}"#,
            r#"{"i\u0064": "a"}"#,
            r#"{"id": "a", "id": "b"}"#,
            r#"{"id": null, "id": "b"}"#,
            r#"{"data": {"contentLength": 1.0}}"#,
            r#"{"data": {"contentLength": 1e3}}"#,
            r#"{"data": {"contentLength": -1}}"#,
            r#"{"data": {"contentLength": 18446744073709551616}}"#,
            r#"{"data": {"eTag": "a", "eTag": "b"}}"#,
            r#"{"data": []}"#,
            r#"{"data": "x"}"#,
            r#"{"id": 7}"#,
            r#"{"Records": []}"#,
            r#"{"bucket": "b", "name": "n"}"#,
            r#"{"x": "\n"}"#,
            // Invalid JSON.
            r#"{"x": 01}"#,
            r#"{"x": 1.}"#,
            r#"{"x": -}"#,
            r#"{"x": [1,]}"#,
            r#"{"x": {"a" 1}}"#,
            r#"{"x": tru}"#,
            r#"{"x": "a" "b"}"#,
            r#"{"x": 1,}"#,
            "{\"x\": \"\u{1}\"}",
            r#"{"x": 1} "#,
            r#"{"x": 1}}"#,
            r#"{"x": [}"#,
            r#"{"x": {]}"#,
        ] {
            assert!(fields(text).is_none(), "{text}");
        }
        let deep = format!("{{\"x\": {}1{}}}", "[".repeat(65), "]".repeat(65));
        assert!(fields(&deep).is_none());
        let deep_enough = format!("{{\"x\": {}1{}}}", "[".repeat(64), "]".repeat(64));
        assert_eq!(agrees_with_serde(&deep_enough), Ok(true));
    }

    proptest::proptest! {
        /// The sixteen- and eight-at-a-time searches find what a byte-by-byte one finds:
        /// mixed bytes, and a long plain run with one byte of any value put anywhere (so
        /// that each lane of a 16-byte block and of the tail gets its turn).
        #[test]
        fn special_agrees_with_a_byte_by_byte_search(
            bytes in proptest::collection::vec(proptest::sample::select(
                &[b'a', b'"', b'\\', 0x1f, 0x20, 0x00, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'][..]
            ), 0..80),
            plain in proptest::collection::vec(0x23u8..0x5c, 0..80),
            at in proptest::arbitrary::any::<proptest::sample::Index>(),
            byte in proptest::arbitrary::any::<u8>(),
        ) {
            let mut one = plain;
            one.insert(at.index(one.len() + 1), byte);
            for bytes in [bytes, one] {
                let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
                proptest::prop_assert_eq!(special(&bytes), naive, "{:?}", bytes);
                proptest::prop_assert_eq!(special_by_words(&bytes), naive, "{:?}", bytes);
            }
        }
    }
}
