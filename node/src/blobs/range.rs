//! HTTP `Range` requests on a blob (RFC 9110 §14): one range of bytes (`bytes=a-b`, `bytes=a-`,
//! `bytes=-n`). Several ranges in one request are answered with the whole blob (allowed by the RFC, and
//! what download tools never ask for); a range past the end is 416.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) Range header: the whole blob, 200.
    Full,
    /// `start..=end` within the blob: 206 with `Content-Range`.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

impl ByteRange {
    /// Offset and length to read for a blob of `size` bytes.
    pub fn span(self, size: u64) -> (u64, u64) {
        match self {
            ByteRange::Partial { start, end } => (start, end - start + 1),
            _ => (0, size),
        }
    }
}

pub fn parse(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = if first.is_empty() {
        // The last `n` bytes.
        match last.parse::<u64>() {
            Ok(0) => return ByteRange::Unsatisfiable,
            Ok(n) => Some((size.saturating_sub(n), size.saturating_sub(1))),
            Err(_) => None,
        }
    } else {
        match (first.parse::<u64>(), last) {
            (Ok(a), "") => Some((a, size.saturating_sub(1))),
            (Ok(a), b) => match b.parse::<u64>() {
                Ok(b) if b >= a => Some((a, b.min(size.saturating_sub(1)))),
                _ => None,
            },
            _ => None,
        }
    };
    match parsed {
        // A syntactically invalid range is ignored (RFC 9110 §14.2).
        None => ByteRange::Full,
        Some((start, _)) if size == 0 || start >= size => ByteRange::Unsatisfiable,
        Some((start, end)) => ByteRange::Partial { start, end },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = |h: &str| parse(Some(h), 100);
        assert_eq!(parse(None, 100), ByteRange::Full);
        assert_eq!(p("bytes=0-9"), ByteRange::Partial { start: 0, end: 9 });
        assert_eq!(p("bytes=90-"), ByteRange::Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=-10"), ByteRange::Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=-1000"), ByteRange::Partial { start: 0, end: 99 });
        assert_eq!(
            p("bytes=50-5000"),
            ByteRange::Partial { start: 50, end: 99 }
        );
        assert_eq!(p("bytes=100-"), ByteRange::Unsatisfiable);
        assert_eq!(p("bytes=-0"), ByteRange::Unsatisfiable);
        assert_eq!(p("bytes=9-0"), ByteRange::Full);
        assert_eq!(p("bytes=0-1,5-6"), ByteRange::Full);
        assert_eq!(p("items=0-1"), ByteRange::Full);
        assert_eq!(parse(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        assert_eq!(
            ByteRange::Partial { start: 90, end: 99 }.span(100),
            (90, 10)
        );
        assert_eq!(ByteRange::Full.span(100), (0, 100));
    }
}
