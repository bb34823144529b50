//! Value-level helpers: dummy values per VR, date shifting, and the identifier matcher used
//! both to clean free text (the `C` action) and to find residual PHI (`--check`).

use dicom_core::{Tag, VR};

use crate::codec::{pad, trim_padding, DataSet, Element, Value};

/// A non-zero length dummy value consistent with the VR (the `D` action). Sequences get one
/// empty item; UIDs are handled by the caller (they are mapped, not dummied).
pub fn dummy_value(vr: VR) -> Value {
    let text = |s: &str| Value::Bytes(pad(vr, s.as_bytes().to_vec()));
    match vr {
        VR::AE | VR::CS | VR::LO | VR::LT | VR::SH | VR::ST | VR::UT | VR::UC | VR::PN => {
            text("ANONYMIZED")
        }
        VR::AS => text("000D"),
        VR::DA => text("19000101"),
        VR::DT => text("19000101000000"),
        VR::TM => text("000000"),
        VR::DS | VR::IS => text("0"),
        VR::UI => text("2.25.0"),
        VR::UR => text("urn:anonymized"),
        VR::US | VR::SS | VR::OW | VR::UN | VR::OB => Value::Bytes(vec![0; 2]),
        VR::UL | VR::SL | VR::FL | VR::AT | VR::OF | VR::OL => Value::Bytes(vec![0; 4]),
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => Value::Bytes(vec![0; 8]),
        VR::SQ => Value::Items(vec![DataSet::default()]),
    }
}

/// An empty value of the element's kind (the `Z` action).
pub fn empty_value(vr: VR) -> Value {
    if vr == VR::SQ {
        Value::Items(Vec::new())
    } else {
        Value::Bytes(Vec::new())
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Shift one `YYYYMMDD` date by `days`.
fn shift_ymd(v: &[u8], days: i32) -> Option<[u8; 8]> {
    if v.len() != 8 {
        return None;
    }
    let y = i64::from(digits(v.get(0..4)?)?);
    let m = digits(v.get(4..6)?)?;
    let d = digits(v.get(6..8)?)?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let (y2, m2, d2) = civil_from_days(days_from_civil(y, m, d) + i64::from(days));
    if !(0..=9999).contains(&y2) {
        return None;
    }
    let s = format!("{y2:04}{m2:02}{d2:02}");
    let mut out = [0u8; 8];
    out.copy_from_slice(s.as_bytes());
    Some(out)
}

/// Shift a DA value (possibly multi-valued, possibly a range `A-B`) by `days`. `None` when a
/// value is not a valid date (the caller then empties the element).
pub fn shift_da(v: &[u8], days: i32) -> Option<Vec<u8>> {
    let v = trim_padding(v);
    let mut out = Vec::with_capacity(v.len());
    for (i, val) in v.split(|&b| b == b'\\').enumerate() {
        if i > 0 {
            out.push(b'\\');
        }
        for (j, part) in val.split(|&b| b == b'-').enumerate() {
            if j > 0 {
                out.push(b'-');
            }
            let part = part.trim_ascii();
            if part.is_empty() {
                continue;
            }
            out.extend_from_slice(&shift_ymd(part, days)?);
        }
    }
    Some(pad(VR::DA, out))
}

/// Shift a DT value by `days`: the date part moves, the time and offset stay. Values with
/// less than day precision (`YYYY`, `YYYYMM`) are shifted as the first of the period and
/// written back with their precision.
pub fn shift_dt(v: &[u8], days: i32) -> Option<Vec<u8>> {
    let v = trim_padding(v);
    let mut out = Vec::with_capacity(v.len());
    for (i, val) in v.split(|&b| b == b'\\').enumerate() {
        if i > 0 {
            out.push(b'\\');
        }
        let val = val.trim_ascii();
        if val.is_empty() {
            continue;
        }
        let n = val.iter().take_while(|b| b.is_ascii_digit()).count().min(8);
        let (date, rest) = val.split_at(n);
        let full: Vec<u8> = match date.len() {
            4 => [date, b"0101"].concat(),
            6 => [date, b"01"].concat(),
            8 => date.to_vec(),
            _ => return None,
        };
        let shifted = shift_ymd(&full, days)?;
        out.extend_from_slice(shifted.get(..date.len())?);
        out.extend_from_slice(rest);
    }
    Some(pad(VR::DT, out))
}

/// What kind of identifier a match was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentifierKind {
    Name,
    Id,
    BirthDate,
}

/// Identifying strings taken from a data set (or from many originals), matched
/// case-insensitively on word boundaries.
#[derive(Debug, Clone, Default)]
pub struct Identifiers {
    tokens: Vec<(Vec<u8>, IdentifierKind)>,
}

/// Attributes whose values are person names to look for.
const NAME_TAGS: [Tag; 8] = [
    Tag(0x0010, 0x0010), // Patient's Name
    Tag(0x0010, 0x1001), // Other Patient Names
    Tag(0x0010, 0x1060), // Patient's Mother's Birth Name
    Tag(0x0010, 0x1005), // Patient's Birth Name
    Tag(0x0008, 0x0090), // Referring Physician's Name
    Tag(0x0008, 0x1050), // Performing Physician's Name
    Tag(0x0008, 0x1060), // Name of Physician(s) Reading Study
    Tag(0x0008, 0x1070), // Operators' Name
];

/// Attributes whose values are identifiers to look for.
const ID_TAGS: [Tag; 6] = [
    Tag(0x0010, 0x0020), // Patient ID
    Tag(0x0010, 0x1000), // Other Patient IDs
    Tag(0x0008, 0x0050), // Accession Number
    Tag(0x0038, 0x0010), // Admission ID
    Tag(0x0010, 0x1090), // Medical Record Locator
    Tag(0x0010, 0x2154), // Patient's Telephone Numbers
];

/// Shortest token that is looked for (shorter ones match everywhere).
pub const MIN_TOKEN: usize = 3;

impl Identifiers {
    /// The patient's name, ID and birth date only (what `--check` compares against).
    pub fn patient_core(ds: &DataSet) -> Identifiers {
        let mut ids = Identifiers::default();
        if let Some(v) = ds.text(Tag(0x0010, 0x0010)) {
            ids.add_name(v);
        }
        if let Some(v) = ds.text(Tag(0x0010, 0x0020)) {
            ids.add_id(v);
        }
        if let Some(v) = ds.text(Tag(0x0010, 0x0030)) {
            ids.add_date(v);
        }
        ids
    }

    /// Names, IDs and the birth date of the patient and the staff, from the top level of a
    /// data set (and the Other Patient IDs Sequence).
    pub fn collect(ds: &DataSet) -> Identifiers {
        let mut ids = Identifiers::patient_core(ds);
        for t in NAME_TAGS {
            if let Some(v) = ds.text(t) {
                ids.add_name(v);
            }
        }
        for t in ID_TAGS {
            if let Some(v) = ds.text(t) {
                for one in v.split(|&b| b == b'\\') {
                    ids.add_id(one);
                }
            }
        }
        if let Some(Element {
            value: Value::Items(items),
            ..
        }) = ds.get(Tag(0x0010, 0x1002))
        {
            for it in items {
                if let Some(v) = it.text(Tag(0x0010, 0x0020)) {
                    ids.add_id(v);
                }
            }
        }
        ids
    }

    fn push(&mut self, tok: &[u8], kind: IdentifierKind) {
        let tok = tok.trim_ascii();
        // Too short to be specific; or all X, which is what scrubbing writes.
        if tok.len() < MIN_TOKEN || tok.iter().all(|b| b.eq_ignore_ascii_case(&b'X')) {
            return;
        }
        let up = tok.to_ascii_uppercase();
        if !self.tokens.iter().any(|(t, _)| *t == up) {
            self.tokens.push((up, kind));
        }
    }

    /// Add a person name: each component and word of 3 or more characters.
    pub fn add_name(&mut self, pn: &[u8]) {
        for part in pn.split(|&b| matches!(b, b'^' | b'=' | b' ' | b',' | b'\\')) {
            let part = part.strip_suffix(b".").unwrap_or(part);
            self.push(part, IdentifierKind::Name);
        }
    }

    /// Add an identifier (whole value).
    pub fn add_id(&mut self, id: &[u8]) {
        self.push(id, IdentifierKind::Id);
    }

    /// Add a date `YYYYMMDD` in the written forms people use.
    pub fn add_date(&mut self, da: &[u8]) {
        let da = trim_padding(da);
        if da.len() != 8 || !da.iter().all(u8::is_ascii_digit) {
            return;
        }
        let s = String::from_utf8_lossy(da);
        let (y, m, d) = (&s[0..4], &s[4..6], &s[6..8]);
        for f in [
            format!("{y}{m}{d}"),
            format!("{y}-{m}-{d}"),
            format!("{y}/{m}/{d}"),
            format!("{y}.{m}.{d}"),
            format!("{d}.{m}.{y}"),
            format!("{d}/{m}/{y}"),
            format!("{m}/{d}/{y}"),
            format!("{d}-{m}-{y}"),
        ] {
            self.push(f.as_bytes(), IdentifierKind::BirthDate);
        }
    }

    /// Merge another set.
    pub fn extend(&mut self, other: &Identifiers) {
        for (t, k) in &other.tokens {
            self.push(t, *k);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The first identifier found in `text`: (start, end, kind).
    pub fn find(&self, text: &[u8]) -> Option<(usize, usize, IdentifierKind)> {
        let up = text.to_ascii_uppercase();
        let mut best: Option<(usize, usize, IdentifierKind)> = None;
        for (tok, kind) in &self.tokens {
            let mut from = 0;
            while let Some(i) = find_at(&up, tok, from) {
                let end = i + tok.len();
                if boundary(&up, i, end) {
                    if best.is_none_or(|(s, _, _)| i < s) {
                        best = Some((i, end, *kind));
                    }
                    break;
                }
                from = i + 1;
            }
        }
        best
    }

    /// Replace every identifier in `text` by `X`s of the same length (so VR length limits and
    /// character repertoires still hold). Returns the new text and how many were replaced.
    pub fn scrub(&self, text: &[u8]) -> (Vec<u8>, usize) {
        let mut out = text.to_vec();
        let mut n = 0;
        while let Some((s, e, _)) = self.find(&out) {
            for b in out.iter_mut().take(e).skip(s) {
                *b = b'X';
            }
            n += 1;
            if n > 10_000 {
                break;
            }
        }
        (out, n)
    }
}

fn find_at(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| hay.get(i..i + needle.len()) == Some(needle))
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

fn boundary(hay: &[u8], s: usize, e: usize) -> bool {
    let before = s == 0 || !hay.get(s - 1).copied().is_some_and(is_word);
    let after = e >= hay.len() || !hay.get(e).copied().is_some_and(is_word);
    before && after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for z in [-800_000i64, -1, 0, 1, 365, 10_957, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn date_shifts() {
        assert_eq!(shift_da(b"20240301", -1).unwrap(), b"20240229");
        assert_eq!(shift_da(b"20230301", -1).unwrap(), b"20230228");
        assert_eq!(shift_da(b"20240101", -366).unwrap(), b"20221231");
        assert_eq!(
            shift_da(b"20240110-20240120\\20240105 ", -10).unwrap(),
            b"20231231-20240110\\20231226"
        );
        assert_eq!(shift_da(b"-20240120", -1).unwrap(), b"-20240119 ");
        assert_eq!(shift_da(b"20241301", -1), None);
        assert_eq!(shift_da(b"2024.01.01", -1), None);
        assert_eq!(shift_da(b"20230229", -1), None);
        assert_eq!(
            shift_dt(b"20240301120000.5+0100", -1).unwrap(),
            b"20240229120000.5+0100 "
        );
        assert_eq!(shift_dt(b"2024", -1).unwrap(), b"2023");
        assert_eq!(shift_dt(b"202403", -1).unwrap(), b"202402");
        assert_eq!(shift_dt(b"20", -1), None);
    }

    #[test]
    fn identifiers_match_on_word_boundaries() {
        let mut ids = Identifiers::default();
        ids.add_name(b"DOE^JOHN^^DR.");
        ids.add_id(b"PAT-12345");
        ids.add_date(b"19700102");
        assert!(ids.find(b"scan of john doe").is_some());
        assert!(ids.find(b"JOHNSON").is_none());
        assert!(ids.find(b"id pat-12345 ok").is_some());
        assert!(ids.find(b"born 02.01.1970").is_some());
        assert!(ids.find(b"born 1970-01-02").is_some());
        assert!(
            ids.find(b"DR DOES").is_none(),
            "DR is too short to be a token"
        );
        let (s, n) = ids.scrub(b"John Doe, PAT-12345");
        assert_eq!(s, b"XXXX XXX, XXXXXXXXX");
        assert_eq!(n, 3);
        assert_eq!(ids.find(b"").map(|x| x.0), None);
    }

    #[test]
    fn dummies_have_even_nonzero_length() {
        for vr in [
            VR::AE,
            VR::AS,
            VR::CS,
            VR::DA,
            VR::DS,
            VR::DT,
            VR::FL,
            VR::FD,
            VR::IS,
            VR::LO,
            VR::LT,
            VR::OB,
            VR::OD,
            VR::OF,
            VR::OL,
            VR::OV,
            VR::OW,
            VR::PN,
            VR::SH,
            VR::SL,
            VR::SS,
            VR::ST,
            VR::SV,
            VR::TM,
            VR::UC,
            VR::UI,
            VR::UL,
            VR::UN,
            VR::UR,
            VR::US,
            VR::UT,
            VR::UV,
            VR::AT,
        ] {
            match dummy_value(vr) {
                Value::Bytes(b) => assert!(!b.is_empty() && b.len() % 2 == 0, "{vr:?}"),
                other => panic!("{vr:?}: {other:?}"),
            }
        }
        assert_eq!(dummy_value(VR::SQ), Value::Items(vec![DataSet::default()]));
    }
}
