//! The one place that encodes anything stored in sled or sent between nodes.
//!
//! Every blob starts with a format-version byte, then bincode 1.3.3 (pinned exactly: bincode 3 is a
//! tombstone and the crate is unmaintained, see `shared/dependencies.md`). Swapping the encoder (postcard, …)
//! means a new version byte here and nowhere else; a reader refuses a version it does not know instead of
//! misreading it, which is what lets old and new nodes coexist during a rolling upgrade.
//!
//! Formats: **v1** is bincode's fixed-width integer encoding (`bincode::serialize`); **v2** is bincode's
//! varint encoding (`DefaultOptions`), about a third smaller for our records. **v3** encodes as v2 and
//! adds commands (`AssignNext`), **v4** likewise (`Command::Batch`): a node writes them only once the cluster agreed on their format, so a release that
//! reads at most v2 refuses the entry by its version byte instead of failing on an unknown variant. A binary reads every format
//! up to `max_readable()` but *writes* only the cluster's agreed format (`write_version()`), which the
//! state machine raises through a `SetFormatVersion` command once every member announced (by gossip) that
//! it reads the new one. That is what lets old and new binaries coexist during a rolling upgrade: nothing
//! an old node cannot read is written until the last old node is gone.
use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicU8, Ordering};

/// The newest format this binary can read and write.
pub const FORMAT_VERSION: u8 = 4;
/// The oldest format this binary still reads.
pub const MIN_READABLE_VERSION: u8 = 1;

/// What this process writes: starts at v1, raised only by the replicated `SetFormatVersion`.
static WRITE_VERSION: AtomicU8 = AtomicU8::new(1);

/// The newest format this process reads. `FORMAT_VERSION`, unless `JOBSERV_MAX_FORMAT` lowers it — which
/// makes this binary behave exactly like an older release (the S10 upgrade test uses it).
pub fn max_readable() -> u8 {
    static MAX: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("JOBSERV_MAX_FORMAT")
            .ok()
            .and_then(|v| v.parse::<u8>().ok())
            .map(|v| v.clamp(MIN_READABLE_VERSION, FORMAT_VERSION))
            .unwrap_or(FORMAT_VERSION)
    })
}

pub fn write_version() -> u8 {
    WRITE_VERSION.load(Ordering::Acquire)
}

/// Raises (never lowers) the written format, bounded by what this binary reads. Returns the format now
/// written.
pub fn set_write_version(version: u8) -> u8 {
    let v = version.clamp(MIN_READABLE_VERSION, max_readable());
    WRITE_VERSION.fetch_max(v, Ordering::AcqRel);
    write_version()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty blob: no format-version byte")]
    Empty,
    #[error("format version {found} is not readable by this binary (reads {min}..={max})")]
    UnknownVersion { found: u8, min: u8, max: u8 },
    #[error("bincode: {0}")]
    Bincode(#[from] bincode::Error),
}

fn varint() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .allow_trailing_bytes()
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_as(write_version(), value)
}

pub fn encode_as<T: Serialize + ?Sized>(version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    // Not sized first: bincode's size pass walks every field of a record, which costs more than the
    // buffer's few doublings (tried: dispatch and commit benches slower).
    let mut out = Vec::with_capacity(64);
    out.push(version);
    match version {
        1 => bincode::serialize_into(&mut out, value)?,
        _ => varint().serialize_into(&mut out, value)?,
    }
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if !(MIN_READABLE_VERSION..=max_readable()).contains(&version) {
        return Err(CodecError::UnknownVersion {
            found: version,
            min: MIN_READABLE_VERSION,
            max: max_readable(),
        });
    }
    match version {
        1 => Ok(bincode::deserialize(body)?),
        _ => Ok(varint().deserialize(body)?),
    }
}

/// `#[serde(with = "codec::byte_pairs")]` for `Vec<(Vec<u8>, Vec<u8>)>` (state tree pairs in snapshots and
/// backups): each side as a byte string. bincode writes a byte string exactly as it writes a `Vec<u8>`
/// (its length, then one byte per element), so this changes no format; it only spares serde a call per
/// byte, which made (de)serializing megabytes of console output a tenth of the CPU of a log flood.
pub mod byte_pairs {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(pairs: &[(Vec<u8>, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(pairs.iter().map(|(k, v)| (Bytes::new(k), Bytes::new(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Pairs, D::Error> {
        let pairs = Vec::<(ByteBuf, ByteBuf)>::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect())
    }
}

/// Pairs as a bare sequence (a backup's pairs record), through `byte_pairs`.
pub fn encode_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<u8>, CodecError> {
    encode(&BytePairs(pairs.to_vec()))
}

/// (key, value) pairs of the state tree.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub fn decode_pairs(bytes: &[u8]) -> Result<Pairs, CodecError> {
    Ok(decode::<BytePairs>(bytes)?.0)
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
struct BytePairs(#[serde(with = "byte_pairs")] Vec<(Vec<u8>, Vec<u8>)>);

#[cfg(test)]
mod tests {
    use super::*;

    /// `serde_bytes` and `byte_pairs` are encodings of speed only: the bytes on disk and on the wire are
    /// those of a plain `Vec<u8>`, in every format, both ways.
    #[test]
    fn byte_strings_encode_exactly_as_vectors_of_bytes() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Plain(u64, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Fast(
            u64,
            #[serde(with = "serde_bytes")] Vec<u8>,
            #[serde(with = "byte_pairs")] Vec<(Vec<u8>, Vec<u8>)>,
        );
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let pairs = vec![(b"k/1".to_vec(), bytes.clone()), (vec![], vec![255; 200])];
        for version in MIN_READABLE_VERSION..=FORMAT_VERSION {
            let plain = encode_as(version, &Plain(9, bytes.clone(), pairs.clone())).unwrap();
            let fast = encode_as(version, &Fast(9, bytes.clone(), pairs.clone())).unwrap();
            assert_eq!(plain, fast, "format {version}");
            assert_eq!(
                decode::<Fast>(&plain).unwrap(),
                Fast(9, bytes.clone(), pairs.clone())
            );
            assert_eq!(
                decode::<Plain>(&fast).unwrap(),
                Plain(9, bytes.clone(), pairs.clone())
            );
        }
        for version in MIN_READABLE_VERSION..=FORMAT_VERSION {
            let bare = encode_as(version, &pairs).unwrap();
            assert_eq!(decode_pairs(&bare).unwrap(), pairs);
        }
        let back: Vec<(Vec<u8>, Vec<u8>)> = decode(&encode_pairs(&pairs).unwrap()).unwrap();
        assert_eq!(back, pairs);
    }

    #[test]
    fn round_trips_and_carries_the_version_byte() {
        let value = (42u64, "run-1".to_string(), vec![1u8, 2, 3]);
        for version in MIN_READABLE_VERSION..=FORMAT_VERSION {
            let bytes = encode_as(version, &value).unwrap();
            assert_eq!(bytes[0], version);
            let back: (u64, String, Vec<u8>) = decode(&bytes).unwrap();
            assert_eq!(back, value);
        }
        let v1 = encode_as(1, &value).unwrap();
        let v2 = encode_as(2, &value).unwrap();
        assert!(
            v2.len() < v1.len(),
            "varint is smaller: {} vs {}",
            v2.len(),
            v1.len()
        );
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
        for version in MIN_READABLE_VERSION..=FORMAT_VERSION {
            let back: crate::Command = decode(&encode_as(version, &cmd).unwrap()).unwrap();
            assert_eq!(back, cmd);
        }
    }

    #[test]
    fn refuses_an_unknown_version_instead_of_misreading() {
        let mut bytes = encode_as(FORMAT_VERSION, &7u32).unwrap();
        bytes[0] = FORMAT_VERSION + 1;
        assert!(matches!(
            decode::<u32>(&bytes),
            Err(CodecError::UnknownVersion { .. })
        ));
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
    }
}
