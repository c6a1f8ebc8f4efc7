//! The journal's body format: how one appended batch of events is stored as one row.
//!
//! A body is a version byte followed by the batch. The version byte lets the encoding evolve:
//! readers decode every version ever written, writers write [`Format::default`].
//!
//! | byte 0 | name | rest of the body |
//! | --- | --- | --- |
//! | `1` | [`Format::Json`] | a JSON array of the events, exactly as they serialize (`seq`, `at_us`, `type`, fields) |
//! | `2` | [`Format::MessagePack`] | a MessagePack array of `[at_us_delta, kind]` pairs (below) |
//!
//! The MessagePack form leaves out what the row already says: `seq` is the row's `first_seq`
//! plus the event's index in the batch, and `at_us` is stored as the difference from the
//! previous event's (the first event's from 0), as a signed integer, so that a timestamp costs
//! one to five bytes instead of nine. Each `kind` is a MessagePack map with field names (the
//! `type` tag first), as the event kinds are internally tagged and have optional fields, which
//! need a self-describing encoding.
//!
//! Decoding checks that the batch's seqs follow `first_seq` without gaps.

use baton_core::{Event, EventKind};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

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
            let pairs: Vec<(i64, EventKind)> =
                rmp_serde::from_slice(rest).map_err(|e| malformed(e.to_string()))?;
            let mut at_us = 0u64;
            let mut events = Vec::with_capacity(pairs.len());
            for (seq, (delta, kind)) in (first_seq..).zip(pairs) {
                at_us = at_us.wrapping_add_signed(delta);
                if seq >= from {
                    events.push(Event { seq, at_us, kind });
                }
            }
            Ok(events)
        }
    }
}

/// The MessagePack shape of a batch: `[[at_us_delta, kind], ...]`.
struct Compact<'a>(&'a [Event]);

impl Serialize for Compact<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        let mut previous = 0u64;
        for event in self.0 {
            // Two's complement: the decoder's wrapping add restores any u64, even a clock step back.
            let delta = event.at_us.wrapping_sub(previous).cast_signed();
            previous = event.at_us;
            seq.serialize_element(&(delta, &event.kind))?;
        }
        seq.end()
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
            assert_eq!(decode(7, &body, 9).unwrap(), batch[2..].to_vec(), "{format:?}");
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
