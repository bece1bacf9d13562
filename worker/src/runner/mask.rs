//! Masks secret values in the console stream as `***`.
//!
//! Invariants:
//! - A secret never leaves the masker, even when it arrives split across several chunks: the masker holds back
//!   the last `longest pattern - 1` bytes until it knows they cannot start a secret.
//! - A multi-line secret is masked as a whole, and each of its lines (of at least [`MIN_PART_LEN`] characters)
//!   is masked on its own too, because scripts often print one line of a key or a certificate.
//! - Matching is leftmost, then longest, so overlapping secrets are masked entirely.

/// Lines of a multi-line secret shorter than this are not masked on their own: masking every `}` or `-----`
/// would garble the log without protecting anything.
pub const MIN_PART_LEN: usize = 4;
pub const MASK: &[u8] = b"***";

#[derive(Debug, Default)]
pub struct Masker {
    /// Sorted longest first, so the first match at a position is the longest.
    patterns: Vec<Vec<u8>>,
    longest: usize,
    held: Vec<u8>,
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for value in secrets {
            let whole = value.trim_end_matches(['\r', '\n']);
            if whole.is_empty() {
                continue;
            }
            patterns.push(whole.as_bytes().to_vec());
            if whole.contains('\n') {
                for line in whole.lines() {
                    let line = line.trim();
                    if line.len() >= MIN_PART_LEN {
                        patterns.push(line.as_bytes().to_vec());
                    }
                }
            }
        }
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        patterns.dedup();
        let longest = patterns.first().map_or(0, Vec::len);
        Masker {
            patterns,
            longest,
            held: Vec::new(),
        }
    }

    /// Feeds output, returns what can be shown now.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        if self.patterns.is_empty() {
            return data.to_vec();
        }
        self.held.extend_from_slice(data);
        self.drain(false)
    }

    /// The end of the stream: whatever is held back cannot become a secret any more.
    pub fn finish(&mut self) -> Vec<u8> {
        self.drain(true)
    }

    /// Masks and releases every byte of `held` at which no secret can start any more. Before the end of the
    /// stream a position is decided only when a whole longest-pattern window follows it, so a short secret that
    /// is the prefix of a longer one never wins just because the rest has not arrived yet.
    fn drain(&mut self, at_end: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.held.len());
        let mut pos = 0;
        while pos < self.held.len() {
            if !at_end && self.held.len() - pos < self.longest {
                break;
            }
            if let Some(len) = self.match_at(pos) {
                out.extend_from_slice(MASK);
                pos += len;
            } else {
                out.push(self.held[pos]);
                pos += 1;
            }
        }
        self.held.drain(..pos);
        out
    }

    fn match_at(&self, pos: usize) -> Option<usize> {
        let rest = &self.held[pos..];
        self.patterns
            .iter()
            .find(|p| rest.starts_with(p))
            .map(Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_chunks(secrets: &[&str], chunks: &[&[u8]]) -> String {
        let mut m = Masker::new(secrets.iter().copied());
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn single_line_secret_is_masked() {
        assert_eq!(
            mask_chunks(&["hunter2"], &[b"pw=hunter2 ok\n"]),
            "pw=*** ok\n"
        );
    }

    #[test]
    fn no_secrets_passes_through_unchanged() {
        assert_eq!(mask_chunks(&[], &[b"a", b"b"]), "ab");
        assert_eq!(mask_chunks(&[""], &[b"a", b"b"]), "ab");
    }

    #[test]
    fn secret_split_across_chunks_is_masked() {
        assert_eq!(
            mask_chunks(&["hunter2"], &[b"pw=hun", b"ter2 ok\n"]),
            "pw=*** ok\n"
        );
        // Byte by byte, the worst case.
        let text = b"x hunter2 y hunter2";
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(mask_chunks(&["hunter2"], &chunks), "x *** y ***");
    }

    #[test]
    fn held_back_bytes_are_released_when_they_cannot_match() {
        let mut m = Masker::new(["secret"]);
        let out = m.push(b"hello world");
        // Only the last len-1 bytes may be held.
        assert_eq!(out, b"hello ");
        assert_eq!(m.finish(), b"world");
    }

    #[test]
    fn multi_line_secret_is_masked_whole_and_per_line() {
        let key = "-----BEGIN KEY-----\nAAAABBBBCCCC\nDDDDEEEE\n-----END KEY-----\n";
        let whole = format!("cat: {key}done\n");
        assert_eq!(mask_chunks(&[key], &[whole.as_bytes()]), "cat: ***\ndone\n");
        // One line printed alone (e.g. by grep) is masked too.
        assert_eq!(mask_chunks(&[key], &[b"line DDDDEEEE!\n"]), "line ***!\n");
        // Split in the middle of a line.
        let (a, b) = whole.as_bytes().split_at(20);
        assert_eq!(mask_chunks(&[key], &[a, b]), "cat: ***\ndone\n");
    }

    #[test]
    fn overlapping_secrets_mask_longest() {
        assert_eq!(mask_chunks(&["abc", "abcdef"], &[b"xabcdefx"]), "x***x");
        assert_eq!(mask_chunks(&["abc", "abcdef"], &[b"xabcx"]), "x***x");
        // The longer secret arrives in two chunks after its shorter prefix: still masked whole.
        assert_eq!(
            mask_chunks(&["abc", "abcdef"], &[b"xabc", b"defx"]),
            "x***x"
        );
    }
}
