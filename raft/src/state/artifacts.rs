//! Applying artifact metadata, blob holders and build deletion (retention). The bytes of an artifact are a
//! blob in the node's content-addressed store; the state keeps `ArtifactMeta` per artifact and one
//! `BlobRecord` per blob with its reference count, so a blob is freed exactly when its last artifact goes.
use super::keys;
use super::txn::Txn;
use super::StateResult;
use crate::command::{CommandResult, StateError};
use crate::model::{ArtifactMeta, BlobRecord, Build, Run, RunRef};

type Outcome = Result<CommandResult, StateError>;

/// `sha256` as the store names blobs: 64 lower-case hex digits.
pub fn validate_sha256(sha256: &str) -> Result<(), StateError> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "sha256 {sha256:?} must be 64 lower-case hex digits"
        )))
    }
}

pub(super) fn put_artifact_blob(
    txn: &mut Txn,
    run: &RunRef,
    fence: u64,
    artifact: &ArtifactMeta,
    holders: &[u64],
) -> StateResult<Outcome> {
    let Some(stored) = txn.get::<Run>(&keys::run(run))? else {
        return Ok(Err(StateError::NotFound(format!("run {run}"))));
    };
    if let Err(e) = super::apply::check_fence(&stored, fence) {
        return Ok(Err(e));
    }
    if let Err(e) = super::apply::validate_artifact_path(&artifact.path)
        .and_then(|()| validate_sha256(&artifact.sha256))
    {
        return Ok(Err(e));
    }
    let key = keys::artifact_meta(run, &artifact.path);
    if let Some(old) = txn.get::<ArtifactMeta>(&key)? {
        if old.sha256 == artifact.sha256 {
            // A retry of an upload that was committed: nothing changes but what we learn of holders.
            add_holders(txn, &artifact.sha256, holders)?;
            return Ok(Ok(CommandResult::Done));
        }
        release_blob(txn, &old.sha256)?;
    }
    let blob_key = keys::blob(&artifact.sha256);
    let mut blob = txn.get::<BlobRecord>(&blob_key)?.unwrap_or(BlobRecord {
        sha256: artifact.sha256.clone(),
        size: artifact.size,
        holders: Vec::new(),
        refs: 0,
        created: artifact.created,
    });
    if blob.size != artifact.size {
        return Ok(Err(StateError::Invalid(format!(
            "artifact {}: blob {} is {} bytes, not {}",
            artifact.path, artifact.sha256, blob.size, artifact.size
        ))));
    }
    blob.refs += 1;
    merge(&mut blob.holders, holders);
    txn.put(blob_key, &blob)?;
    txn.put(key, artifact)?;
    // An inline artifact of before the blob store under the same path is replaced.
    txn.remove(keys::artifact(run, &artifact.path));
    Ok(Ok(CommandResult::Done))
}

pub(super) fn blob_holders(
    txn: &mut Txn,
    node: u64,
    held: &[String],
    lost: &[String],
) -> StateResult<Outcome> {
    for sha in lost {
        let key = keys::blob(sha);
        if let Some(mut blob) = txn.get::<BlobRecord>(&key)? {
            blob.holders.retain(|h| *h != node);
            txn.put(key, &blob)?;
        }
    }
    for sha in held {
        add_holders(txn, sha, &[node])?;
    }
    Ok(Ok(CommandResult::Done))
}

fn add_holders(txn: &mut Txn, sha256: &str, holders: &[u64]) -> StateResult<()> {
    let key = keys::blob(sha256);
    if let Some(mut blob) = txn.get::<BlobRecord>(&key)? {
        let before = blob.holders.len();
        merge(&mut blob.holders, holders);
        if blob.holders.len() != before {
            txn.put(key, &blob)?;
        }
    }
    Ok(())
}

fn merge(into: &mut Vec<u64>, more: &[u64]) {
    for h in more {
        if !into.contains(h) {
            into.push(*h);
        }
    }
    into.sort_unstable();
}

/// One reference to `sha256` fewer; the record goes with the last one (each node's collector then deletes
/// its copy).
fn release_blob(txn: &mut Txn, sha256: &str) -> StateResult<()> {
    let key = keys::blob(sha256);
    if let Some(mut blob) = txn.get::<BlobRecord>(&key)? {
        blob.refs = blob.refs.saturating_sub(1);
        if blob.refs == 0 {
            txn.remove(key);
        } else {
            txn.put(key, &blob)?;
        }
    }
    Ok(())
}

/// Releases the blob of every artifact under `prefix` (an `A/` prefix) and removes their records.
pub(super) fn remove_artifacts_under(txn: &mut Txn, prefix: &[u8]) -> StateResult<()> {
    for (key, bytes) in txn.scan_prefix(prefix)? {
        let meta: ArtifactMeta = crate::codec::decode(&bytes)?;
        release_blob(txn, &meta.sha256)?;
        txn.remove(key);
    }
    Ok(())
}

pub(super) fn delete_builds(txn: &mut Txn, project: &str, numbers: &[u64]) -> StateResult<Outcome> {
    if txn.get_raw(&keys::project(project))?.is_none() {
        return Ok(Err(StateError::NotFound(format!("project {project}"))));
    }
    let mut deleted = Vec::new();
    for &number in numbers {
        let Some(build) = txn.get::<Build>(&keys::build(project, number))? else {
            continue;
        };
        // Never delete what is still running or what someone promoted (a release).
        if !build.status.is_complete() || build.promoted.is_some() {
            continue;
        }
        if txn.get_raw(&keys::open_hooks(project, number))?.is_some() {
            continue; // duties (chains, notifications) still owed
        }
        for (_, bytes) in txn.scan_prefix(&keys::runs_of_build(project, number))? {
            super::apply::forget_run_indexes(txn, &crate::codec::decode::<Run>(&bytes)?)?;
        }
        remove_artifacts_under(txn, &keys::of_build('A', project, number))?;
        for tag in ['r', 'l', 'x', 'a'] {
            txn.remove_prefix(&keys::of_build(tag, project, number))?;
        }
        txn.remove(keys::build_hooks(project, number));
        txn.remove(keys::build_tally(project, number));
        txn.remove(keys::build(project, number));
        deleted.push(number);
    }
    Ok(Ok(CommandResult::BuildsDeleted(deleted)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::test_machine::{new_build, Machine};

    fn sha(c: char) -> String {
        std::iter::repeat(c).take(64).collect()
    }

    fn meta(path: &str, sha256: &str, size: u64) -> ArtifactMeta {
        ArtifactMeta {
            path: path.into(),
            size,
            sha256: sha256.into(),
            content_type: "application/octet-stream".into(),
            created: 5,
        }
    }

    fn run(build: u64) -> RunRef {
        RunRef {
            project: "p".into(),
            build,
            run: "a".into(),
        }
    }

    fn put(
        m: &mut Machine,
        build: u64,
        fence: u64,
        artifact: ArtifactMeta,
        holders: &[u64],
    ) -> CommandResult {
        m.apply(Command::PutArtifactBlob {
            run: run(build),
            fence,
            artifact,
            holders: holders.to_vec(),
        })
    }

    #[test]
    fn a_retried_upload_is_idempotent_and_blobs_are_refcounted() {
        let mut m = Machine::new();
        m.apply(Command::CreateBuild(new_build(&["a"])));
        m.apply(Command::CreateBuild(new_build(&["a"])));
        let f1 = m.assign(1, "a");
        let f2 = m.assign(2, "a");
        assert_eq!(
            put(&mut m, 1, f1, meta("x.bin", &sha('a'), 10), &[1, 2]),
            CommandResult::Done
        );
        // The same upload retried through another node: still one reference, holders merged.
        assert_eq!(
            put(&mut m, 1, f1, meta("x.bin", &sha('a'), 10), &[3]),
            CommandResult::Done
        );
        let blob = m.state.blob(&sha('a')).unwrap().unwrap();
        assert_eq!((blob.refs, blob.holders.clone()), (1, vec![1, 2, 3]));
        // Another run with the same bytes shares the blob.
        put(&mut m, 2, f2, meta("y.bin", &sha('a'), 10), &[1]);
        assert_eq!(m.state.blob(&sha('a')).unwrap().unwrap().refs, 2);
        // Replacing build 1's artifact with other bytes releases its reference.
        put(&mut m, 1, f1, meta("x.bin", &sha('b'), 3), &[1, 2]);
        assert_eq!(m.state.blob(&sha('a')).unwrap().unwrap().refs, 1);
        assert_eq!(
            m.state
                .artifact_meta(&run(1), "x.bin")
                .unwrap()
                .unwrap()
                .sha256,
            sha('b')
        );
        let listed = m.state.artifacts(&run(1)).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 3);
    }

    #[test]
    fn bad_uploads_are_refused_and_change_nothing() {
        let mut m = Machine::new();
        m.apply(Command::CreateBuild(new_build(&["a"])));
        let fence = m.assign(1, "a");
        let stale = put(&mut m, 1, fence + 1, meta("x", &sha('a'), 1), &[1]);
        assert!(matches!(
            stale,
            CommandResult::Rejected(StateError::Fenced { .. })
        ));
        let bad_hash = put(&mut m, 1, fence, meta("x", "ABC", 1), &[1]);
        assert!(
            matches!(bad_hash, CommandResult::Rejected(StateError::Invalid(m)) if m.contains("sha256"))
        );
        let bad_path = put(&mut m, 1, fence, meta("../x", &sha('a'), 1), &[1]);
        assert!(matches!(
            bad_path,
            CommandResult::Rejected(StateError::Invalid(_))
        ));
        put(&mut m, 1, fence, meta("x", &sha('a'), 1), &[1]);
        let size_mismatch = put(&mut m, 1, fence, meta("y", &sha('a'), 2), &[1]);
        assert!(matches!(
            size_mismatch,
            CommandResult::Rejected(StateError::Invalid(_))
        ));
        assert!(m.state.artifact_meta(&run(1), "y").unwrap().is_none());
        assert_eq!(m.state.blob(&sha('a')).unwrap().unwrap().refs, 1);
    }

    #[test]
    fn holders_follow_what_nodes_report() {
        let mut m = Machine::new();
        m.apply(Command::CreateBuild(new_build(&["a"])));
        let fence = m.assign(1, "a");
        put(&mut m, 1, fence, meta("x", &sha('a'), 1), &[1, 2]);
        m.apply(Command::BlobHolders {
            node: 2,
            held: vec![],
            lost: vec![sha('a')],
        });
        assert_eq!(m.state.blob(&sha('a')).unwrap().unwrap().holders, vec![1]);
        m.apply(Command::BlobHolders {
            node: 3,
            held: vec![sha('a'), sha('z')],
            lost: vec![],
        });
        assert_eq!(
            m.state.blob(&sha('a')).unwrap().unwrap().holders,
            vec![1, 3]
        );
        assert!(
            m.state.blob(&sha('z')).unwrap().is_none(),
            "no record for an unknown blob"
        );
    }

    #[test]
    fn deleting_builds_frees_their_blobs_but_keeps_running_and_promoted_ones() {
        let mut m = Machine::new();
        for _ in 0..4 {
            m.apply(Command::CreateBuild(new_build(&["a"])));
        }
        for b in 1..=3 {
            let fence = m.assign(b, "a");
            let shared = meta("same", &sha('e'), 4);
            put(&mut m, b, fence, shared, &[1]);
            put(
                &mut m,
                b,
                fence,
                meta("own", &sha(char::from(b'0' + b as u8)), 4),
                &[1],
            );
            m.complete(b, "a", fence);
        }
        m.apply(Command::PromoteBuild {
            project: "p".into(),
            build: 2,
            name: "rel".into(),
            annotation: None,
        });
        // Build 4 is still QUEUED.
        let deleted = m.apply(Command::DeleteBuilds {
            project: "p".into(),
            numbers: vec![1, 2, 3, 4, 99],
        });
        assert_eq!(deleted, CommandResult::BuildsDeleted(vec![1, 3]));
        assert!(m.state.build("p", 1).unwrap().is_none());
        assert!(m.state.run(&run(1)).unwrap().is_none());
        assert!(m.state.artifacts(&run(1)).unwrap().is_empty());
        assert!(m.state.build("p", 2).unwrap().is_some());
        assert!(m.state.build("p", 4).unwrap().is_some());
        assert!(
            m.state.blob(&sha('1')).unwrap().is_none(),
            "build 1's own blob freed"
        );
        assert!(m.state.blob(&sha('3')).unwrap().is_none());
        assert_eq!(
            m.state.blob(&sha('e')).unwrap().unwrap().refs,
            1,
            "still used by build 2"
        );
        assert_eq!(m.state.build_numbers("p").unwrap(), vec![2, 4]);
        let counts: u64 = m.state.run_counts().unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(counts, 2, "run counters follow the deletion");
    }
}
