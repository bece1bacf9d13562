//! An object store (S3, GCS, Azure Blob, through Apache Arrow's `object_store`) as the blob store, for a
//! cluster that outgrows its disks. Same addresses (`<prefix>/<2 hex>/<sha256>`); the object store holds a
//! blob for every node, so there is no node-to-node replication and no repair. An upload is spooled to
//! the receiving node's disk first (the object's name is its hash, known only at the end), then sent as a
//! multipart upload in bounded memory.
use super::local::BlobError;
use super::range::ByteRange;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Multipart part size (S3's minimum is 5 MiB) and parts in flight: ~40 MiB of memory per upload at most.
const PART: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;

#[derive(Clone)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    pub url: String,
}

fn object_err(what: &str) -> impl FnOnce(object_store::Error) -> BlobError + '_ {
    move |e| BlobError::Io {
        path: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl ObjectBlobs {
    /// `url`: `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` (…); `options`: the
    /// store's keys (`aws_endpoint`, `aws_access_key_id`, `google_service_account`, …).
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<ObjectBlobs, BlobError> {
        let parsed = url::Url::parse(url).map_err(|e| BlobError::Io {
            path: url.to_string(),
            source: std::io::Error::other(format!("artifacts.store: not a URL: {e}")),
        })?;
        let (store, prefix) =
            object_store::parse_url_opts(&parsed, options.iter()).map_err(object_err(url))?;
        Ok(ObjectBlobs {
            store: Arc::from(store),
            prefix,
            url: url.to_string(),
        })
    }

    fn key(&self, sha256: &str) -> ObjectPath {
        self.prefix
            .child(&sha256[..2.min(sha256.len())])
            .child(sha256)
    }

    pub async fn size(&self, sha256: &str) -> Option<u64> {
        self.store
            .head(&self.key(sha256))
            .await
            .ok()
            .map(|m| m.size)
    }

    /// Uploads the complete local file `file` as blob `sha256` (skipped when the store already has it).
    pub async fn upload_file(&self, file: &std::path::Path, sha256: &str) -> Result<(), BlobError> {
        let key = self.key(sha256);
        if self.store.head(&key).await.is_ok() {
            return Ok(());
        }
        let mut reader = tokio::fs::File::open(file)
            .await
            .map_err(|source| BlobError::Io {
                path: file.display().to_string(),
                source,
            })?;
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(object_err(&self.url))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(source) => {
                    let _ = writer.abort().await;
                    return Err(BlobError::Io {
                        path: file.display().to_string(),
                        source,
                    });
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                return Err(object_err(&self.url)(e));
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(object_err(&self.url))?;
        Ok(())
    }

    /// The bytes of `range` of blob `sha256`, streamed.
    pub async fn get(
        &self,
        sha256: &str,
        range: ByteRange,
        size: u64,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, BlobError> {
        let (start, len) = range.span(size);
        let options = GetOptions {
            range: (len != size || start != 0).then_some(GetRange::Bounded(start..start + len)),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&self.key(sha256), options)
            .await
            .map_err(object_err(&self.url))?;
        Ok(got
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed())
    }

    pub async fn delete(&self, sha256: &str) -> bool {
        self.store.delete(&self.key(sha256)).await.is_ok()
    }

    /// Every blob in the store with its age.
    pub async fn list(&self) -> Result<Vec<(String, std::time::Duration)>, BlobError> {
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(object_err(&self.url))?;
        let now = chrono_now();
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let sha = m.location.filename()?.to_string();
                jobserv_raft::state::validate_sha256(&sha).ok()?;
                let modified = m.last_modified.timestamp_millis().max(0) as u64;
                Some((
                    sha,
                    std::time::Duration::from_millis(now.saturating_sub(modified)),
                ))
            })
            .collect())
    }
}

fn chrono_now() -> u64 {
    jobserv_raft::state::now_ms()
}
