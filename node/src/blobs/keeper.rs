//! The blob keeper, one task per node: every `repair_interval_secs` it walks the blob records of the
//! applied state and
//! - **repairs**: a blob this node should hold (with the local store every voter holds every blob) but
//!   lacks — its disk was wiped or replaced, it was down during the upload, a push to it failed — is
//!   copied from a peer that holds it and verified by its hash; what this node lost and what it now holds
//!   is reported through Raft (`Command::BlobHolders`), so the records' holders stay true and
//!   `under_replicated` counts what really is;
//! - **collects**: a blob no artifact refers to any more (retention, replaced artifacts, an upload whose
//!   metadata never committed) is deleted once older than `gc_grace_secs`, and so are stale partial files.
//!   With an object store the leader alone collects there.
use super::local::BlobError;
use super::{serve, transfer, BlobStore};
use crate::cluster::Cluster;
use futures::StreamExt;
use jobserv_raft::model::BlobRecord;
use jobserv_raft::Command;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const PAGE: usize = 1000;
/// Holders reported per Raft entry.
const REPORT_BATCH: usize = 500;

pub fn spawn(cluster: Arc<Cluster>, blobs: Arc<BlobStore>) {
    tokio::spawn(async move {
        let interval = Duration::from_secs(blobs.config.repair_interval_secs.max(1));
        loop {
            tokio::time::sleep(interval).await;
            let span = tracing::debug_span!("blob_keeper", node = cluster.id);
            let _entered = span.enter();
            if let Err(e) = pass(&cluster, &blobs).await {
                tracing::warn!(node = cluster.id, "blob keeper pass: {e}");
            }
            cluster.gossip.publish_blobs(&blobs.status()).await;
        }
    });
}

/// One pass of repair and collection. Public so tests can run one without waiting.
pub async fn pass(cluster: &Cluster, blobs: &BlobStore) -> Result<(), String> {
    let leader = cluster.raft.metrics().borrow().current_leader;
    if leader.is_none() || cluster.rejoining.load(Ordering::SeqCst) {
        return Ok(()); // no verdict on holders until this node is caught up with a leader
    }
    let grace = Duration::from_secs(blobs.config.gc_grace_secs);
    if blobs.object.is_some() {
        return collect_object_store(cluster, blobs, grace).await;
    }
    let voters = cluster.voter_ids().len();
    let local: HashSet<String> = blobs.local.list().into_iter().collect();
    let mut referenced = HashSet::new();
    let (mut held, mut lost, mut to_fetch) = (Vec::new(), Vec::new(), Vec::new());
    let mut under_replicated = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = cluster
            .state
            .blobs_after(after.as_deref(), PAGE)
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        after = Some(last.sha256.clone());
        for record in page {
            referenced.insert(record.sha256.clone());
            let listed = record.holders.contains(&cluster.id);
            let has = local.contains(&record.sha256)
                && blobs.local.size(&record.sha256) == Some(record.size);
            let holders_really =
                record.holders.len() - usize::from(listed && !has) + usize::from(has && !listed);
            if holders_really < voters {
                under_replicated += 1;
            }
            match (has, listed) {
                (true, false) => held.push(record.sha256.clone()),
                (false, true) => {
                    lost.push(record.sha256.clone());
                    to_fetch.push(record);
                }
                (false, false) => to_fetch.push(record),
                (true, true) => {}
            }
        }
    }
    let missing = to_fetch.len() as u64;
    blobs.update_status(|s| {
        s.blobs = referenced.len() as u64;
        s.missing = missing;
        s.under_replicated = under_replicated;
    });
    cluster.metrics.blobs.missing.set(missing as i64);
    cluster
        .metrics
        .blobs
        .under_replicated
        .set(under_replicated as i64);
    report(
        cluster,
        std::mem::take(&mut held),
        std::mem::take(&mut lost),
    )
    .await?;

    let mut left = missing;
    for record in to_fetch {
        blobs.update_status(|s| s.repairing = Some(record.sha256.clone()));
        match fetch_from_peers(cluster, blobs, &record).await {
            Ok(()) => {
                cluster.metrics.blobs.repaired.inc();
                cluster.metrics.blobs.repaired_bytes.inc_by(record.size);
                blobs.update_status(|s| {
                    s.repaired += 1;
                    s.repaired_bytes += record.size;
                });
                held.push(record.sha256.clone());
            }
            Err(e) => {
                cluster.metrics.blobs.repair_failures.inc();
                blobs.update_status(|s| s.repair_failures += 1);
                tracing::warn!(sha256 = %record.sha256, "repair: {e}");
            }
        }
        left -= 1;
        cluster.metrics.blobs.missing.set(left as i64);
        if held.len() >= REPORT_BATCH {
            report(cluster, std::mem::take(&mut held), Vec::new()).await?;
        }
    }
    report(cluster, held, Vec::new()).await?;

    let mut collected = 0u64;
    for sha in local.difference(&referenced) {
        if blobs.local.remove_if_older(sha, grace) {
            collected += 1;
        }
    }
    collected += blobs.local.sweep_tmp(grace) as u64;
    cluster.metrics.blobs.collected.inc_by(collected);
    blobs.update_status(|s| {
        s.repairing = None;
        s.collected += collected;
        s.last_pass = Some(jobserv_raft::state::now_ms());
    });
    Ok(())
}

async fn report(cluster: &Cluster, held: Vec<String>, lost: Vec<String>) -> Result<(), String> {
    if held.is_empty() && lost.is_empty() {
        return Ok(());
    }
    for (held, lost) in chunks(held).into_iter().zip(
        chunks(lost)
            .into_iter()
            .chain(std::iter::repeat(Vec::new())),
    ) {
        cluster
            .propose(Command::BlobHolders {
                node: cluster.id,
                held,
                lost,
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `v` in report-sized pieces; at least one (possibly empty) piece.
fn chunks(v: Vec<String>) -> Vec<Vec<String>> {
    if v.is_empty() {
        return vec![Vec::new()];
    }
    v.chunks(REPORT_BATCH).map(|c| c.to_vec()).collect()
}

/// Copies `record`'s blob from the first peer that has it; the bytes must hash to its address.
pub async fn fetch_from_peers(
    cluster: &Cluster,
    blobs: &BlobStore,
    record: &BlobRecord,
) -> Result<(), String> {
    let mut errors = Vec::new();
    for (node, url) in serve::peers_to_ask(cluster, Some(record)) {
        match fetch_one(cluster, blobs, &url, &record.sha256).await {
            Ok(()) => return Ok(()),
            Err(e) => errors.push(format!("node {node}: {e}")),
        }
    }
    Err(format!("no peer provided it ({})", errors.join("; ")))
}

async fn fetch_one(
    cluster: &Cluster,
    blobs: &BlobStore,
    url: &str,
    sha256: &str,
) -> Result<(), String> {
    let resp = transfer::fetch(&blobs.client, url, &cluster.secret, sha256, None).await?;
    let mut writer = blobs.local.writer().map_err(|e| e.to_string())?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        writer.write(chunk).await.map_err(|e| e.to_string())?;
    }
    writer
        .finish(Some(sha256))
        .await
        .map(|_| ())
        .map_err(|e: BlobError| e.to_string())
}

/// Object store: partial spools here; unreferenced objects on the leader only (one collector is enough).
async fn collect_object_store(
    cluster: &Cluster,
    blobs: &BlobStore,
    grace: Duration,
) -> Result<(), String> {
    let mut collected = blobs.local.sweep_tmp(grace) as u64;
    let mut referenced = 0u64;
    if cluster.is_leader() {
        if let Some(object) = &blobs.object {
            for (sha, age) in object.list().await.map_err(|e| e.to_string())? {
                let known = cluster
                    .state
                    .blob(&sha)
                    .map_err(|e| e.to_string())?
                    .is_some();
                if known {
                    referenced += 1;
                } else if age >= grace && object.delete(&sha).await {
                    collected += 1;
                }
            }
        }
    }
    cluster.metrics.blobs.collected.inc_by(collected);
    blobs.update_status(|s| {
        s.collected += collected;
        if referenced > 0 {
            s.blobs = referenced;
        }
        s.last_pass = Some(jobserv_raft::state::now_ms());
    });
    Ok(())
}
