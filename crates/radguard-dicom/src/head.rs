//! The identifying attributes at the head of a data set, read from the stream as it passes:
//! Patient ID and Name, Study, Series and SOP Instance UIDs, Accession Number. The audit trail
//! needs them (who sent or queried which patient's images) and the relay must not hold the data
//! set for it: the sniffer keeps at most [`HEAD_LIMIT`] bytes of the start of the data set and
//! stops as soon as it has passed group 0020's UIDs.

/// The most of a data set's start that is kept to find the identifying attributes.
pub const HEAD_LIMIT: usize = 64 * 1024;

use dicom_core::Tag;

use crate::inflate::DataSetReader;
use crate::limits::Limits;
use crate::tokens::{ElementKind, Token};
use crate::ts::TransferSyntax;

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
    /// (malformed, deeper than the nesting limit, more than [`HEAD_LIMIT`] bytes, or cut short).
    pub incomplete: bool,
}

/// Streaming sniffer for one data set, on the one grammar ([`crate::tokens`]): each byte is
/// read once (linear in the head size), and the sniffer stops at the first top-level element
/// after (0020,000E) or after [`HEAD_LIMIT`] bytes.
#[derive(Debug)]
pub struct HeadSniffer {
    reader: DataSetReader,
    facts: HeadFacts,
    /// The top-level element whose value is being collected, and the bytes so far.
    collecting: Option<(Tag, Vec<u8>)>,
    done: bool,
}

/// Longest value kept for one identifying attribute (their VRs allow 64 characters at most).
const MAX_VALUE: usize = 1024;

impl HeadSniffer {
    /// A sniffer for a data set in this transfer syntax (deflated and big endian included).
    pub fn new(ts: &TransferSyntax) -> Self {
        let limits = Limits {
            max_total: HEAD_LIMIT as u64,
            ..Limits::GATEWAY
        };
        HeadSniffer {
            reader: DataSetReader::new(ts, limits),
            facts: HeadFacts::default(),
            collecting: None,
            done: false,
        }
    }

    /// A sniffer for a transfer syntax UID; `None` when the UID is not a valid UID.
    pub fn for_uid(uid: &str) -> Option<Self> {
        TransferSyntax::from_uid(uid).ok().map(|ts| Self::new(&ts))
    }

    /// Feeds the next chunk; returns true once the facts are known (further chunks are ignored).
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.done {
            return true;
        }
        let Self {
            reader,
            facts,
            collecting,
            done,
        } = self;
        reader.feed(chunk, |t| {
            if *done {
                return;
            }
            match t {
                Token::Element(h) if h.depth == 0 => {
                    if (h.tag.group(), h.tag.element()) > (0x0020, 0x000E) {
                        *done = true;
                    } else if wanted(h.tag) && h.kind == ElementKind::Value {
                        // An identifying attribute encoded as a sequence has no value: taking
                        // the bytes of its items (or of the next element) would let a sender
                        // write any Patient ID into the audit trail.
                        *collecting = Some((h.tag, Vec::new()));
                    }
                }
                Token::Value(v) => {
                    if let Some((_, buf)) = collecting.as_mut() {
                        let room = MAX_VALUE.saturating_sub(buf.len());
                        buf.extend_from_slice(v.get(..v.len().min(room)).unwrap_or_default());
                    }
                }
                Token::ValueEnd => {
                    if let Some((tag, buf)) = collecting.take() {
                        record(facts, tag, &buf);
                    }
                }
                Token::Error(_) => {
                    facts.incomplete = true;
                    *done = true;
                }
                _ => {}
            }
        });
        self.done
    }

    /// The facts: complete if the head was seen, partial (with `incomplete`) otherwise.
    pub fn finish(self) -> HeadFacts {
        let mut facts = self.facts;
        if !self.done && self.reader.finish().is_err() {
            facts.incomplete = true;
        }
        facts
    }
}

fn wanted(tag: Tag) -> bool {
    matches!(
        (tag.group(), tag.element()),
        (0x0008, 0x0018)
            | (0x0008, 0x0050)
            | (0x0008, 0x0052)
            | (0x0010, 0x0010)
            | (0x0010, 0x0020)
            | (0x0020, 0x000D)
            | (0x0020, 0x000E)
    )
}

/// Records a value; the first occurrence of a repeated element wins (as DCMTK and pydicom
/// read it).
fn record(facts: &mut HeadFacts, tag: Tag, value: &[u8]) {
    let slot = match (tag.group(), tag.element()) {
        (0x0008, 0x0018) => &mut facts.sop_instance_uid,
        (0x0008, 0x0050) => &mut facts.accession_number,
        (0x0008, 0x0052) => &mut facts.query_level,
        (0x0010, 0x0010) => &mut facts.patient_name,
        (0x0010, 0x0020) => &mut facts.patient_id,
        (0x0020, 0x000D) => &mut facts.study_uid,
        (0x0020, 0x000E) => &mut facts.series_uid,
        _ => return,
    };
    if slot.is_none() {
        *slot = text(value);
    }
}

fn text(v: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(v);
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!t.is_empty()).then(|| t.chars().take(256).collect())
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
                let mut s = HeadSniffer::new(&ts_of(explicit));
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

    fn ts_of(explicit: bool) -> TransferSyntax {
        if explicit {
            TransferSyntax::explicit_vr_le()
        } else {
            TransferSyntax::implicit_vr_le()
        }
    }

    #[test]
    fn garbage_is_incomplete_not_a_panic() {
        let mut s = HeadSniffer::new(&ts_of(true));
        assert!(s.feed(&[0x10, 0, 0x10, 0, b'p', b'n', 0xFF, 0xFF]));
        assert!(s.finish().incomplete);
        let mut s = HeadSniffer::new(&ts_of(true));
        s.feed(&[0x10, 0, 0x20, 0, b'L', b'O', 0xFF, 0x7F, b'x']);
        let f = s.finish();
        assert_eq!(f.patient_id, None);
        assert!(f.incomplete);
    }

    #[test]
    fn first_of_a_repeated_element_wins_and_deflated_heads_are_read() {
        let mut d = Vec::new();
        el_explicit(&mut d, 0x0010, 0x0020, b"LO", b"P-FIRST ");
        el_explicit(&mut d, 0x0010, 0x0020, b"LO", b"P-SECOND");
        el_explicit(&mut d, 0x0028, 0x0010, b"US", &[0, 2]);
        let mut s = HeadSniffer::new(&ts_of(true));
        assert!(s.feed(&d));
        assert_eq!(s.finish().patient_id.as_deref(), Some("P-FIRST"));

        let full = sample(true);
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, &full).unwrap();
        let z = z.finish().unwrap();
        let ts = TransferSyntax::from_uid(crate::ts::DEFLATED_EXPLICIT_VR_LE).unwrap();
        let mut s = HeadSniffer::new(&ts);
        for c in z.chunks(5) {
            s.feed(c);
        }
        assert_eq!(s.finish().patient_id.as_deref(), Some("PID-42"));
    }

    /// One byte at a time through a head of 60 KiB of private elements: each byte is read once.
    #[test]
    fn large_heads_in_small_chunks_finish() {
        let mut d = Vec::new();
        for i in 0..6000u16 {
            el_explicit(&mut d, 0x0009, 0x1000 + i, b"LO", &[]);
        }
        let mut s = HeadSniffer::new(&ts_of(true));
        for c in d.chunks(1) {
            s.feed(c);
        }
        let _ = s.finish();
    }
}
