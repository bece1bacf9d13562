//! Timestamps as the API shows them: JobServ's format, ISO 8601 in UTC with microseconds and an explicit
//! offset (`2026-12-03T21:53:02.125000+00:00`, what its `ISO8601_JSONEncoder` writes), so that scripts
//! written against JobServ parse them (`datetime.fromisoformat` on every Python 3.7+). Stored state keeps
//! milliseconds since the Unix epoch; these functions convert at the API's edge.

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`.
pub fn iso_from_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        (ms % 1000) * 1000
    )
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC), for people: the CLI's tables, the UI's pages.
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Milliseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`; `None` for anything else
/// (other offsets are not produced by this API).
pub fn ms_from_iso(s: &str) -> Option<u64> {
    let s = s.strip_suffix("+00:00").or_else(|| s.strip_suffix('Z'))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) => (hms, f),
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let (h, mi, sec): (u64, u64, u64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if t.next().is_some()
        || h > 23
        || mi > 59
        || sec > 60
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let millis: u64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    let days = days_from_civil(y, m, day);
    if days < 0 {
        return None;
    }
    Some(((days as u64 * 86_400) + h * 3600 + mi * 60 + sec) * 1000 + millis)
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobserv_format_round_trips() {
        assert_eq!(iso_from_ms(0), "1970-01-01T00:00:00.000000+00:00");
        // 2026-12-03T21:53:02.125Z, checked with Python: datetime(2026,12,3,21,53,2,125000,tzinfo=utc).timestamp()
        let ms = 1_796_334_782_125;
        assert_eq!(iso_from_ms(ms), "2026-12-03T21:53:02.125000+00:00");
        assert_eq!(utc_text(ms), "2026-12-03 21:53:02");
        assert_eq!(ms_from_iso("2026-12-03T21:53:02.125000+00:00"), Some(ms));
        assert_eq!(ms_from_iso("2026-12-03T21:53:02.125Z"), Some(ms));
        assert_eq!(ms_from_iso("2026-12-03T21:53:02Z"), Some(ms - 125));
        assert_eq!(
            ms_from_iso("2024-02-29T00:00:00+00:00"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "",
            "2026-12-03",
            "2026-13-01T00:00:00Z",
            "2026-12-03T25:00:00Z",
            "2026-12-03T00:00:00+01:00",
        ] {
            assert_eq!(ms_from_iso(bad), None, "{bad}");
        }
        for ms in [1u64, 999, 86_399_999, 951_782_400_000, 4_102_444_800_000] {
            assert_eq!(ms_from_iso(&iso_from_ms(ms)), Some(ms));
        }
    }
}
