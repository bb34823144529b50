//! Values out of a radguard-dicom tree: text, numbers (PS3.5 §6.2 value representations),
//! sequence items and coded entries. Reads values only; element headers are the grammar's.

use dicom_core::{Tag, VR};
use radguard_dicom::tree::{trim_padding, DataSet, Element, Value};

pub const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);
pub const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
pub const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
pub const BODY_PART_EXAMINED: Tag = Tag(0x0018, 0x0015);
pub const PATIENT_AGE: Tag = Tag(0x0010, 0x1010);
pub const ANATOMIC_REGION_SEQUENCE: Tag = Tag(0x0008, 0x2218);
pub const SPS_SEQUENCE: Tag = Tag(0x0040, 0x0100);
pub const SCHEDULED_PROTOCOL_CODE_SEQUENCE: Tag = Tag(0x0040, 0x0008);
pub const CODE_VALUE: Tag = Tag(0x0008, 0x0100);
pub const CODING_SCHEME: Tag = Tag(0x0008, 0x0102);
pub const CODE_MEANING: Tag = Tag(0x0008, 0x0104);
pub const PERSON_NAME: Tag = Tag(0x0040, 0xA123);

/// The text of an element (padding trimmed), as UTF-8 with replacement.
pub fn text(ds: &DataSet, tag: Tag) -> Option<String> {
    ds.text(tag)
        .map(|b| String::from_utf8_lossy(trim_padding(b)).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The items of a sequence (none when absent or not a sequence).
pub fn items(ds: &DataSet, tag: Tag) -> &[DataSet] {
    match ds.get(tag).map(|e| &e.value) {
        Some(Value::Items(items)) => items,
        _ => &[],
    }
}

/// A coded entry's (scheme, code value, meaning) from a code sequence's first item.
pub fn code(ds: &DataSet, seq: Tag) -> Option<(String, String, String)> {
    let item = items(ds, seq).first()?;
    Some((
        text(item, CODING_SCHEME).unwrap_or_default(),
        text(item, CODE_VALUE)?,
        text(item, CODE_MEANING).unwrap_or_default(),
    ))
}

/// Why a numeric value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotNumeric(pub String);

fn chunks<const N: usize>(b: &[u8]) -> Result<Vec<[u8; N]>, NotNumeric> {
    if !b.chunks_exact(N).remainder().is_empty() {
        return Err(NotNumeric(format!(
            "{} bytes is not a multiple of {N}",
            b.len()
        )));
    }
    Ok(b.chunks_exact(N)
        .filter_map(|c| <[u8; N]>::try_from(c).ok())
        .collect())
}

/// Every value of a numeric element (DS, IS as text; FD, FL, US, UL, SS, SL binary in the data
/// set's byte order). Any value that is not a finite number is an error: a limit must not be
/// passed by a value the guard cannot read.
pub fn numbers(e: &Element, big_endian: bool) -> Result<Vec<f64>, NotNumeric> {
    let Value::Bytes(b) = &e.value else {
        return Err(NotNumeric("not a value".into()));
    };
    let out: Vec<f64> = match e.vr {
        VR::DS | VR::IS => {
            let s = std::str::from_utf8(b).map_err(|_| NotNumeric("not ASCII".into()))?;
            let s = s.trim_end_matches(['\0', ' ']);
            if s.trim().is_empty() {
                return Ok(Vec::new());
            }
            let mut v = Vec::new();
            for part in s.split('\\') {
                let n: f64 = part
                    .trim()
                    .parse()
                    .map_err(|_| NotNumeric(format!("{:?} is not a number", part.trim())))?;
                v.push(n);
            }
            v
        }
        VR::FD => chunks::<8>(b)?
            .into_iter()
            .map(|c| {
                if big_endian {
                    f64::from_be_bytes(c)
                } else {
                    f64::from_le_bytes(c)
                }
            })
            .collect(),
        VR::FL => chunks::<4>(b)?
            .into_iter()
            .map(|c| {
                f64::from(if big_endian {
                    f32::from_be_bytes(c)
                } else {
                    f32::from_le_bytes(c)
                })
            })
            .collect(),
        VR::US | VR::SS => chunks::<2>(b)?
            .into_iter()
            .map(|c| {
                let u = if big_endian {
                    u16::from_be_bytes(c)
                } else {
                    u16::from_le_bytes(c)
                };
                if e.vr == VR::SS {
                    f64::from(u as i16)
                } else {
                    f64::from(u)
                }
            })
            .collect(),
        VR::UL | VR::SL => chunks::<4>(b)?
            .into_iter()
            .map(|c| {
                let u = if big_endian {
                    u32::from_be_bytes(c)
                } else {
                    u32::from_le_bytes(c)
                };
                if e.vr == VR::SL {
                    f64::from(u as i32)
                } else {
                    f64::from(u)
                }
            })
            .collect(),
        vr => return Err(NotNumeric(format!("VR {vr:?} is not numeric"))),
    };
    if out.iter().any(|n| !n.is_finite()) {
        return Err(NotNumeric("not a finite number".into()));
    }
    Ok(out)
}

/// A patient age (AS, PS3.5 Table 6.2-1: `nnnD`, `nnnW`, `nnnM`, `nnnY`) in years.
pub fn age_years(ds: &DataSet) -> Option<f64> {
    let s = text(ds, PATIENT_AGE)?;
    let (n, unit) = s.split_at_checked(3)?;
    let n: f64 = n.parse().ok()?;
    let per_year = match unit {
        "Y" => 1.0,
        "M" => 12.0,
        "W" => 52.0,
        "D" => 365.0,
        _ => return None,
    };
    Some(n / per_year)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A DT value (PS3.5 Table 6.2-1: `YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]`) as seconds since
/// 1970-01-01 UTC: the first second it names (a missing part is its first value; fractions are
/// dropped). Without an offset it is read as UTC. `None`: not a DT.
pub fn datetime_unix(s: &str) -> Option<i64> {
    let s = s.trim();
    let (main, offset) = match s.find(['+', '-']) {
        Some(i) => (s.get(..i)?, Some(s.get(i..)?)),
        None => (s, None),
    };
    let main = main.split('.').next()?;
    if main.len() < 4 || main.len() % 2 != 0 || !main.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part = |from: usize, default: i64| -> Option<i64> {
        match main.get(from..from + 2) {
            Some(p) => p.parse().ok(),
            None => Some(default),
        }
    };
    let year: i64 = main.get(..4)?.parse().ok()?;
    let (month, day) = (part(4, 1)?, part(6, 1)?);
    let (hour, minute, second) = (part(8, 0)?, part(10, 0)?, part(12, 0)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut t = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    if let Some(o) = offset {
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let digits = o.get(1..)?;
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let h: i64 = digits.get(..2)?.parse().ok()?;
        let m: i64 = digits.get(2..)?.parse().ok()?;
        t -= sign * (h * 3600 + m * 60);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(datetime_unix("19700101"), Some(0));
        assert_eq!(datetime_unix("1970"), Some(0));
        assert_eq!(datetime_unix("20000301000000"), Some(951_868_800));
        assert_eq!(datetime_unix("20260101120000.123456"), Some(1_767_268_800));
        assert_eq!(datetime_unix("20260101120000+0100"), Some(1_767_265_200));
        assert_eq!(datetime_unix("20260101120000-0530"), Some(1_767_288_600));
        for bad in [
            "",
            "202",
            "2026013",
            "20261301",
            "2026010125",
            "abcd",
            "20260101+01",
        ] {
            assert_eq!(datetime_unix(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_of_every_numeric_vr() {
        let t = Tag(0x0018, 0x0060);
        let ds = Element::bytes(t, VR::DS, b"120\\80.5 ".to_vec());
        assert_eq!(numbers(&ds, false).unwrap(), vec![120.0, 80.5]);
        let fd = Element::bytes(t, VR::FD, 2.5f64.to_le_bytes().to_vec());
        assert_eq!(numbers(&fd, false).unwrap(), vec![2.5]);
        let fd_be = Element::bytes(t, VR::FD, 2.5f64.to_be_bytes().to_vec());
        assert_eq!(numbers(&fd_be, true).unwrap(), vec![2.5]);
        let us = Element::bytes(t, VR::US, vec![0x10, 0x00]);
        assert_eq!(numbers(&us, false).unwrap(), vec![16.0]);
        let ss = Element::bytes(t, VR::SS, vec![0xFF, 0xFF]);
        assert_eq!(numbers(&ss, false).unwrap(), vec![-1.0]);
        assert!(numbers(&Element::bytes(t, VR::DS, b"12a".to_vec()), false).is_err());
        assert!(numbers(&Element::bytes(t, VR::FD, vec![0; 7]), false).is_err());
        let nan = Element::bytes(t, VR::FD, f64::NAN.to_le_bytes().to_vec());
        assert!(numbers(&nan, false).is_err(), "NaN never passes a limit");
        assert!(numbers(&Element::bytes(t, VR::DS, b"inf".to_vec()), false).is_err());
        assert!(numbers(&Element::bytes(t, VR::LO, b"1".to_vec()), false).is_err());
        assert_eq!(
            numbers(&Element::bytes(t, VR::DS, b"  ".to_vec()), false).unwrap(),
            Vec::<f64>::new()
        );
    }

    #[test]
    fn ages() {
        let mut ds = DataSet::default();
        for (s, y) in [
            ("045Y", Some(45.0)),
            ("018M", Some(1.5)),
            ("104W", Some(2.0)),
            ("4Y", None),
            ("ABCY", None),
            ("010X", None),
        ] {
            ds.put(Element::text(PATIENT_AGE, VR::AS, s));
            assert_eq!(age_years(&ds), y, "{s}");
        }
    }
}
