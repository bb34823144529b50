//! The identifying attributes at the head of a data set, read from the stream as it passes:
//! Patient ID and Name, Study, Series and SOP Instance UIDs, Accession Number. The audit trail
//! needs them (who sent or queried which patient's images) and the relay must not hold the data
//! set for it: the sniffer keeps at most [`HEAD_LIMIT`] bytes of the start of the data set and
//! stops as soon as it has passed group 0020's UIDs.

/// The most of a data set's start that is kept to find the identifying attributes.
pub const HEAD_LIMIT: usize = 64 * 1024;
const MAX_DEPTH: usize = 8;

/// Identifying attributes found at the head of a data set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadFacts {
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub accession_number: Option<String>,
    /// Query/Retrieve Level (0008,0052) of a C-FIND/C-MOVE/C-GET identifier.
    pub query_level: Option<String>,
    /// True when the walk stopped for a reason other than "found the end of the head"
    /// (malformed, deeper than the nesting limit, or more than [`HEAD_LIMIT`] bytes).
    pub incomplete: bool,
}

/// Streaming sniffer for one data set.
#[derive(Debug)]
pub struct HeadSniffer {
    explicit: bool,
    buf: Vec<u8>,
    done: Option<HeadFacts>,
}

enum Walk {
    /// Not enough bytes yet.
    NeedMore,
    /// Walked past the attributes of interest (or the end of the data).
    Done,
    /// The bytes are not a data set the walker understands.
    Malformed,
}

impl HeadSniffer {
    /// `explicit`: whether the transfer syntax has explicit VRs (all but Implicit VR LE).
    /// Big endian and deflated data sets are not sniffed (the caller passes `None` facts).
    pub fn new(explicit: bool) -> Self {
        HeadSniffer {
            explicit,
            buf: Vec::new(),
            done: None,
        }
    }

    /// Feeds the next chunk; returns true once the facts are known (further chunks are ignored).
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.done.is_some() {
            return true;
        }
        let room = HEAD_LIMIT.saturating_sub(self.buf.len());
        self.buf
            .extend_from_slice(chunk.get(..chunk.len().min(room)).unwrap_or_default());
        let mut facts = HeadFacts::default();
        match walk(&self.buf, self.explicit, 0, &mut facts, &mut 0) {
            Walk::Done => {
                self.finish_with(facts);
            }
            Walk::Malformed => {
                facts.incomplete = true;
                self.finish_with(facts);
            }
            Walk::NeedMore if self.buf.len() >= HEAD_LIMIT => {
                facts.incomplete = true;
                self.finish_with(facts);
            }
            Walk::NeedMore => {}
        }
        self.done.is_some()
    }

    fn finish_with(&mut self, facts: HeadFacts) {
        self.done = Some(facts);
        self.buf = Vec::new();
    }

    /// The facts: complete if the head was seen, partial (with `incomplete`) otherwise.
    pub fn finish(mut self) -> HeadFacts {
        if let Some(f) = self.done.take() {
            return f;
        }
        let mut facts = HeadFacts::default();
        let _ = walk(&self.buf, self.explicit, 0, &mut facts, &mut 0);
        facts
    }
}

/// Explicit VR encodings whose element header has 2 reserved bytes and a 4-byte length
/// (PS3.5 7.1.2); every other VR has a 2-byte length.
pub fn long_form(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OW"
            | b"OF"
            | b"OD"
            | b"OL"
            | b"OV"
            | b"SQ"
            | b"UT"
            | b"UN"
            | b"UC"
            | b"UR"
            | b"SV"
            | b"UV"
    )
}

fn text(v: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(v);
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!t.is_empty()).then(|| t.chars().take(256).collect())
}

/// Walks elements from `data`, recording facts at depth 0. `pos` returns how far it got.
fn walk(data: &[u8], explicit: bool, depth: usize, facts: &mut HeadFacts, pos: &mut usize) -> Walk {
    if depth > MAX_DEPTH {
        return Walk::Malformed;
    }
    let mut at = 0usize;
    loop {
        *pos = at;
        let Some(rest) = data.get(at..) else {
            return Walk::Malformed;
        };
        let Some(h) = rest.first_chunk::<8>() else {
            return Walk::NeedMore;
        };
        let group = u16::from_le_bytes([h[0], h[1]]);
        let elem = u16::from_le_bytes([h[2], h[3]]);
        // Item / delimiters inside sequences are handled by the caller (depth > 0).
        if group == 0xFFFE {
            return if depth > 0 {
                Walk::Done
            } else {
                Walk::Malformed
            };
        }
        if depth == 0 && (group, elem) > (0x0020, 0x000E) {
            return Walk::Done;
        }
        let (len, hdr, is_sq) = if explicit {
            let vr = [h[4], h[5]];
            if !vr.iter().all(u8::is_ascii_uppercase) {
                return Walk::Malformed;
            }
            if long_form(vr) {
                let Some(l) = rest.get(8..12).and_then(|l| <[u8; 4]>::try_from(l).ok()) else {
                    return Walk::NeedMore;
                };
                (u32::from_le_bytes(l), 12usize, &vr == b"SQ")
            } else {
                (u32::from(u16::from_le_bytes([h[6], h[7]])), 8usize, false)
            }
        } else {
            let l = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            // Implicit VR: only undefined length tells a sequence (defined-length ones are skipped).
            (l, 8usize, l == 0xFFFF_FFFF)
        };
        at += hdr;
        if len == 0xFFFF_FFFF {
            if !(is_sq || explicit && [h[4], h[5]] == *b"UN") {
                return Walk::Malformed;
            }
            match skip_undefined_sequence(data, at, explicit, depth) {
                Ok(Some(end)) => at = end,
                Ok(None) => return Walk::NeedMore,
                Err(()) => return Walk::Malformed,
            }
            continue;
        }
        let len = len as usize;
        let Some(value) = data.get(at..at.saturating_add(len)) else {
            return Walk::NeedMore;
        };
        if depth == 0 {
            match (group, elem) {
                (0x0008, 0x0018) => facts.sop_instance_uid = text(value),
                (0x0008, 0x0050) => facts.accession_number = text(value),
                (0x0008, 0x0052) => facts.query_level = text(value),
                (0x0010, 0x0010) => facts.patient_name = text(value),
                (0x0010, 0x0020) => facts.patient_id = text(value),
                (0x0020, 0x000D) => facts.study_uid = text(value),
                (0x0020, 0x000E) => facts.series_uid = text(value),
                _ => {}
            }
        }
        at += len;
    }
}

/// Skips a sequence of undefined length starting at `at` (its first item); returns the offset
/// after its Sequence Delimitation Item, `None` if more bytes are needed.
fn skip_undefined_sequence(
    data: &[u8],
    mut at: usize,
    explicit: bool,
    depth: usize,
) -> Result<Option<usize>, ()> {
    loop {
        let Some(h) = data.get(at..).and_then(|d| d.first_chunk::<8>()) else {
            return Ok(None);
        };
        let group = u16::from_le_bytes([h[0], h[1]]);
        let elem = u16::from_le_bytes([h[2], h[3]]);
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        at += 8;
        match (group, elem) {
            (0xFFFE, 0xE0DD) => return Ok(Some(at)),
            (0xFFFE, 0xE000) if len != 0xFFFF_FFFF => {
                at = at.checked_add(len as usize).ok_or(())?;
                if at > data.len() {
                    return Ok(None);
                }
            }
            (0xFFFE, 0xE000) => {
                // Item of undefined length: walk its elements until the Item Delimitation Item.
                let Some(inner) = data.get(at..) else {
                    return Ok(None);
                };
                let mut pos = 0;
                let mut scratch = HeadFacts::default();
                match walk(inner, explicit, depth + 1, &mut scratch, &mut pos) {
                    Walk::Done => {}
                    Walk::NeedMore => return Ok(None),
                    Walk::Malformed => return Err(()),
                }
                at += pos;
                let Some(d) = data.get(at..at + 8) else {
                    return Ok(None);
                };
                if !d.starts_with(&[0xFE, 0xFF, 0x0D, 0xE0]) {
                    return Err(());
                }
                at += 8;
            }
            _ => return Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el_explicit(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], v: &[u8]) {
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
    }

    fn sample(explicit: bool) -> Vec<u8> {
        let mut d = Vec::new();
        let el = |d: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], v: &[u8]| {
            if explicit {
                el_explicit(d, g, e, vr, v)
            } else {
                d.extend_from_slice(&g.to_le_bytes());
                d.extend_from_slice(&e.to_le_bytes());
                d.extend_from_slice(&(v.len() as u32).to_le_bytes());
                d.extend_from_slice(v);
            }
        };
        el(&mut d, 0x0008, 0x0018, b"UI", b"1.2.3.4\0");
        el(&mut d, 0x0008, 0x0050, b"SH", b"ACC1");
        // (0008,1140) SQ of undefined length with one undefined-length item.
        d.extend_from_slice(&[0x08, 0x00, 0x40, 0x11]);
        if explicit {
            d.extend_from_slice(b"SQ\0\0");
        }
        d.extend_from_slice(&[0xFF; 4]);
        d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        el(&mut d, 0x0008, 0x1155, b"UI", b"9.9\0");
        d.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        d.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        el(&mut d, 0x0010, 0x0010, b"PN", b"DOE^JOHN");
        el(&mut d, 0x0010, 0x0020, b"LO", b"PID-42");
        el(&mut d, 0x0020, 0x000D, b"UI", b"1.2.840.1\0");
        el(&mut d, 0x0020, 0x000E, b"UI", b"1.2.840.2\0");
        el(&mut d, 0x0028, 0x0010, b"US", &[0, 2]);
        d
    }

    #[test]
    fn finds_facts_in_any_chunking() {
        for explicit in [true, false] {
            let d = sample(explicit);
            for chunk in [1usize, 3, 7, 64, 4096] {
                let mut s = HeadSniffer::new(explicit);
                for c in d.chunks(chunk) {
                    s.feed(c);
                }
                let f = s.finish();
                assert_eq!(f.patient_id.as_deref(), Some("PID-42"), "chunk {chunk}");
                assert_eq!(f.patient_name.as_deref(), Some("DOE^JOHN"));
                assert_eq!(f.study_uid.as_deref(), Some("1.2.840.1"));
                assert_eq!(f.series_uid.as_deref(), Some("1.2.840.2"));
                assert_eq!(f.sop_instance_uid.as_deref(), Some("1.2.3.4"));
                assert_eq!(f.accession_number.as_deref(), Some("ACC1"));
                assert!(!f.incomplete);
            }
        }
    }

    #[test]
    fn garbage_is_incomplete_not_a_panic() {
        let mut s = HeadSniffer::new(true);
        assert!(s.feed(&[0x10, 0, 0x10, 0, b'p', b'n', 0xFF, 0xFF]));
        assert!(s.finish().incomplete);
        let mut s = HeadSniffer::new(true);
        s.feed(&[0x10, 0, 0x20, 0, b'L', b'O', 0xFF, 0x7F, b'x']);
        let f = s.finish();
        assert_eq!(f.patient_id, None);
    }
}
