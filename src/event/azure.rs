//! What Azure Event Grid's two schemas share: the blob-created event type, the `data`
//! object, the `subject` naming container and blob, and the account named in the
//! resource id (`topic` in the Event Grid schema, `source` in CloudEvents). The schema
//! files (`eventgrid.rs`, `cloudevents.rs`) read their envelope and hand an
//! [`AzureEvent`] to [`azure_blob_event`].

use std::borrow::Cow;

use serde::Deserialize;

use super::{
    malformed, object, opt_string, opt_u64, piece, req_str, unsupported, BlobEvent, EventError,
    EventFormat, Field, Raw, Text,
};

/// The `data` of an Azure Storage blob event (Event Grid and CloudEvents schemas alike):
/// its size as `N` and its strings as `S`, raw values when read by a schema's own
/// parse, values when read with the rest of the event ([`AzureData`]).
#[derive(Deserialize)]
struct AzureBlobData<N, S> {
    #[serde(rename = "contentLength")]
    content_length: N,
    #[serde(rename = "eTag")]
    etag: S,
    #[serde(rename = "contentType")]
    content_type: S,
}

impl<'a, N, S: Field<'a>> AzureBlobData<N, S> {
    /// Size (read by `size`), eTag and content type, in that order.
    fn read(
        self,
        size: impl FnOnce(N) -> Result<Option<u64>, EventError>,
    ) -> Result<BlobData<'a>, EventError> {
        Ok((
            size(self.content_length)?,
            opt_string(self.etag, "data.eTag")?,
            opt_string(self.content_type, "data.contentType")?,
        ))
    }
}

/// `data` read with the rest of the event (see `super::Fields`): what
/// [`AzureBlobData`] and its fields' reads make of it, or a failure where they would
/// fail. Only an object is `data` (a struct alone would take an array too).
pub(super) struct AzureData<'a>(AzureBlobData<Option<u64>, Text<'a>>);

impl<'a> AzureData<'a> {
    /// `data` read by hand (`super::scan`): its size, eTag and content type.
    pub(super) fn new(content_length: Option<u64>, etag: Text<'a>, content_type: Text<'a>) -> Self {
        AzureData(AzureBlobData {
            content_length,
            etag,
            content_type,
        })
    }

    /// Size, eTag and content type, as read.
    #[cfg(test)]
    pub(super) fn parts(&self) -> (Option<u64>, &Text<'a>, &Text<'a>) {
        (self.0.content_length, &self.0.etag, &self.0.content_type)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for AzureData<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = AzureBlobData<Option<u64>, Text<'de>>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Object).map(AzureData)
    }
}

/// An Azure event's `data`, as a schema's struct holds it: its size, eTag and content type.
pub(super) trait DataField<'a> {
    fn read(self) -> Result<BlobData<'a>, EventError>;
}

/// Size, eTag and content type.
type BlobData<'a> = (Option<u64>, Option<Cow<'a, str>>, Option<Cow<'a, str>>);

impl<'a> DataField<'a> for Raw<'a> {
    fn read(self) -> Result<BlobData<'a>, EventError> {
        let Some(raw) = self else {
            return Ok((None, None, None));
        };
        let data: AzureBlobData<Raw<'a>, Raw<'a>> = object(raw.get(), "data")?;
        data.read(|n| opt_u64(n, "data.contentLength"))
    }
}

impl<'a> DataField<'a> for Option<AzureData<'a>> {
    fn read(self) -> Result<BlobData<'a>, EventError> {
        match self {
            Some(AzureData(data)) => data.read(Ok),
            None => Ok((None, None, None)),
        }
    }
}

/// The event type of an Azure blob-created event.
const AZURE_BLOB_CREATED: &str = "Microsoft.Storage.BlobCreated";

/// Only [`AZURE_BLOB_CREATED`] is a created event, in either Azure schema.
pub(super) fn require_azure_created(event_type: &str) -> Result<(), EventError> {
    if event_type != AZURE_BLOB_CREATED {
        return Err(unsupported(format!(
            "event type `{event_type}` is not a blob-created event"
        )));
    }
    Ok(())
}

/// The fields an Azure Storage event carries, in either schema; `S` and `D` are how its
/// schema's struct holds string fields and `data` (raw, or read with the message).
pub(super) struct AzureEvent<'a, S, D> {
    pub(super) format: EventFormat,
    pub(super) id: Cow<'a, str>,
    pub(super) event_type: Cow<'a, str>,
    /// `topic` (Event Grid) or `source` (CloudEvents): the storage account's resource id.
    pub(super) resource: Option<Cow<'a, str>>,
    pub(super) subject: S,
    pub(super) time: S,
    pub(super) time_field: &'static str,
    pub(super) data: D,
}

/// Builds the [`BlobEvent`] of an Azure blob-created event whose id and type were checked.
pub(super) fn azure_blob_event<'a, S: Field<'a>, D: DataField<'a>>(
    ev: AzureEvent<'a, S, D>,
) -> Result<BlobEvent<'a>, EventError> {
    let subject = req_str(ev.subject, "subject")?;
    let (container, path) = parse_azure_subject(&subject)?;
    let event_time = opt_string(ev.time, ev.time_field)?;
    let (size, etag, content_type) = ev.data.read()?;
    Ok(BlobEvent {
        id: ev.id,
        format: ev.format,
        event_type: ev.event_type,
        account: ev
            .resource
            .as_ref()
            .and_then(|r| azure_account(r).map(|account| piece(r, account))),
        container: piece(&subject, container),
        path: piece(&subject, path),
        size,
        etag,
        content_type,
        event_time,
    })
}

/// Splits `/blobServices/default/containers/<container>/blobs/<path>`; the path may contain
/// `/`. Both parts must be non-empty.
fn parse_azure_subject(subject: &str) -> Result<(&str, &str), EventError> {
    const PREFIX: &str = "/blobServices/default/containers/";
    let bad = || {
        malformed(format!(
            "field `subject` is not `{PREFIX}<container>/blobs/<path>`: `{subject}`"
        ))
    };
    let rest = subject.strip_prefix(PREFIX).ok_or_else(bad)?;
    let (container, rest) = rest.split_once('/').ok_or_else(bad)?;
    let path = rest.strip_prefix("blobs/").ok_or_else(bad)?;
    if container.is_empty() {
        return Err(malformed("field `subject` has an empty container name"));
    }
    if path.is_empty() {
        return Err(malformed("field `subject` has an empty blob path"));
    }
    Ok((container, path))
}

/// The account name in `/subscriptions/…/providers/Microsoft.Storage/storageAccounts/<account>`
/// (resource ids are case-insensitive). None when the resource id is not a storage account.
fn azure_account(resource: &str) -> Option<&str> {
    let bytes = resource.as_bytes();
    // The marker starts with `/`: only those places are tried (found by memchr, many
    // bytes at a time), each compared eight bytes at a time.
    let start = memchr::memchr_iter(b'/', bytes)
        .find(|&i| bytes.get(i..i + MARKER.len()).is_some_and(is_marker))?
        + MARKER.len();
    // MARKER is ASCII, so `start` is a char boundary, and so is the `/` after it.
    let rest = &resource[start..];
    let account = &rest[..memchr::memchr(b'/', rest.as_bytes()).unwrap_or(rest.len())];
    (!account.is_empty()).then_some(account)
}

/// What comes before a storage account's name in its resource id, lowercase.
const MARKER: &[u8] = b"/providers/microsoft.storage/storageaccounts/";

/// Whether `window` (as long as [`MARKER`]) is it, ignoring ASCII case: eight bytes at
/// a time, each or'ed with 0x20 where the marker has a letter (which folds exactly its
/// upper case onto it) and compared as it is elsewhere. The last word overlaps the one
/// before it.
fn is_marker(window: &[u8]) -> bool {
    const WORDS: usize = MARKER.len().div_ceil(8);
    /// Where word `w` starts: every eight bytes, the last one ending with the marker.
    const fn at(w: usize) -> usize {
        if w + 1 == WORDS {
            MARKER.len() - 8
        } else {
            w * 8
        }
    }
    const fn word(bytes: &[u8], at: usize) -> u64 {
        let mut w = [0; 8];
        let mut i = 0;
        while i < 8 {
            w[i] = bytes[at + i];
            i += 1;
        }
        u64::from_le_bytes(w)
    }
    /// The marker's words, and for each the 0x20 bits of its letters.
    const TABLE: [(u64, u64); WORDS] = {
        let mut table = [(0, 0); WORDS];
        let mut w = 0;
        while w < WORDS {
            let mut fold = [0; 8];
            let mut i = 0;
            while i < 8 {
                if MARKER[at(w) + i].is_ascii_lowercase() {
                    fold[i] = 0x20;
                }
                i += 1;
            }
            table[w] = (word(MARKER, at(w)), u64::from_le_bytes(fold));
            w += 1;
        }
        table
    };
    window.len() == MARKER.len()
        && TABLE.iter().enumerate().all(|(w, &(marker, fold))| {
            let text =
                u64::from_le_bytes(window[at(w)..at(w) + 8].try_into().expect("eight bytes"));
            text | fold == marker
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_subject_parsing() {
        assert_eq!(
            parse_azure_subject("/blobServices/default/containers/c/blobs/a/b/c.json").unwrap(),
            ("c", "a/b/c.json")
        );
        // A path may itself contain `/blobs/`.
        assert_eq!(
            parse_azure_subject("/blobServices/default/containers/c/blobs/x/blobs/y").unwrap(),
            ("c", "x/blobs/y")
        );
        for bad in [
            "",
            "/blobServices/default/containers/",
            "/blobServices/default/containers/c",
            "/blobServices/default/containers/c/blobs/",
            "/blobServices/default/containers//blobs/p",
            "/blobServices/default/containers/c/files/p",
            "/fileServices/default/shares/c/files/p",
        ] {
            assert!(parse_azure_subject(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// The account is found where a scan of every position finds it.
        #[test]
        fn azure_account_agrees_with_a_scan_of_every_position(
            parts in proptest::collection::vec(proptest::sample::select(&[
                "/", "providers", "PROVIDERS", "Microsoft.Storage", "microsoft.storage",
                "storageAccounts", "storageaccounts", "acct", "é", "x/",
                "/providers/Microsoft.Storage/storageAccounts/",
            ][..]), 0..12)
        ) {
            let resource = parts.concat();
            // The module's MARKER: the reference reads the same text.
            let scanned = resource
                .as_bytes()
                .windows(MARKER.len())
                .position(|w| w.eq_ignore_ascii_case(MARKER))
                .and_then(|i| resource[i + MARKER.len()..].split('/').next())
                .filter(|a| !a.is_empty());
            proptest::prop_assert_eq!(azure_account(&resource), scanned, "{}", resource);
        }

        /// The word-at-a-time compare is `eq_ignore_ascii_case` with the marker: the
        /// marker with one byte changed (its case flipped, its 0x20 bit flipped where
        /// it is no letter, any byte), and with the case of any letters changed.
        #[test]
        fn is_marker_is_a_case_blind_compare(
            at in 0..MARKER.len(),
            byte in proptest::prelude::any::<u8>(),
            how in 0..3u8,
            upper in proptest::collection::vec(proptest::prelude::any::<bool>(), MARKER.len()),
        ) {
            let mut window = MARKER.to_vec();
            window[at] = match how {
                0 => window[at] ^ 0x20,
                1 => window[at].to_ascii_uppercase(),
                _ => byte,
            };
            proptest::prop_assert_eq!(is_marker(&window), window.eq_ignore_ascii_case(MARKER));
            let cased: Vec<u8> = MARKER
                .iter()
                .zip(&upper)
                .map(|(&b, &up)| if up { b.to_ascii_uppercase() } else { b })
                .collect();
            proptest::prop_assert!(is_marker(&cased));
        }
    }

    #[test]
    fn azure_account_parsing() {
        assert_eq!(
            azure_account("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"),
            Some("acct")
        );
        assert_eq!(
            azure_account("/subscriptions/s/resourcegroups/rg/providers/microsoft.storage/storageaccounts/acct/blobServices/default"),
            Some("acct")
        );
        assert_eq!(azure_account("/subscriptions/s/resourceGroups/rg"), None);
        assert_eq!(
            azure_account("/providers/Microsoft.Storage/storageAccounts/"),
            None
        );
        assert_eq!(
            azure_account("ünïcödé/providers/Microsoft.Storage/storageAccounts/ä"),
            Some("ä")
        );
    }
}
