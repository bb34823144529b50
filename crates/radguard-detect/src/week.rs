//! The week as `off-hours` sees it: local time from the caller's Unix time and UTC offset (the
//! crate reads no clock and no time zone database), the 168 hour slots of a week, and configured
//! hours such as `"Mon-Fri 07:00-19:00"`.

use serde::Serialize;

/// Hour slots in a week (Monday 00:00-01:00 is slot 0).
pub const WEEK_HOURS: usize = 168;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
const WEEK_MINUTES: i64 = 7 * 24 * 60;

/// Day names, Monday first (ISO 8601 order).
pub const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The wall-clock time of an event, as the caller read it: Unix time and the local UTC offset
/// in force at that instant (so a daylight-saving change is the caller's, not this crate's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wall {
    /// Milliseconds since the Unix epoch (UTC).
    pub unix_ms: i64,
    /// Local time minus UTC, in seconds (e.g. 3600 for CET).
    pub utc_offset_secs: i32,
}

impl Wall {
    /// UTC (offset 0).
    pub fn utc(unix_ms: i64) -> Wall {
        Wall {
            unix_ms,
            utc_offset_secs: 0,
        }
    }

    fn local_ms(self) -> i64 {
        self.unix_ms
            .saturating_add(i64::from(self.utc_offset_secs).saturating_mul(1000))
    }

    /// Minutes since Monday 00:00, local time (0 to 10079).
    pub fn minute_of_week(self) -> u32 {
        // 1970-01-01 was a Thursday: three days after a Monday.
        let minutes = self.local_ms().div_euclid(MINUTE_MS) + 3 * 24 * 60;
        u32::try_from(minutes.rem_euclid(WEEK_MINUTES)).unwrap_or(0)
    }

    /// The hour slot of the week, local time (0 to 167).
    pub fn hour_of_week(self) -> usize {
        (self.minute_of_week() / 60) as usize
    }

    /// Local day of the week, 0 = Monday.
    pub fn weekday(self) -> usize {
        self.hour_of_week() / 24
    }

    /// Local hour of the day (0 to 23).
    pub fn hour(self) -> u8 {
        u8::try_from(self.hour_of_week() % 24).unwrap_or(0)
    }

    /// Which hour this is since the epoch (local): tells two weeks' same slot apart.
    pub fn hour_index(self) -> i64 {
        self.local_ms().div_euclid(HOUR_MS)
    }
}

/// What the caller's clocks say when it feeds an event: a monotonic clock for the sliding
/// windows and, when it has one, the wall clock for the weekly rules (`off-hours`) and the
/// learning periods (`baseline = "learned"`). Without `wall` those rules do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// A monotonic clock in milliseconds.
    pub mono_ms: u64,
    pub wall: Option<Wall>,
}

impl Now {
    /// Only a monotonic clock.
    pub fn mono(mono_ms: u64) -> Now {
        Now {
            mono_ms,
            wall: None,
        }
    }
}

/// One `hours` entry: days and a time span, e.g. `"Mon-Fri 07:00-19:00"` or
/// `"Sat,Sun 08:00-12:00"` (local time; the end is exclusive and may be `24:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hours {
    /// As written (in evidence).
    pub text: String,
    #[serde(skip)]
    days: [bool; 7],
    /// Minutes after midnight, start inclusive, end exclusive.
    #[serde(skip)]
    start: u32,
    #[serde(skip)]
    end: u32,
}

fn day(s: &str) -> Result<usize, String> {
    let lower = s.trim().to_ascii_lowercase();
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    DAYS.iter()
        .zip(FULL)
        .position(|(short, full)| lower == short.to_ascii_lowercase() || lower == full)
        .ok_or_else(|| {
            format!(
                "unknown day {:?} (Mon, Tue, Wed, Thu, Fri, Sat, Sun)",
                s.trim()
            )
        })
}

fn time(s: &str) -> Result<u32, String> {
    let bad = || format!("bad time {:?} (HH:MM, 00:00 to 24:00)", s.trim());
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Hours {
    /// Reads `"DAYS HH:MM-HH:MM"`: DAYS a comma-separated list of days or day ranges
    /// (`Mon-Fri`, `Fri-Mon` wraps over the weekend), the span within one day (an overnight
    /// shift is two entries, e.g. `"Mon-Fri 19:00-24:00"` and `"Tue-Sat 00:00-07:00"`).
    pub fn parse(s: &str) -> Result<Hours, String> {
        let (days_part, span) = s.trim().split_once(char::is_whitespace).ok_or_else(|| {
            format!("{s:?}: expected days and a time span, e.g. \"Mon-Fri 07:00-19:00\"")
        })?;
        let mut days = [false; 7];
        for item in days_part.split(',') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut d = a;
                    loop {
                        if let Some(x) = days.get_mut(d) {
                            *x = true;
                        }
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => {
                    if let Some(x) = days.get_mut(day(item)?) {
                        *x = true;
                    }
                }
            }
        }
        let (a, b) = span
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("bad time span {:?} (HH:MM-HH:MM)", span.trim()))?;
        let (start, end) = (time(a)?, time(b)?);
        if end <= start {
            return Err(format!(
                "time span {:?} ends before it starts (an overnight span is two entries, e.g. \"19:00-24:00\" and \"00:00-07:00\" of the next days)",
                span.trim()
            ));
        }
        Ok(Hours {
            text: s.trim().to_string(),
            days,
            start,
            end,
        })
    }

    /// Whether a minute of the week (0 = Monday 00:00) is within these hours.
    pub fn contains(&self, minute_of_week: u32) -> bool {
        let day = (minute_of_week / (24 * 60)) as usize;
        let minute = minute_of_week % (24 * 60);
        self.days.get(day).copied().unwrap_or(false) && minute >= self.start && minute < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_week_from_unix_time_and_offset() {
        // 2024-01-01 00:00 UTC was a Monday.
        let monday = 1_704_067_200_000;
        let w = Wall::utc(monday);
        assert_eq!((w.weekday(), w.hour(), w.hour_of_week()), (0, 0, 0));
        let w = Wall::utc(monday + 5 * DAY_MS + 13 * HOUR_MS + 59 * MINUTE_MS);
        assert_eq!((w.weekday(), w.hour()), (5, 13));
        // 23:30 UTC Sunday is 00:30 Monday at UTC+1.
        let w = Wall {
            unix_ms: monday - 30 * MINUTE_MS,
            utc_offset_secs: 3600,
        };
        assert_eq!((w.weekday(), w.hour()), (0, 0));
        assert_eq!(Wall::utc(monday - 1).hour_of_week(), 167);
        // Before the epoch too.
        assert_eq!(Wall::utc(-1).hour_of_week(), 3 * 24 - 1);
    }

    #[test]
    fn hours_are_read_and_matched() {
        let h = Hours::parse("Mon-Fri 07:00-19:00").unwrap();
        assert!(h.contains(7 * 60));
        assert!(h.contains(4 * 1440 + 19 * 60 - 1));
        assert!(!h.contains(4 * 1440 + 19 * 60));
        assert!(!h.contains(5 * 1440 + 8 * 60));
        let h = Hours::parse("sat,Sunday 00:00-24:00").unwrap();
        assert!(h.contains(5 * 1440) && h.contains(7 * 1440 - 1) && !h.contains(0));
        let h = Hours::parse("Fri-Mon 10:00-11:00").unwrap();
        assert!(h.contains(10 * 60) && h.contains(6 * 1440 + 10 * 60));
        assert!(!h.contains(1440 + 10 * 60));
        for (bad, says) in [
            ("Mon-Fry 07:00-19:00", "unknown day \"Fry\""),
            ("Mon-Fri 7:00-19:00", "bad time \"7:00\""),
            ("Mon-Fri 07:00-25:00", "bad time \"25:00\""),
            ("Mon-Fri 19:00-07:00", "ends before it starts"),
            ("Mon-Fri", "expected days and a time span"),
            ("Mon 07:00", "bad time span"),
        ] {
            let e = Hours::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
