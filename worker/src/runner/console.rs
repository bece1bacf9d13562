//! The console pipeline between an executor's raw output and the reporter:
//! raw bytes → [`Masker`] → line scanners (test-grepping, console-progress) → pending buffer → reporter.
//!
//! Invariants: bytes reach the reporter in order with contiguous offsets; nothing unmasked is ever pending;
//! `offset` only advances when the reporter acknowledged a chunk, so a failed POST is retried with the same bytes.
use super::grep::TestGrepper;
use super::mask::Masker;
use super::report::{ConsoleChunk, RunReporter};
use crate::error::{Result, WorkerError};
use jobserv_protocol::RunStatus;
use regex::Regex;
use std::time::{Duration, Instant};

/// Lines longer than this are scanned only up to here: a runaway line must not grow memory without bound.
const MAX_LINE: usize = 64 * 1024;

pub struct Console<'r, R: RunReporter> {
    reporter: &'r R,
    masker: Masker,
    pending: Vec<u8>,
    offset: u64,
    line: Vec<u8>,
    at_line_start: bool,
    pub grepper: Option<TestGrepper>,
    progress: Option<Regex>,
    metadata: Option<String>,
    last_post: Instant,
    flush_bytes: usize,
    cancelled: bool,
}

impl<'r, R: RunReporter> Console<'r, R> {
    pub fn new(reporter: &'r R, masker: Masker, flush_bytes: usize) -> Self {
        Console {
            reporter,
            masker,
            pending: Vec::new(),
            offset: 0,
            line: Vec::new(),
            at_line_start: true,
            grepper: None,
            progress: None,
            metadata: None,
            last_post: Instant::now(),
            flush_bytes: flush_bytes.max(1),
            cancelled: false,
        }
    }

    pub fn with_progress(mut self, progress: Option<Regex>) -> Self {
        self.progress = progress;
        self
    }

    /// True once a reply carried `X-JOBSERV-CANCEL: 1`.
    pub fn cancelled(&self) -> bool {
        self.cancelled
    }

    /// Bytes acknowledged so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Script output (or a runner message): masked, scanned, and sent once enough is pending.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        let visible = self.masker.push(data);
        self.accept(visible);
        if self.pending.len() >= self.flush_bytes {
            self.flush(None).await?;
        }
        Ok(())
    }

    /// A runner message on its own line, e.g. `== exit code 1`.
    pub async fn note(&mut self, text: &str) -> Result<()> {
        let mut line = String::new();
        if !self.at_line_start {
            // Keep runner messages off the end of a script line that had no newline yet.
            line.push('\n');
        }
        line.push_str(text);
        line.push('\n');
        self.write(line.as_bytes()).await
    }

    /// Sends what is pending when the flush interval passed, or an empty heartbeat when the script was silent
    /// for `heartbeat` (so a cancel is noticed even then).
    pub async fn tick(&mut self, heartbeat: Duration) -> Result<()> {
        if !self.pending.is_empty() || self.last_post.elapsed() >= heartbeat {
            self.flush(None).await?;
        }
        Ok(())
    }

    /// Sends every pending byte (in chunks of at most `flush_bytes`), with `status` on the last chunk.
    pub async fn flush(&mut self, status: Option<RunStatus>) -> Result<()> {
        loop {
            let take = self.pending.len().min(self.flush_bytes);
            let last = take == self.pending.len();
            let chunk = ConsoleChunk {
                offset: self.offset,
                bytes: &self.pending[..take],
                status: if last { status } else { None },
                metadata: self.metadata.as_deref(),
            };
            let reply = self
                .reporter
                .append_console(chunk)
                .await
                .map_err(|e| match e {
                    WorkerError::Report(_) => e,
                    other => WorkerError::Report(other.to_string()),
                })?;
            self.metadata = None;
            self.cancelled |= reply.cancel;
            self.offset += take as u64;
            self.pending.drain(..take);
            self.last_post = Instant::now();
            if last {
                return Ok(());
            }
        }
    }

    /// End of output: releases what the masker held back, scans the last partial line, sends all with `status`.
    pub async fn finish(&mut self, status: RunStatus) -> Result<()> {
        let rest = self.masker.finish();
        self.accept(rest);
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.scan_line(&line);
        }
        self.flush(Some(status)).await
    }

    fn accept(&mut self, visible: Vec<u8>) {
        if self.grepper.is_some() || self.progress.is_some() {
            for &b in &visible {
                if b == b'\n' {
                    let line = std::mem::take(&mut self.line);
                    self.scan_line(&line);
                } else if self.line.len() < MAX_LINE {
                    self.line.push(b);
                }
            }
        }
        if let Some(&last) = visible.last() {
            self.at_line_start = last == b'\n';
        }
        self.pending.extend_from_slice(&visible);
    }

    fn scan_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if let Some(grepper) = self.grepper.as_mut() {
            grepper.feed_line(text);
        }
        if let Some(caps) = self.progress.as_ref().and_then(|p| p.captures(text)) {
            let meta = match (caps.name("current"), caps.name("total")) {
                (Some(c), Some(t)) => format!("{}/{}", c.as_str(), t.as_str()),
                _ => caps.get(0).map_or("", |m| m.as_str()).to_string(),
            };
            // A header value: printable ASCII only, bounded.
            let meta: String = meta
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(200)
                .collect();
            self.metadata = Some(meta);
        }
    }
}
