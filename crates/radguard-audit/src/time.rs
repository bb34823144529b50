//! UTC timestamps without a date-time dependency: RFC 3339 formatting and the time filters
//! `radguard audit` accepts (`2024-05-01`, `2024-05-01T10:00:00Z`, `2024-05-01T12:00:00+02:00`,
//! `90m`, `7d`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds,
/// e.g. `2023-11-14T22:13:20.000Z` (also a valid `xsd:dateTime` with a time zone).
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn num(s: &str, digits: usize) -> Option<i64> {
    if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a time given on the command line into milliseconds since the epoch.
///
/// Accepts `now`; a duration back from `now_ms` (`45s`, `30m`, `12h`, `7d`); a UTC date
/// (`2024-05-01`, midnight UTC); or an RFC 3339 date-time with `Z` or a `±HH:MM` offset, a `T`
/// or a space between date and time, and optional fractional seconds.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Some(unit) = s.chars().last().filter(|c| "smhd".contains(*c)) {
        let n = &s[..s.len() - 1];
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = n.parse().map_err(|_| format!("{s:?}: number too large"))?;
            let unit_ms = match unit {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                _ => 86_400_000,
            };
            return n
                .checked_mul(unit_ms)
                .map(|d| now_ms.saturating_sub(d))
                .ok_or_else(|| format!("{s:?}: duration too large"));
        }
    }
    let bad = || {
        format!(
            "{s:?}: expected now, a duration like 30m/12h/7d, a date YYYY-MM-DD, or an RFC 3339 \
             date-time like 2024-05-01T10:00:00Z"
        )
    };
    let date = s.get(..10).ok_or_else(bad)?;
    let (y, m, d) = (
        date.get(0..4).and_then(|v| num(v, 4)).ok_or_else(bad)?,
        date.get(5..7).and_then(|v| num(v, 2)).ok_or_else(bad)?,
        date.get(8..10).and_then(|v| num(v, 2)).ok_or_else(bad)?,
    );
    if date.as_bytes().get(4) != Some(&b'-') || date.as_bytes().get(7) != Some(&b'-') {
        return Err(bad());
    }
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(format!("{s:?}: no such date"));
    }
    let day_ms = days_from_civil(y, m, d) * 86_400_000;
    let rest = &s[10..];
    if rest.is_empty() {
        return Ok(day_ms);
    }
    let rest = rest
        .strip_prefix('T')
        .or_else(|| rest.strip_prefix('t'))
        .or_else(|| rest.strip_prefix(' '))
        .ok_or_else(bad)?;
    let hh = rest.get(0..2).and_then(|v| num(v, 2)).ok_or_else(bad)?;
    let mm = rest.get(3..5).and_then(|v| num(v, 2)).ok_or_else(bad)?;
    let ss = rest.get(6..8).and_then(|v| num(v, 2)).ok_or_else(bad)?;
    if rest.as_bytes().get(2) != Some(&b':') || rest.as_bytes().get(5) != Some(&b':') {
        return Err(bad());
    }
    if hh > 23 || mm > 59 || ss > 60 {
        return Err(format!("{s:?}: no such time of day"));
    }
    let mut tail = &rest[8..];
    let mut frac_ms = 0;
    if let Some(f) = tail.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let first3: String = f[..digits].chars().chain("000".chars()).take(3).collect();
        frac_ms = first3.parse::<i64>().map_err(|_| bad())?;
        tail = &f[digits..];
    }
    let offset_min = if tail.eq_ignore_ascii_case("z") {
        0
    } else {
        let sign = match tail.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(bad()),
        };
        let oh = tail.get(1..3).and_then(|v| num(v, 2)).ok_or_else(bad)?;
        let om = tail.get(4..6).and_then(|v| num(v, 2)).ok_or_else(bad)?;
        if tail.len() != 6 || tail.as_bytes().get(3) != Some(&b':') || oh > 23 || om > 59 {
            return Err(bad());
        }
        sign * (oh * 60 + om)
    };
    Ok(day_ms + ((hh * 60 + mm - offset_min) * 60 + ss) * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn civil_round_trips_over_four_centuries() {
        for days in (-146_097 * 2..146_097 * 2).step_by(13) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn parses_absolute_times() {
        let now = 0;
        assert_eq!(parse_time("1970-01-02", now), Ok(86_400_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14 22:13:20.5z", now),
            Ok(1_700_000_000_500)
        );
        assert_eq!(
            parse_time("2023-11-15T00:13:20.123456+02:00", now),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_time("2023-11-14T17:13:20-05:00", now),
            Ok(1_700_000_000_000)
        );
        for ms in [0, 1_700_000_000_123, 4_102_444_800_000] {
            assert_eq!(parse_time(&rfc3339_ms(ms), now), Ok(ms));
        }
    }

    #[test]
    fn parses_relative_times() {
        let now = 10_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("30s", now), Ok(now - 30_000));
        assert_eq!(parse_time("2m", now), Ok(now - 120_000));
        assert_eq!(parse_time("1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_time("1d", now), Ok(now - 86_400_000));
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "yesterday",
            "2023-13-01",
            "2023-02-29",
            "2023-1-01",
            "2023-11-14T25:00:00Z",
            "2023-11-14T10:00:00",
            "2023-11-14T10:00Z",
            "2023-11-14T10:00:00.Z",
            "2023-11-14T10:00:00+0200",
            "s",
            "99999999999999999999d",
            "2023-11-14X10:00:00Z",
        ] {
            assert!(parse_time(bad, 0).is_err(), "{bad:?} accepted");
        }
    }
}
