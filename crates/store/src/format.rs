//! The envelope every stored record is written in.
//!
//! A record is stored as `{"format": 1, "record": <the record's json>}`:
//! every etcd value the store writes as json (jobs, model versions, alias
//! changes, checkpoint manifests, worker records, pending-chunk markers) and
//! every record of the embedded store (each write-ahead log commit and the
//! snapshot). [`FORMAT`] is the only format this build writes and reads; a
//! change to a record's shape that old readers would misread bumps it, and
//! the reader then converts each older format it still accepts.
//!
//! Reading is strict: a value that is not json, an envelope whose `format`
//! is not one this build knows, an envelope with other keys, or a record
//! that does not deserialise is [`Error::Corrupt`] naming the key (the etcd
//! key, or the file and log record), never a default.
//!
//! Records written before the envelope existed (a json value without a
//! `format` key: no record type has a field of that name) read as format 1,
//! which is what they are, so existing data dirs and etcd prefixes keep
//! working; they are rewritten in the envelope when next written.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// The format this build writes, and the newest it reads.
pub(crate) const FORMAT: u64 = 1;

/// The envelope's key holding the format number.
const FORMAT_KEY: &str = "format";

/// The envelope's key holding the record.
const RECORD_KEY: &str = "record";

/// The envelope as written.
#[derive(Serialize)]
struct Envelope<'a, T> {
    format: u64,
    record: &'a T,
}

/// `record` in the current format's envelope, as json bytes.
pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(&Envelope {
        format: FORMAT,
        record,
    })
    .map_err(|e| Error::invalid(format!("a record does not encode as json: {e}")))
}

/// Reads the record stored under `key` (an etcd key, or a file and record
/// for the embedded store; it names the record in errors).
pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(format!("{key} is not a json record: {e}")))?;
    let record = match value {
        Value::Object(mut envelope) if envelope.contains_key(FORMAT_KEY) => {
            let format = envelope.remove(FORMAT_KEY).unwrap_or(Value::Null);
            if format.as_u64() != Some(FORMAT) {
                return Err(Error::corrupt(format!(
                    "{key} is in record format {format}, and this build reads format {FORMAT} \
                     (written by a newer camshaft?)"
                )));
            }
            let record = envelope.remove(RECORD_KEY).ok_or_else(|| {
                Error::corrupt(format!(
                    "{key}: a format {FORMAT} envelope without a record"
                ))
            })?;
            if let Some(other) = envelope.keys().next() {
                return Err(Error::corrupt(format!(
                    "{key}: unexpected key {other:?} in a format {FORMAT} envelope"
                )));
            }
            record
        }
        // Written before the envelope existed: format 1 as it is.
        bare => bare,
    };
    serde_json::from_value(record).map_err(|e| {
        Error::corrupt(format!(
            "{key} does not decode as a format {FORMAT} record: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::records::{JobId, JobRecord, JobState};

    fn job() -> JobRecord {
        JobRecord {
            id: JobId(3),
            spec: serde_json::json!({"dataset": "synthetic"}),
            state: JobState::Running,
            attempts: Vec::new(),
            history: vec![serde_json::json!({"epoch": 1})],
            model_version: None,
            error: None,
            created_ms: 1,
            updated_ms: 2,
            revision: 7,
        }
    }

    fn corrupt_message(result: Result<JobRecord>) -> String {
        match result {
            Err(e @ Error::Corrupt { .. }) => e.to_string(),
            other => panic!("expected a corrupt record, got {other:?}"),
        }
    }

    #[test]
    fn records_round_trip_in_the_envelope() {
        let bytes = encode(&job()).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["format"], 1);
        assert_eq!(value["record"]["id"], "j-3");
        assert_eq!(decode::<JobRecord>("jobs/3", &bytes).unwrap(), job());
    }

    #[test]
    fn a_record_from_before_the_envelope_reads_as_format_1() {
        let bare = serde_json::to_vec(&job()).unwrap();
        assert_eq!(decode::<JobRecord>("jobs/3", &bare).unwrap(), job());
    }

    #[test]
    fn an_unknown_format_is_an_error_naming_the_key() {
        let bytes = br#"{"format": 2, "record": {"id": "j-3"}}"#;
        let message = corrupt_message(decode("jobs/3", bytes));
        assert!(message.contains("jobs/3"), "{message}");
        assert!(message.contains("format 2"), "{message}");
        let message = corrupt_message(decode("jobs/3", br#"{"format": "one", "record": {}}"#));
        assert!(message.contains("jobs/3"), "{message}");
    }

    #[test]
    fn a_garbled_record_is_an_error_naming_the_key() {
        for bytes in [
            &b"{\"format\": 1, \"record\": {\"id\": \"j-3\", \"st"[..],
            br#"{"format": 1, "record": {"id": "j-3"}}"#,
            br#"{"format": 1}"#,
            br#"{"format": 1, "record": {}, "extra": 1}"#,
            br#"{"id": "x-3"}"#,
            b"\xff\xfe",
        ] {
            let message = corrupt_message(decode("jobs/3", bytes));
            assert!(message.contains("jobs/3"), "{message}");
        }
    }
}
