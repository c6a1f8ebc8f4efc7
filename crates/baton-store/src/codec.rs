//! The journal's body format: how one appended batch of events is stored as one row.
//!
//! A body is a version byte followed by the batch. The version byte lets the encoding evolve:
//! readers decode every version ever written, writers write [`Format::default`].
//!
//! | byte 0 | name | rest of the body |
//! | --- | --- | --- |
//! | `1` | [`Format::Json`] | a JSON array of the events, exactly as they serialize (`seq`, `at_us`, `type`, fields) |
//! | `2` | [`Format::MessagePack`] | a MessagePack array with one array per event (below) |
//!
//! The MessagePack form leaves out what the row already says: `seq` is the row's `first_seq`
//! plus the event's index in the batch, and `at_us` is stored as the difference from the
//! previous event's (the first event's from 0), as a signed integer, so that a timestamp costs
//! one to five bytes instead of nine. An event is one of:
//!
//! | array | event |
//! | --- | --- |
//! | `[at_us_delta, kind]` | any kind: `kind` is a map with field names, the `type` tag first (the kinds are internally tagged and have optional fields, which need a self-describing encoding) |
//! | `[at_us_delta, 0, workflow, parent, input]` | `run_started` |
//! | `[at_us_delta, 1, step, round, [[key, value], ...]]` | `state_updated` |
//!
//! The two positional forms are the events that carry whole states: they decode their JSON
//! values directly, about twice as fast as a tagged map, whose fields serde must buffer first
//! (a 1.1 MB input decodes in ~1 ms instead of ~2 ms), and they spend no bytes on field names.
//! A field added to either kind breaks the build here (the patterns are exhaustive), so that
//! the layout is changed on purpose, under a new version byte.
//!
//! Decoding checks that the batch's seqs follow `first_seq` without gaps.

use baton_core::{Event, EventKind, KeyUpdate, Name, RunId};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, SerializeTuple, Serializer};
use serde_json::Value;
use std::fmt;

/// An encoding of a batch of events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Version 1: a JSON array of events, readable with any SQL shell.
    Json,
    /// Version 2 (the default): MessagePack without per-event `seq` and with delta timestamps.
    #[default]
    MessagePack,
}

impl Format {
    /// The version byte that starts a body in this format.
    pub fn version(self) -> u8 {
        match self {
            Format::Json => 1,
            Format::MessagePack => 2,
        }
    }

    /// The format whose bodies start with `version`.
    pub fn from_version(version: u8) -> Option<Format> {
        match version {
            1 => Some(Format::Json),
            2 => Some(Format::MessagePack),
            _ => None,
        }
    }
}

/// Why a body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The body is empty: not even a version byte.
    #[error("empty journal body")]
    Empty,
    /// The version byte is not one this build knows (written by a newer baton?).
    #[error("unknown journal body format version {0}")]
    UnknownVersion(u8),
    /// The bytes do not decode in the format their version byte announces.
    #[error("malformed journal body (format version {version}): {message}")]
    Malformed {
        /// The version byte.
        version: u8,
        /// What the decoder said.
        message: String,
    },
    /// A JSON body whose events do not carry the seqs the row says they have.
    #[error("journal body out of sequence: expected seq {expected}, found {found}")]
    Sequence {
        /// The seq the row implies.
        expected: u64,
        /// The seq the event carries.
        found: u64,
    },
    /// The events could not be encoded.
    #[error("cannot encode events: {0}")]
    Encode(String),
}

/// Encode a batch of events (the caller has checked that their seqs are contiguous).
pub fn encode(events: &[Event], format: Format) -> Result<Vec<u8>, CodecError> {
    let mut body = Vec::with_capacity(64 * events.len() + 8);
    body.push(format.version());
    match format {
        Format::Json => serde_json::to_writer(&mut body, events)
            .map_err(|e| CodecError::Encode(e.to_string()))?,
        Format::MessagePack => rmp_serde::encode::write_named(&mut body, &Compact(events))
            .map_err(|e| CodecError::Encode(e.to_string()))?,
    }
    Ok(body)
}

/// Decode a body stored with `first_seq`, keeping only the events with `seq >= from`.
pub fn decode(first_seq: u64, body: &[u8], from: u64) -> Result<Vec<Event>, CodecError> {
    let (&version, rest) = body.split_first().ok_or(CodecError::Empty)?;
    let format = Format::from_version(version).ok_or(CodecError::UnknownVersion(version))?;
    let malformed = |message: String| CodecError::Malformed { version, message };
    match format {
        Format::Json => {
            let events: Vec<Event> =
                serde_json::from_slice(rest).map_err(|e| malformed(e.to_string()))?;
            for (expected, event) in (first_seq..).zip(&events) {
                if event.seq != expected {
                    return Err(CodecError::Sequence {
                        expected,
                        found: event.seq,
                    });
                }
            }
            Ok(events.into_iter().filter(|e| e.seq >= from).collect())
        }
        Format::MessagePack => {
            let elements: Vec<Element> =
                rmp_serde::from_slice(rest).map_err(|e| malformed(e.to_string()))?;
            let mut at_us = 0u64;
            let mut events = Vec::with_capacity(elements.len());
            for (seq, Element(delta, kind)) in (first_seq..).zip(elements) {
                at_us = at_us.wrapping_add_signed(delta);
                if seq >= from {
                    events.push(Event { seq, at_us, kind });
                }
            }
            Ok(events)
        }
    }
}

/// The MessagePack shape of a batch: one array per event.
struct Compact<'a>(&'a [Event]);

/// Codes of the positional forms (the second element of an event's array).
const RUN_STARTED: u64 = 0;
const STATE_UPDATED: u64 = 1;

impl Serialize for Compact<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        let mut previous = 0u64;
        for event in self.0 {
            // Two's complement: the decoder's wrapping add restores any u64, even a clock step back.
            let delta = event.at_us.wrapping_sub(previous).cast_signed();
            previous = event.at_us;
            seq.serialize_element(&ElementRef(delta, &event.kind))?;
        }
        seq.end()
    }
}

/// One event as written.
struct ElementRef<'a>(i64, &'a EventKind);

impl Serialize for ElementRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ElementRef(delta, kind) = *self;
        match kind {
            EventKind::RunStarted {
                workflow,
                input,
                parent,
            } => {
                let mut t = serializer.serialize_tuple(5)?;
                t.serialize_element(&delta)?;
                t.serialize_element(&RUN_STARTED)?;
                t.serialize_element(workflow)?;
                t.serialize_element(parent)?;
                t.serialize_element(input)?;
                t.end()
            }
            EventKind::StateUpdated {
                step,
                round,
                updates,
            } => {
                let mut t = serializer.serialize_tuple(5)?;
                t.serialize_element(&delta)?;
                t.serialize_element(&STATE_UPDATED)?;
                t.serialize_element(step)?;
                t.serialize_element(round)?;
                t.serialize_element(&Updates(updates))?;
                t.end()
            }
            other => {
                let mut t = serializer.serialize_tuple(2)?;
                t.serialize_element(&delta)?;
                t.serialize_element(other)?;
                t.end()
            }
        }
    }
}

/// State updates as `[[key, value], ...]`.
struct Updates<'a>(&'a [KeyUpdate]);

impl Serialize for Updates<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for KeyUpdate { key, value } in self.0 {
            seq.serialize_element(&(key, value))?;
        }
        seq.end()
    }
}

/// One event as read: the timestamp delta and the kind.
struct Element(i64, EventKind);

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ElementVisitor)
    }
}

struct ElementVisitor;

/// The next element of an event's array, or an error naming the missing position.
fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    seq: &mut A,
    index: usize,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::invalid_length(index, &ElementVisitor))
}

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event: [at_us_delta, kind] or [at_us_delta, code, fields...]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        let delta: i64 = next(&mut seq, 0)?;
        let kind = match next(&mut seq, 1)? {
            Head::Kind(kind) => kind,
            Head::Code(RUN_STARTED) => {
                let workflow: String = next(&mut seq, 2)?;
                let parent: Option<RunId> = next(&mut seq, 3)?;
                let input: Value = next(&mut seq, 4)?;
                EventKind::RunStarted {
                    workflow,
                    input,
                    parent,
                }
            }
            Head::Code(STATE_UPDATED) => {
                let step: Name = next(&mut seq, 2)?;
                let round: u32 = next(&mut seq, 3)?;
                let updates: Vec<(Name, Value)> = next(&mut seq, 4)?;
                EventKind::StateUpdated {
                    step,
                    round,
                    updates: updates
                        .into_iter()
                        .map(|(key, value)| KeyUpdate { key, value })
                        .collect(),
                }
            }
            Head::Code(code) => {
                return Err(de::Error::custom(format!("unknown event code {code}")));
            }
        };
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("an event array has extra elements"));
        }
        Ok(Element(delta, kind))
    }
}

/// The second element of an event's array: a tagged kind, or the code of a positional form.
// Lives for a moment on the stack, and the kind is moved out: boxing it would only allocate.
#[allow(clippy::large_enum_variant)]
enum Head {
    Kind(EventKind),
    Code(u64),
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HeadVisitor)
    }
}

struct HeadVisitor;

impl<'de> Visitor<'de> for HeadVisitor {
    type Value = Head;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event kind (a map) or a positional form's code (an integer)")
    }

    fn visit_u64<E: de::Error>(self, code: u64) -> Result<Head, E> {
        Ok(Head::Code(code))
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Head, M::Error> {
        EventKind::deserialize(de::value::MapAccessDeserializer::new(map)).map(Head::Kind)
    }
}

#[cfg(all(test, feature = "test-utils"))]
mod tests {
    use super::*;
    use crate::testing::{event, events, every_kind};

    #[test]
    fn both_formats_round_trip_every_kind() {
        let batch = every_kind(7);
        for format in [Format::Json, Format::MessagePack] {
            let body = encode(&batch, format).unwrap();
            assert_eq!(body[0], format.version());
            assert_eq!(decode(7, &body, 0).unwrap(), batch, "{format:?}");
            assert_eq!(
                decode(7, &body, 9).unwrap(),
                batch[2..].to_vec(),
                "{format:?}"
            );
            let past = 7 + batch.len() as u64;
            assert!(decode(7, &body, past).unwrap().is_empty());
        }
    }

    #[test]
    fn timestamps_survive_any_order() {
        let mut batch = events(0, 4);
        batch[0].at_us = u64::MAX;
        batch[1].at_us = 0;
        batch[2].at_us = 5;
        batch[3].at_us = 3;
        let body = encode(&batch, Format::MessagePack).unwrap();
        assert_eq!(decode(0, &body, 0).unwrap(), batch);
    }

    #[test]
    fn positional_forms_are_used_and_extra_elements_refused() {
        let batch = every_kind(0);
        let started = &batch[..1];
        assert!(matches!(started[0].kind, EventKind::RunStarted { .. }));
        let body = encode(started, Format::MessagePack).unwrap();
        // [[delta, 0, ...]]: array of 1, array of 5.
        assert_eq!(&body[..3], &[2, 0x91, 0x95]);
        // An element with a sixth field is refused.
        let mut long = body.clone();
        long[2] = 0x96;
        long.push(0xc0);
        assert!(matches!(
            decode(0, &long, 0),
            Err(CodecError::Malformed { version: 2, .. })
        ));
        // An unknown code is refused.
        let mut unknown = body.clone();
        // The delta: 1.7e15 µs, a 64-bit integer (marker and 8 bytes); then the code.
        assert!(matches!(body[3], 0xcf | 0xd3), "{body:?}");
        let code_at = 3 + 9;
        assert_eq!(body[code_at], 0, "{body:?}");
        unknown[code_at] = 7;
        assert!(matches!(
            decode(0, &unknown, 0),
            Err(CodecError::Malformed { version: 2, .. })
        ));
    }

    #[test]
    fn message_pack_is_smaller_than_json() {
        let batch = events(1, 4);
        let json = encode(&batch, Format::Json).unwrap().len();
        let msgpack = encode(&batch, Format::MessagePack).unwrap().len();
        assert!(msgpack * 3 < json * 2, "{msgpack} vs {json}");
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(matches!(decode(0, &[], 0), Err(CodecError::Empty)));
        assert!(matches!(
            decode(0, &[9, 1, 2], 0),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(
            decode(0, &[2, 0xc1], 0),
            Err(CodecError::Malformed { version: 2, .. })
        ));
        assert!(matches!(
            decode(0, b"\x01[{", 0),
            Err(CodecError::Malformed { version: 1, .. })
        ));
        let json = encode(&[event(3)], Format::Json).unwrap();
        assert!(matches!(
            decode(2, &json, 0),
            Err(CodecError::Sequence {
                expected: 2,
                found: 3
            })
        ));
    }
}
