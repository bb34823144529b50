//! The streaming form: any chunking gives the same bytes; pixel data (native and
//! encapsulated) passes through untouched; elements after it are transformed; the head is
//! capped; truncation, burned-in annotation and deflate are refused with the right status.

mod common;

use std::io::Read;
use std::sync::Arc;

use common::*;
use dicom_core::header::Header;
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use radguard_deid::part10::read_meta;
use radguard_deid::profile::BurnedInPolicy;
use radguard_deid::{DeidError, DeidOption, Deidentifier, Profile, ProfileName, StreamDeid};

const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const SOP_UID: &str = "1.2.826.0.1.3680043.2.1125.7.1";

fn ct(extra: Vec<dicom_core::DataElement<InMemDicomObject>>) -> InMemDicomObject {
    let pixels: Vec<u8> = (0..64 * 64 * 2).map(|i| (i * 7 % 251) as u8).collect();
    let mut v = vec![
        el(Tag(0x0008, 0x0016), VR::UI, CT_IMAGE),
        el(Tag(0x0008, 0x0018), VR::UI, SOP_UID),
        el(Tag(0x0008, 0x0060), VR::CS, "CT"),
        el(Tag(0x0010, 0x0010), VR::PN, "DOE^JANE"),
        el(Tag(0x0010, 0x0020), VR::LO, "PID-4711"),
        el(Tag(0x0010, 0x0030), VR::DA, "19700102"),
        el(Tag(0x0008, 0x1030), VR::LO, "CT for Jane DOE"),
        el(
            Tag(0x0020, 0x000D),
            VR::UI,
            "1.2.826.0.1.3680043.2.1125.7.2",
        ),
        el(
            Tag(0x0028, 0x0010),
            VR::US,
            dicom_core::PrimitiveValue::U16([64u16].as_slice().into()),
        ),
        el(
            Tag(0x0028, 0x0011),
            VR::US,
            dicom_core::PrimitiveValue::U16([64u16].as_slice().into()),
        ),
        el(Tag(0x0009, 0x0010), VR::LO, "ACME"),
        el(Tag(0x0009, 0x1001), VR::LO, "private phi DOE"),
        el(
            PIXEL_DATA,
            VR::OW,
            dicom_core::PrimitiveValue::U8(pixels.into()),
        ),
    ];
    v.extend(extra);
    InMemDicomObject::from_element_iter(v)
}

/// The data set bytes of a Part 10 file (after the meta group).
fn dataset(part10: &[u8]) -> (String, Vec<u8>) {
    let mut c = std::io::Cursor::new(part10);
    let (meta, mut first) = read_meta(&mut c).unwrap();
    c.read_to_end(&mut first).unwrap();
    (meta.transfer_syntax.uid().to_string(), first)
}

fn stream_all(
    deid: &Arc<Deidentifier>,
    ts: &str,
    data: &[u8],
    chunk: usize,
) -> Result<(Vec<u8>, radguard_deid::Outcome), DeidError> {
    let mut s = StreamDeid::new(Arc::clone(deid), ts)?;
    let mut out = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        s.push(c, &mut out)?;
    }
    let o = s.finish(&mut out)?;
    Ok((out, o))
}

fn pixel_value_offset(data: &[u8], explicit: bool) -> usize {
    // The last occurrence of the pixel data tag starts its header.
    let at = data
        .windows(4)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00] || w == [0x7F, 0xE0, 0x00, 0x10])
        .expect("pixel data tag");
    at + if explicit { 12 } else { 8 }
}

#[test]
fn any_chunking_gives_the_same_bytes_and_pixels_pass_untouched() {
    for ts in [EXPLICIT_LE, "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"] {
        let (ts, data) = dataset(&to_part10(ct(vec![]), ts));
        let d = deid(&[]);
        let (whole, outcome) = stream_all(&d, &ts, &data, data.len()).unwrap();
        for chunk in [1usize, 3, 7, 64, 1000, 4096] {
            let (out, _) = stream_all(&d, &ts, &data, chunk).unwrap();
            assert_eq!(out, whole, "{ts} chunk {chunk}");
        }
        let explicit = ts != "1.2.840.10008.1.2";
        let pin = pixel_value_offset(&data, explicit);
        let pout = pixel_value_offset(&whole, explicit);
        assert_eq!(&data[pin..], &whole[pout..], "{ts}: pixel data bytes");
        assert!(outcome.had_pixel_data);
        assert_eq!(outcome.bytes_in, data.len() as u64);
        assert_eq!(outcome.bytes_out, whole.len() as u64);
        // The head was rewritten: no patient name, no private element, markers set.
        let head = &whole[..pout];
        assert!(!head.windows(8).any(|w| w == b"DOE^JANE"), "{ts}");
        assert!(!head.windows(4).any(|w| w == b"ACME"), "{ts}");
        assert!(head.windows(3).any(|w| w == b"YES"), "{ts}");
        // The command's UID mapping matches the data set's new SOP Instance UID.
        assert_eq!(
            outcome.report.sop_instance_uid.as_deref(),
            Some(d.map_uid(SOP_UID).as_str())
        );
    }
}

fn encapsulated(tail: bool) -> Vec<u8> {
    let (_, mut data) = dataset(&to_part10(
        InMemDicomObject::from_element_iter(
            ct(vec![]).into_iter().filter(|e| e.tag() != PIXEL_DATA),
        ),
        EXPLICIT_LE,
    ));
    let item = |out: &mut Vec<u8>, e: u16, len: u32| {
        out.extend_from_slice(&0xFFFEu16.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    };
    data.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    item(&mut data, 0xE000, 0);
    item(&mut data, 0xE000, 6);
    data.extend_from_slice(b"\xFF\xD8JPG1");
    item(&mut data, 0xE000, 4);
    data.extend_from_slice(b"JPG2");
    item(&mut data, 0xE0DD, 0);
    if tail {
        // Data Set Trailing Padding after the pixel data (Table E.1-1: X).
        data.extend_from_slice(&[
            0xFC, 0xFF, 0xFC, 0xFF, b'O', b'B', 0, 0, 4, 0, 0, 0, 0, 0, 0, 0,
        ]);
    }
    data
}

#[test]
fn encapsulated_fragments_pass_and_the_tail_is_transformed() {
    let data = encapsulated(true);
    let d = deid(&[]);
    let ts = "1.2.840.10008.1.2.4.50";
    let (whole, _) = stream_all(&d, ts, &data, data.len()).unwrap();
    for chunk in [1usize, 5, 9, 13, 100] {
        assert_eq!(
            stream_all(&d, ts, &data, chunk).unwrap().0,
            whole,
            "chunk {chunk}"
        );
    }
    let pin = pixel_value_offset(&data, true) - 12;
    let pout = pixel_value_offset(&whole, true) - 12;
    let frag_len = 12 + 8 + 14 + 12 + 8;
    assert_eq!(&data[pin..pin + frag_len], &whole[pout..pout + frag_len]);
    assert_eq!(
        whole.len(),
        pout + frag_len,
        "the trailing padding was removed"
    );
    // dicom-object reads the result.
    let mut file = radguard_dicom::part10::write_head(CT_IMAGE, "2.25.1", ts);
    file.extend_from_slice(&whole);
    let obj = read(&file);
    assert_eq!(
        obj.element(PIXEL_DATA).unwrap().fragments().unwrap().len(),
        2
    );
}

#[test]
fn truncated_pixel_data_and_bad_fragments_fail() {
    let data = encapsulated(false);
    let d = deid(&[]);
    let ts = "1.2.840.10008.1.2.4.50";
    let cut = &data[..data.len() - 10];
    assert!(matches!(
        stream_all(&d, ts, cut, 64),
        Err(DeidError::TruncatedPixelData)
    ));
    let mut bad = data.clone();
    let n = bad.len();
    bad[n - 5] = 0x00; // the sequence delimiter becomes (FFFE,00DD)
    let e = stream_all(&d, ts, &bad, 64).unwrap_err();
    assert!(matches!(e, DeidError::BadFragments(_)), "{e}");
    assert_eq!(e.dimse_status(), 0xC000);
}

#[test]
fn head_is_capped() {
    let big = "A".repeat(60_000);
    let obj = ct(vec![el(Tag(0x0010, 0x4000), VR::LT, big.as_str())]);
    let (ts, data) = dataset(&to_part10(obj, EXPLICIT_LE));
    let d = deid(&[]);
    let mut s = StreamDeid::new(Arc::clone(&d), &ts)
        .unwrap()
        .with_cap(16 * 1024);
    let mut out = Vec::new();
    let mut err = None;
    for c in data.chunks(1024) {
        if let Err(e) = s.push(c, &mut out) {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("cap enforced");
    assert!(matches!(e, DeidError::HeadTooLarge { cap: 16384 }), "{e}");
    assert_eq!(e.dimse_status(), 0xA700);
    assert!(
        out.is_empty(),
        "nothing emitted before the head is complete"
    );
}

#[test]
fn burned_in_is_refused_unless_allowed() {
    let obj = ct(vec![el(Tag(0x0028, 0x0301), VR::CS, "YES")]);
    let (ts, data) = dataset(&to_part10(obj, EXPLICIT_LE));
    let e = stream_all(&deid(&[]), &ts, &data, 4096).unwrap_err();
    assert!(matches!(e, DeidError::BurnedIn { .. }), "{e}");
    assert_eq!(e.dimse_status(), 0x0124);
    let allow = Arc::new(Deidentifier::new(
        Profile::new(ProfileName::Basic, [])
            .unwrap()
            .with_burned_in(BurnedInPolicy::Allow),
        key(),
    ));
    let (_, o) = stream_all(&allow, &ts, &data, 4096).unwrap();
    assert!(o.report.burned_in_allowed.is_some());
    // A secondary capture is refused by its class alone.
    let sc = InMemDicomObject::from_element_iter(ct(vec![]).into_iter().map(|e| {
        if e.tag() == Tag(0x0008, 0x0016) {
            el(Tag(0x0008, 0x0016), VR::UI, "1.2.840.10008.5.1.4.1.1.7")
        } else {
            e
        }
    }));
    let (ts, data) = dataset(&to_part10(sc, EXPLICIT_LE));
    assert!(matches!(
        stream_all(&deid(&[]), &ts, &data, 4096),
        Err(DeidError::BurnedIn { .. })
    ));
}

#[test]
fn deflate_and_unknown_syntaxes_are_refused_in_streams() {
    let d = deid(&[]);
    assert!(matches!(
        StreamDeid::new(Arc::clone(&d), "1.2.840.10008.1.2.1.99"),
        Err(DeidError::UnsupportedTransferSyntax(_))
    ));
    assert!(matches!(
        StreamDeid::new(d, "1.3.6.1.4.1.99.1"),
        Err(DeidError::UnsupportedTransferSyntax(_))
    ));
}

#[test]
fn dates_shift_per_patient_and_uids_stay_consistent() {
    let d = deid(&[DeidOption::RetainLongModifiedDates]);
    let mk = |sop: &str, pid: &str| {
        let obj = InMemDicomObject::from_element_iter(
            ct(vec![])
                .into_iter()
                .map(|e| match e.tag() {
                    Tag(0x0008, 0x0018) => el(Tag(0x0008, 0x0018), VR::UI, sop),
                    Tag(0x0010, 0x0020) => el(Tag(0x0010, 0x0020), VR::LO, pid),
                    _ => e,
                })
                .chain([el(Tag(0x0008, 0x0020), VR::DA, "20240301")]),
        );
        let (ts, data) = dataset(&to_part10(obj, EXPLICIT_LE));
        let (out, o) = stream_all(&d, &ts, &data, 512).unwrap();
        let mut f = radguard_dicom::part10::write_head(CT_IMAGE, "2.25.1", &ts);
        f.extend_from_slice(&out);
        (read(&f), o)
    };
    let (a, oa) = mk("1.2.3.1", "PID-1");
    let (b, _) = mk("1.2.3.2", "PID-1");
    let (c, _) = mk("1.2.3.3", "PID-2");
    let date = |o: &dicom_object::DefaultDicomObject| {
        o.element(Tag(0x0008, 0x0020))
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .to_string()
    };
    let study = |o: &dicom_object::DefaultDicomObject| {
        o.element(Tag(0x0020, 0x000D))
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    assert_eq!(date(&a), date(&b), "same patient, same shift");
    assert_ne!(date(&a), "20240301");
    assert_eq!(study(&a), study(&b));
    assert_eq!(
        study(&a),
        study(&c),
        "same original study UID, same new UID"
    );
    assert!(oa.report.date_shift_days.is_some());
    assert_eq!(
        a.element(Tag(0x0028, 0x0303))
            .unwrap()
            .to_str()
            .unwrap()
            .trim(),
        "MODIFIED"
    );
    let _ = c;
}

/// The bytes of the explicit VR LE element `tag` in `data` (first occurrence), and where.
fn find_element(data: &[u8], tag: Tag, value: &[u8]) -> (usize, Vec<u8>) {
    let mut needle = Vec::new();
    needle.extend_from_slice(&tag.group().to_le_bytes());
    needle.extend_from_slice(&tag.element().to_le_bytes());
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("element present");
    let len = 8 + value.len();
    assert_eq!(&data[at + 8..at + len], value);
    (at, data[at..at + len].to_vec())
}

#[test]
fn a_repeated_or_misplaced_patient_id_is_refused_not_passed() {
    // A second Patient ID right after the first: a lookup finds one, the archive may show the
    // other. Neither may leave unseen (PS3.5 §7.1: each tag once, in ascending order).
    let (ts, data) = dataset(&to_part10(ct(vec![]), EXPLICIT_LE));
    let (at, pid) = find_element(&data, Tag(0x0010, 0x0020), b"PID-4711");
    let mut twice = data.clone();
    twice.splice(at + pid.len()..at + pid.len(), pid.iter().copied());
    let d = deid(&[]);
    for chunk in [1, 100, twice.len()] {
        let e = stream_all(&d, &ts, &twice, chunk).unwrap_err();
        assert!(
            e.to_string().contains("appears twice"),
            "chunk {chunk}: {e}"
        );
        assert_eq!(e.dimse_status(), 0xC000);
    }
    // The same element moved after (0020,000D): out of order.
    let (sat, study) = find_element(
        &data,
        Tag(0x0020, 0x000D),
        b"1.2.826.0.1.3680043.2.1125.7.2",
    );
    let mut moved = data.clone();
    moved.splice(sat + study.len()..sat + study.len(), pid.iter().copied());
    moved.drain(at..at + pid.len());
    let e = stream_all(&d, &ts, &moved, 64).unwrap_err();
    assert!(e.to_string().contains("out of order"), "{e}");
}

#[test]
fn a_standard_sequence_sent_as_un_is_de_identified() {
    // (0008,1140) Referenced Image Sequence as UN of defined length (implicit VR LE inside,
    // PS3.5 §6.2.2), holding a referenced SOP Instance UID that must be replaced.
    let (ts, data) = dataset(&to_part10(ct(vec![]), EXPLICIT_LE));
    let uid = b"1.2.826.0.1.3680043.2.1125.7.99";
    let mut inner = Vec::new();
    inner.extend_from_slice(&[0x08, 0x00, 0x55, 0x11]);
    inner.extend_from_slice(&32u32.to_le_bytes());
    inner.extend_from_slice(uid);
    inner.push(0);
    let mut value = vec![0xFE, 0xFF, 0x00, 0xE0];
    value.extend_from_slice(&(inner.len() as u32).to_le_bytes());
    value.extend_from_slice(&inner);
    let mut un = vec![0x08, 0x00, 0x40, 0x11, b'U', b'N', 0, 0];
    un.extend_from_slice(&(value.len() as u32).to_le_bytes());
    un.extend_from_slice(&value);
    // After (0008,1030), before the private (0009,0010).
    let (at, _) = find_element(&data, Tag(0x0009, 0x0010), b"ACME");
    let mut input = data.clone();
    input.splice(at..at, un);
    let d = deid(&[]);
    let (out, _) = stream_all(&d, &ts, &input, 77).unwrap();
    assert!(
        !out.windows(uid.len()).any(|w| w == uid),
        "original UID left"
    );
    let new_uid = d.map_uid(std::str::from_utf8(uid).unwrap());
    assert!(
        out.windows(new_uid.len()).any(|w| w == new_uid.as_bytes()),
        "the reference was replaced, not dropped"
    );
    let mut file = radguard_dicom::part10::write_head(CT_IMAGE, "2.25.1", &ts);
    file.extend_from_slice(&out);
    let obj = read(&file);
    let seq = obj.element(Tag(0x0008, 0x1140)).unwrap();
    assert_eq!(seq.vr(), VR::SQ);
}

#[test]
fn the_head_cap_is_exact_whatever_the_chunking() {
    let (ts, data) = dataset(&to_part10(ct(vec![]), EXPLICIT_LE));
    let head = pixel_value_offset(&data, true) - 12;
    let d = deid(&[]);
    let run = |cap: usize, chunk: usize| {
        let mut s = StreamDeid::new(Arc::clone(&d), &ts).unwrap().with_cap(cap);
        let mut out = Vec::new();
        for c in data.chunks(chunk) {
            s.push(c, &mut out)?;
        }
        s.finish(&mut out).map(|_| out)
    };
    for chunk in [1, 5, 12, 13, head - 3, head + 5, data.len()] {
        assert!(run(head, chunk).is_ok(), "chunk {chunk}");
        let e = run(head - 1, chunk).unwrap_err();
        assert!(
            matches!(e, DeidError::HeadTooLarge { .. }),
            "chunk {chunk}: {e}"
        );
    }
}

#[test]
fn the_pixel_data_header_passes_as_it_was_read() {
    // Non-zero reserved bytes in the pixel data header (PS3.5 §7.1.2 says 0000H; not ours
    // to fix): they pass through as they came, in any chunking.
    let (ts, mut data) = dataset(&to_part10(ct(vec![]), EXPLICIT_LE));
    let at = pixel_value_offset(&data, true) - 12;
    data[at + 6] = 0xAB;
    data[at + 7] = 0xCD;
    let d = deid(&[]);
    let (whole, _) = stream_all(&d, &ts, &data, data.len()).unwrap();
    let out_at = pixel_value_offset(&whole, true) - 12;
    assert_eq!(&whole[out_at..], &data[at..]);
    for chunk in [1, 7, 11] {
        assert_eq!(
            stream_all(&d, &ts, &data, chunk).unwrap().0,
            whole,
            "{chunk}"
        );
    }
}
