//! The one place that encodes anything stored in sled or sent between nodes.
//!
//! Every blob starts with a format-version byte, then bincode 1.3.3 (pinned exactly: bincode 3 is a
//! tombstone and the crate is unmaintained, see `shared/dependencies.md`). Swapping the encoder (postcard, …)
//! means a new version byte here and nowhere else; a reader refuses a version it does not know instead of
//! misreading it, which is what lets old and new nodes coexist during a rolling upgrade.
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The storage and wire format this binary writes.
pub const FORMAT_VERSION: u8 = 1;
/// The oldest format this binary still reads.
pub const MIN_READABLE_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty blob: no format-version byte")]
    Empty,
    #[error("format version {found} is not readable by this binary (reads {min}..={max})")]
    UnknownVersion { found: u8, min: u8, max: u8 },
    #[error("bincode: {0}")]
    Bincode(#[from] bincode::Error),
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_VERSION);
    bincode::serialize_into(&mut out, value)?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if !(MIN_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(CodecError::UnknownVersion { found: version, min: MIN_READABLE_VERSION, max: FORMAT_VERSION });
    }
    Ok(bincode::deserialize(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_carries_the_version_byte() {
        let value = (42u64, "run-1".to_string(), vec![1u8, 2, 3]);
        let bytes = encode(&value).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String, Vec<u8>) = decode(&bytes).unwrap();
        assert_eq!(back, value);
    }

    /// Commands embed wire types from the protocol crate; bincode needs them free of serde attributes
    /// that make the encoding depend on the value (`skip_serializing_if`, `flatten`…).
    #[test]
    fn commands_with_run_definitions_round_trip() {
        let def: jobserv_protocol::RunDef = serde_json::from_value(serde_json::json!({
            "version": 1, "project": "p", "build": 1, "run": "r", "timeout": 5, "run_url": "", "frontend_url": "",
            "runner_url": "", "trigger_type": "simple", "container": "busybox", "host-tag": "amd64",
            "script": "#!/bin/sh\necho hi", "container-entrypoint": ""
        }))
        .unwrap();
        let cmd = crate::Command::CreateBuild(Box::new(crate::command::NewBuild {
            project: "p".into(),
            trigger_name: "t".into(),
            trigger_type: "simple".into(),
            reason: None,
            params: Default::default(),
            secrets: [("k".to_string(), "v".to_string())].into_iter().collect(),
            queue_priority: 3,
            definition: "timeout: 5".into(),
            runs: vec![def],
            now: 1,
        }));
        let back: crate::Command = decode(&encode(&cmd).unwrap()).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn refuses_an_unknown_version_instead_of_misreading() {
        let mut bytes = encode(&7u32).unwrap();
        bytes[0] = FORMAT_VERSION + 1;
        assert!(matches!(decode::<u32>(&bytes), Err(CodecError::UnknownVersion { .. })));
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
    }
}
