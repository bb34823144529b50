//! The data-set firewall in the gateway (`firewall = "strict" | "safe" | "log"` on a route,
//! default "safe"; the checks are `radguard_dicom::validate`): hand-built Explicit VR Little
//! Endian data sets over a raw association, against real peers.
//!
//! - the three motivating data sets (a repeated Patient ID, an item never closed, a Patient ID
//!   after group 0020) to DCMTK storescp and to Orthanc: each refused with 0xC000 and an Error
//!   Comment naming the check and the byte, a `malformed-data-set` alert, nothing stored, and a
//!   valid C-STORE right after on the same client association stored (the upstream association
//!   was aborted and opened again);
//! - one data set per check at the level that refuses it; the deviations `safe` tolerates pass
//!   at `safe`; `log` relays a refused-at-safe data set and says so;
//! - a vault route refuses a malformed data set and stores nothing of it;
//! - a C-FIND identifier with a repeated element is answered 0xC000 by the gateway and never
//!   reaches dcmqrscp.
//!
//! Expected checks are written here by name (from validate.rs and its unit tests); the byte
//! offsets come from running `radguard_dicom::validate::Validator` on the same bytes, so the
//! gateway must report exactly what the one grammar reports.
//!
//! Data sets of C-STOREs are sent in up to three fragments (one P-DATA each): the bytes before
//! the violation, a middle fragment holding it, and the last one, so the upstream has seen part
//! of the data set when the gateway finds the violation, and the answer can only come once the
//! client's last fragment arrived.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use common::raw::{self, Answer, Conn, Cv, Pc, Rq};
use common::*;
use radguard_dicom::dimse::Command;
use radguard_dicom::limits::Limits;
use radguard_dicom::ts::TransferSyntax;
use radguard_dicom::validate::{Level, Validator};
use serde_json::Value;

/// The calling AE of every association here.
const SCU: &str = "FWTEST";
/// UID root of this file's instances (hostile.rs uses …1234.7).
const ROOT: &str = "1.2.826.0.1.3680043.10.1234.8";
/// Presentation context ids: CT Image Storage and Study Root FIND, Explicit VR LE only.
const CT_CTX: u8 = 3;
const FIND_CTX: u8 = 5;
/// How long an answer may take (every expected answer comes at once).
const ANSWER: Duration = Duration::from_secs(30);
/// C-STORE-RSP / C-FIND-RSP status "Cannot understand".
const CANNOT_UNDERSTAND: u16 = 0xC000;

// ------------------------------------------------------------------------- data-set recipes

/// Long-form explicit VRs (PS3.5 Table 7.1-1: 2 reserved bytes and a 32-bit length).
fn long_form(vr: &[u8; 2]) -> bool {
    const LONG: [&[u8; 2]; 13] = [
        b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
    ];
    LONG.contains(&vr)
}

/// One Explicit VR Little Endian element, the value as given (no padding added).
fn ex(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + value.len());
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    if long_form(vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
    out
}

/// A UI value padded to even length with NUL.
fn ui(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

/// A text value padded to even length with a space.
fn text(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(b' ');
    }
    v
}

fn us(n: u16) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// One top-level element (or a whole sequence) of a data set being built.
#[derive(Clone)]
struct El {
    tag: (u16, u16),
    bytes: Vec<u8>,
}

fn el(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> El {
    El {
        tag: (group, elem),
        bytes: ex(group, elem, vr, value),
    }
}

/// A small CT (2 x 2 pixels of 16 bits) that every level accepts: ascending tags, each once,
/// dictionary VRs, even lengths, valid UIDs, Pixel Data as long as the image attributes say.
fn base(sop_instance: &str) -> Vec<El> {
    vec![
        el(0x0008, 0x0016, b"UI", &ui(raw::CT_STORAGE)),
        el(0x0008, 0x0018, b"UI", &ui(sop_instance)),
        el(0x0008, 0x0060, b"CS", &text("CT")),
        el(0x0010, 0x0010, b"PN", &text("FIREWALL^TEST")),
        el(0x0010, 0x0020, b"LO", &text("P-FIRST")),
        el(0x0020, 0x000D, b"UI", &ui(&format!("{ROOT}.1"))),
        el(0x0020, 0x000E, b"UI", &ui(&format!("{ROOT}.2"))),
        el(0x0020, 0x0013, b"IS", &text("1")),
        el(0x0028, 0x0002, b"US", &us(1)),
        el(0x0028, 0x0004, b"CS", &text("MONOCHROME2")),
        el(0x0028, 0x0010, b"US", &us(2)),
        el(0x0028, 0x0011, b"US", &us(2)),
        el(0x0028, 0x0100, b"US", &us(16)),
        el(0x0028, 0x0101, b"US", &us(16)),
        el(0x0028, 0x0102, b"US", &us(15)),
        el(0x0028, 0x0103, b"US", &us(0)),
        el(0x7FE0, 0x0010, b"OW", &[1, 0, 2, 0, 3, 0, 4, 0]),
    ]
}

fn encode(els: &[El]) -> Vec<u8> {
    els.iter().flat_map(|e| e.bytes.iter().copied()).collect()
}

fn position(els: &[El], tag: (u16, u16)) -> usize {
    els.iter()
        .position(|e| e.tag == tag)
        .unwrap_or_else(|| panic!("recipe: no element {tag:04X?} in the base data set"))
}

fn replace(els: &mut [El], tag: (u16, u16), bytes: Vec<u8>) {
    let i = position(els, tag);
    els[i].bytes = bytes;
}

fn insert_after(els: &mut Vec<El>, after: (u16, u16), e: El) {
    let i = position(els, after);
    els.insert(i + 1, e);
}

/// The valid data set.
fn valid(sop: &str) -> Vec<u8> {
    encode(&base(sop))
}

/// (0010,0020) twice, "P-FIRST" then "P-SECOND".
fn duplicate_patient_id(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    insert_after(
        &mut d,
        (0x0010, 0x0020),
        el(0x0010, 0x0020, b"LO", b"P-SECOND"),
    );
    encode(&d)
}

/// A private sequence of undefined length whose item (undefined length) is never closed: a
/// sequence delimiter where the item delimiter belongs; the data set goes on after it.
fn unclosed_item(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    insert_after(
        &mut d,
        (0x0008, 0x0060),
        el(0x0009, 0x0010, b"LO", b"RGTEST  "),
    );
    let mut sq = vec![
        0x09, 0x00, 0x10, 0x10, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    sq.extend(ex(0x0009, 0x1011, b"LO", b"XY"));
    sq.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    insert_after(
        &mut d,
        (0x0009, 0x0010),
        El {
            tag: (0x0009, 0x1010),
            bytes: sq,
        },
    );
    encode(&d)
}

/// Patient ID after group 0020.
fn patient_id_after_0020(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    let i = position(&d, (0x0010, 0x0020));
    let pid = d.remove(i);
    insert_after(&mut d, (0x0020, 0x0013), pid);
    encode(&d)
}

/// A sequence whose item's content overruns the item's defined length.
fn length_past_item(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    let mut sq = vec![0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0];
    sq.extend_from_slice(&14u32.to_le_bytes());
    sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    sq.extend_from_slice(&6u32.to_le_bytes());
    sq.extend(ex(0x0008, 0x1150, b"UI", b"1.2\0"));
    insert_after(
        &mut d,
        (0x0008, 0x0060),
        El {
            tag: (0x0008, 0x1140),
            bytes: sq,
        },
    );
    encode(&d)
}

/// 40 nested sequences (the gateway's limit is 32).
fn too_deep(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    let mut sq = Vec::new();
    for _ in 0..40 {
        sq.extend_from_slice(&[
            0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    insert_after(
        &mut d,
        (0x0008, 0x0060),
        El {
            tag: (0x0008, 0x1140),
            bytes: sq,
        },
    );
    encode(&d)
}

/// The data set ends 4 bytes before the end of Pixel Data.
fn truncated(sop: &str) -> Vec<u8> {
    let mut d = valid(sop);
    d.truncate(d.len() - 4);
    d
}

/// Patient Name and Patient ID of odd length (3 each: the data set's length stays even).
fn odd_length(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    replace(&mut d, (0x0010, 0x0010), ex(0x0010, 0x0010, b"PN", b"A^B"));
    replace(&mut d, (0x0010, 0x0020), ex(0x0010, 0x0020, b"LO", b"P1X"));
    encode(&d)
}

/// Pixel Data's header with non-zero reserved bytes.
fn reserved_bytes(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    let mut px = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 8];
    px.extend_from_slice(&8u32.to_le_bytes());
    px.extend_from_slice(&[1, 0, 2, 0, 3, 0, 4, 0]);
    replace(&mut d, (0x7FE0, 0x0010), px);
    encode(&d)
}

/// An item delimiter with length 4.
fn delimiter_length(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    let mut sq = vec![
        0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    sq.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 4, 0, 0, 0]);
    sq.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    insert_after(
        &mut d,
        (0x0008, 0x0060),
        El {
            tag: (0x0008, 0x1140),
            bytes: sq,
        },
    );
    encode(&d)
}

/// Instance Number (IS, text) as a UL (a binary number): type confusion.
fn vr_confusion(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    replace(
        &mut d,
        (0x0020, 0x0013),
        ex(0x0020, 0x0013, b"UL", &1u32.to_le_bytes()),
    );
    encode(&d)
}

/// Patient ID (LO) as SH: text for text.
fn vr_variant(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    replace(
        &mut d,
        (0x0010, 0x0020),
        ex(0x0010, 0x0020, b"SH", b"P-FIRST "),
    );
    encode(&d)
}

/// Single Collimation Width (FD) of 6 bytes (not a multiple of 8; even, so that the data set
/// stays even).
fn value_length(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    insert_after(
        &mut d,
        (0x0010, 0x0020),
        el(0x0018, 0x9306, b"FD", &[0, 0, 0, 0, 0xF0, 0x3F]),
    );
    encode(&d)
}

/// Series Instance UID "1.2a.3" (a letter in a UID).
fn bad_uid(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    replace(
        &mut d,
        (0x0020, 0x000E),
        ex(0x0020, 0x000E, b"UI", b"1.2a.3"),
    );
    encode(&d)
}

/// Series Instance UID "1.02.3" (a component with a leading zero: older devices' roots).
fn uid_leading_zero(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    replace(
        &mut d,
        (0x0020, 0x000E),
        ex(0x0020, 0x000E, b"UI", b"1.02.3"),
    );
    encode(&d)
}

/// Number of Frames (IS) "1A".
fn frames_not_a_number(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    insert_after(&mut d, (0x0028, 0x0004), el(0x0028, 0x0008, b"IS", b"1A"));
    encode(&d)
}

/// Pixel Data of 6 bytes where 2 x 2 x 16 bits need 8.
fn pixel_short(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    replace(&mut d, (0x7FE0, 0x0010), ex(0x7FE0, 0x0010, b"OW", &[0; 6]));
    encode(&d)
}

/// Pixel Data of 64 bytes where 8 are needed.
fn pixel_excess(sop: &str) -> Vec<u8> {
    let mut d = base(sop);
    replace(
        &mut d,
        (0x7FE0, 0x0010),
        ex(0x7FE0, 0x0010, b"OW", &[0; 64]),
    );
    encode(&d)
}

type Recipe = fn(&str) -> Vec<u8>;

/// A malformed data set and the check validate.rs names for it.
struct Bad {
    what: &'static str,
    check: &'static str,
    build: Recipe,
}

/// The three data sets of the firewall's motivation.
fn motivating() -> Vec<Bad> {
    vec![
        Bad {
            what: "Patient ID twice (P-FIRST, P-SECOND)",
            check: "duplicate",
            build: duplicate_patient_id,
        },
        Bad {
            what: "private sequence whose item is never closed",
            check: "structure",
            build: unclosed_item,
        },
        Bad {
            what: "Patient ID after group 0020",
            check: "order",
            build: patient_id_after_0020,
        },
    ]
}

/// One data set per check: (level that refuses it, check, what, recipe). The deviations
/// `safe` tolerates are refused at `strict`.
#[rustfmt::skip]
const PER_CHECK: [(Level, &str, &str, Recipe); 17] = [
    (Level::Safe, "structure", "item never closed", unclosed_item),
    (Level::Safe, "order", "Patient ID after group 0020", patient_id_after_0020),
    (Level::Safe, "duplicate", "Patient ID twice", duplicate_patient_id),
    (Level::Safe, "length", "item content past the item's length", length_past_item),
    (Level::Safe, "depth", "40 nested sequences", too_deep),
    (Level::Safe, "truncated", "data set cut inside Pixel Data", truncated),
    (Level::Safe, "reserved-bytes", "reserved bytes 00 08 in Pixel Data's header", reserved_bytes),
    (Level::Safe, "delimiter-length", "item delimiter of length 4", delimiter_length),
    (Level::Safe, "vr-confusion", "Instance Number (IS) as UL", vr_confusion),
    (Level::Safe, "value-length", "Single Collimation Width (FD) of 6 bytes", value_length),
    (Level::Safe, "uid", "Series Instance UID 1.2a.3", bad_uid),
    (Level::Safe, "image-attribute", "Number of Frames 1A", frames_not_a_number),
    (Level::Safe, "pixel-length", "Pixel Data of 6 bytes for 8", pixel_short),
    (Level::Strict, "odd-length", "Patient Name and ID of 3 bytes", odd_length),
    (Level::Strict, "vr-variant", "Patient ID (LO) as SH", vr_variant),
    (Level::Strict, "pixel-excess", "Pixel Data of 64 bytes for 8", pixel_excess),
    (Level::Strict, "uid-leading-zero", "Series Instance UID 1.02.3", uid_leading_zero),
];

fn per_check() -> Vec<(Level, Bad)> {
    PER_CHECK
        .iter()
        .map(|&(level, check, what, build)| (level, Bad { what, check, build }))
        .collect()
}

/// What the one grammar's firewall refuses in `data` at `level`: (check name, byte offset).
fn validator_says(data: &[u8], level: Level, limits: Limits) -> Option<(&'static str, u64)> {
    let mut v = Validator::new(&TransferSyntax::explicit_vr_le(), limits, level);
    v.feed(data);
    v.finish().refusal.map(|r| (r.check.name(), r.offset))
}

/// The check and offset the gateway must report for `bad` at `level` (asserting that the
/// recipe is what its name says).
fn expected(bad: &Bad, data: &[u8], level: Level) -> (&'static str, u64) {
    match validator_says(data, level, Limits::GATEWAY) {
        Some((check, off)) if check == bad.check => (check, off),
        other => panic!(
            "recipe {:?}: expected the {} check at {level:?}, validate.rs says {other:?}",
            bad.what, bad.check
        ),
    }
}

fn comment(check: &str, offset: u64) -> String {
    format!("Radguard firewall: {check} at byte {offset}")
}

// ---------------------------------------------------------------------------- raw client

/// An association to `called` with Verification (1), CT Image Storage (3) and Study Root FIND
/// (5), the two DIMSE contexts in Explicit VR Little Endian only.
fn associate(port: u16, called: &str) -> Conn {
    let mut c = Conn::connect(port);
    let rq = Rq::new(SCU, called).contexts(vec![
        Pc::new(1, raw::VERIFICATION, &[raw::IMPLICIT_LE]),
        Pc::new(CT_CTX, raw::CT_STORAGE, &[raw::EXPLICIT_LE]),
        Pc::new(FIND_CTX, uid::STUDY_ROOT_FIND, &[raw::EXPLICIT_LE]),
    ]);
    let ac = c
        .associate(&rq)
        .unwrap_or_else(|a| panic!("association to {called} not accepted: {a}"));
    let ct = ac.results.iter().find(|r| r.0 == CT_CTX);
    assert!(
        matches!(ct, Some((_, 0, ts)) if ts == raw::EXPLICIT_LE),
        "CT Image Storage in Explicit VR LE not accepted by {called}: {ac:?}"
    );
    c
}

/// Where to cut a data set: the bytes before `violation`, a middle fragment holding it, the
/// rest (whichever are not empty; a violation at the very start or end is cut in the middle).
/// Every cut is at an even offset: DCMTK refuses a PDV fragment of odd length ("DIMSE: Odd
/// Fragment Length"), so every recipe has an even total length too.
fn fragments(data: &[u8], violation: Option<u64>) -> Vec<&[u8]> {
    let len = data.len();
    let even = |n: usize| n & !1;
    let p1 = match violation.and_then(|o| usize::try_from(o).ok()).map(even) {
        Some(o) if (1..len).contains(&o) => o,
        _ => even(len / 2),
    };
    let p2 = p1 + even((len - p1) / 2);
    [&data[..p1], &data[p1..p2], &data[p2..]]
        .into_iter()
        .filter(|f| !f.is_empty())
        .collect()
}

/// Sends a C-STORE (command, then the data set in the given fragments, one P-DATA each) and
/// reads its response.
fn store(c: &mut Conn, id: u16, sop: &str, frags: &[&[u8]]) -> Result<Command, String> {
    let cmd = raw::store_rq(id, raw::CT_STORAGE, sop);
    c.send(&raw::pdata(&[(CT_CTX, raw::CMD_LAST, &cmd)]))
        .map_err(|e| format!("send C-STORE-RQ {id}: {e}"))?;
    for (i, f) in frags.iter().enumerate() {
        let control = if i + 1 == frags.len() {
            raw::DATA_LAST
        } else {
            raw::DATA_MORE
        };
        c.send(&raw::pdata(&[(CT_CTX, control, f)]))
            .map_err(|e| format!("send fragment {i} of C-STORE {id}: {e}"))?;
    }
    response(c, id)
}

/// Reads one response to message `id`.
fn response(c: &mut Conn, id: u16) -> Result<Command, String> {
    let a = c.read_pdu(ANSWER);
    let cmd = match &a {
        Answer::Pdu(b) if b.first() == Some(&0x04) => raw::response_of(b),
        _ => None,
    }
    .ok_or_else(|| format!("message {id}: got {a} instead of a response"))?;
    if cmd.responded_to != Some(id) {
        return Err(format!(
            "message {id}: the response answers {:?}: {cmd:?}",
            cmd.responded_to
        ));
    }
    Ok(cmd)
}

/// The C-STORE-RSP of a refused data set: 0xC000 and the Error Comment, else what differs.
fn refusal_problem(cmd: &Command, check: &str, offset: u64) -> Option<String> {
    let want = comment(check, offset);
    (cmd.field != Some(0x8001)
        || cmd.status != Some(CANNOT_UNDERSTAND)
        || cmd.error_comment.as_deref() != Some(want.as_str()))
    .then(|| {
        format!(
            "expected C-STORE-RSP 0xC000 with Error Comment {want:?}; got field {:04X?} status \
             {:04X?} Error Comment {:?}",
            cmd.field, cmd.status, cmd.error_comment
        )
    })
}

fn release(mut c: Conn) {
    c.send(&raw::RELEASE_RQ).expect("send A-RELEASE-RQ");
    let a = c.read_pdu(ANSWER);
    assert_eq!(a.pdu_type(), Some(0x06), "release answered with {a}");
}

// ------------------------------------------------------------------------------- oracles

/// Whether storescp kept a file for this SOP instance (`CT.<uid>.dcm`, or any name holding
/// `<uid>.`).
fn stored_by(files: &[PathBuf], sop: &str) -> bool {
    let needle = format!("{sop}.");
    files.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(&needle))
    })
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

fn is_firewall_alert(e: &Value, needle: &str) -> bool {
    e["event"] == "security-alert"
        && e["kind"] == "malformed-data-set"
        && e["detail"].as_str().is_some_and(|d| d.contains(needle))
}

/// Waits (up to 10 s) for a `malformed-data-set` security alert whose detail contains `needle`.
fn wait_firewall_alert(rg: &Radguard, needle: &str) -> Result<Value, String> {
    let mut got = None;
    wait_until(Duration::from_secs(10), || {
        got = rg
            .events()
            .into_iter()
            .find(|e| is_firewall_alert(e, needle));
        got.is_some()
    });
    got.ok_or_else(|| {
        let alerts: Vec<Value> = rg
            .events()
            .into_iter()
            .filter(|e| e["event"] == "security-alert")
            .collect();
        format!("no malformed-data-set alert with {needle:?} in its detail; alerts: {alerts:#?}")
    })
}

/// The alert for a refusal: "<check> check failed at byte <offset>".
fn wait_refusal_alert(rg: &Radguard, check: &str, offset: u64) -> Result<Value, String> {
    wait_firewall_alert(rg, &format!("{check} check failed at byte {offset}"))
}

/// Waits for a `dimse-refused` event with status 0xC000 for message `id`.
fn wait_dimse_refused(rg: &Radguard, id: u16) -> Result<(), String> {
    let ok = wait_until(Duration::from_secs(10), || {
        rg.events().iter().any(|e| {
            e["event"] == "dimse-refused"
                && e["status"] == u64::from(CANNOT_UNDERSTAND)
                && e["message_id"] == u64::from(id)
        })
    });
    if ok {
        Ok(())
    } else {
        let refused: Vec<Value> = rg
            .events()
            .into_iter()
            .filter(|e| e["event"] == "dimse-refused")
            .collect();
        Err(format!(
            "no dimse-refused event with status 49152 for message {id}: {refused:#?}"
        ))
    }
}

fn config_with(routes: impl FnOnce(Config) -> Config) -> String {
    routes(Config::new().peer(
        "fw",
        &[SCU],
        &["127.0.0.1/32"],
        &["echo", "store", "find"],
        &["*"],
        &[],
    ))
    .toml()
}

// --------------------------------------------------------------------------------- tests

/// The recipes are what their names say, by the one grammar's own validator: the base data set
/// passes every level with nothing found, each malformed one is refused by the check named at
/// its level, the tolerated ones pass `safe`. (No gateway: if this fails, fix the recipes.)
#[test]
fn recipes_are_what_validate_rs_says() {
    let sop = format!("{ROOT}.9.1");
    let v = valid(&sop);
    for level in [Level::Strict, Level::Safe, Level::Log] {
        assert_eq!(
            validator_says(&v, level, Limits::GATEWAY),
            None,
            "{level:?}"
        );
    }
    let mut vv = Validator::new(
        &TransferSyntax::explicit_vr_le(),
        Limits::GATEWAY,
        Level::Strict,
    );
    vv.feed(&v);
    let o = vv.finish();
    assert!(o.found.is_empty(), "the base data set: {:?}", o.found);
    for bad in motivating() {
        let d = (bad.build)(&sop);
        assert_eq!(d.len() % 2, 0, "{}: odd total length", bad.what);
        expected(&bad, &d, Level::Safe);
        assert_eq!(validator_says(&d, Level::Log, Limits::GATEWAY), None);
    }
    for (level, bad) in per_check() {
        let d = (bad.build)(&sop);
        assert_eq!(d.len() % 2, 0, "{}: odd total length", bad.what);
        expected(&bad, &d, level);
        if level == Level::Strict {
            assert_eq!(
                validator_says(&d, Level::Safe, Limits::GATEWAY),
                None,
                "{} passes safe",
                bad.what
            );
        }
    }
    let id = find_identifier(true);
    assert_eq!(
        validator_says(&id, Level::Safe, Limits::QUERY).map(|r| r.0),
        Some("duplicate")
    );
    assert_eq!(
        validator_says(&find_identifier(false), Level::Strict, Limits::QUERY),
        None
    );
}

/// The oracle of the storescp tests, on the direct path (no radguard): storescp keeps nothing of
/// a C-STORE whose association is aborted in the middle of its data set. (If this fails, fix
/// the environment, not the gateway.)
#[test]
fn direct_storescp_keeps_nothing_of_an_aborted_store() {
    let scp = StoreScp::start("ARCHIVE");
    let bad = format!("{ROOT}.0.1");
    let good = format!("{ROOT}.0.2");
    let mut c = associate(scp.port, "ARCHIVE");
    let d = valid(&bad);
    c.send(&raw::pdata(&[(
        CT_CTX,
        raw::CMD_LAST,
        &raw::store_rq(1, raw::CT_STORAGE, &bad),
    )]))
    .unwrap();
    c.send(&raw::pdata(&[(CT_CTX, raw::DATA_MORE, &d[..d.len() / 2])]))
        .unwrap();
    c.send(&raw::USER_ABORT).unwrap();
    drop(c);
    assert!(
        wait_until(Duration::from_secs(10), || scp
            .log()
            .contains("Association Aborted")),
        "storescp did not log the abort:\n{}",
        scp.log()
    );
    let mut c = associate(scp.port, "ARCHIVE");
    let cmd = store(&mut c, 2, &good, &[&valid(&good)]).unwrap();
    assert_eq!(cmd.status, Some(0), "{cmd:?}");
    release(c);
    let files = scp.files();
    assert!(stored_by(&files, &good), "{:?}", names(&files));
    assert_eq!(files.len(), 1, "storescp kept {:?}", names(&files));
}

/// Test 1: the three motivating data sets through a plain relay route (default level, safe) to
/// storescp, on one client association, each followed by a valid C-STORE on the same
/// association.
#[test]
fn motivating_cases_refused_before_storescp_and_the_association_goes_on() {
    let scp = StoreScp::start("ARCHIVE");
    let rg = Radguard::start_fresh(&config_with(|c| c.route("ARCHIVE", scp.port, "ARCHIVE")));
    let mut c = associate(rg.port(), "ARCHIVE");
    let mut problems = Vec::new();
    let mut refused = Vec::new();
    let mut good = Vec::new();
    for (i, bad) in motivating().iter().enumerate() {
        let n = i as u16;
        let bad_sop = format!("{ROOT}.1.{}", 2 * n + 1);
        let good_sop = format!("{ROOT}.1.{}", 2 * n + 2);
        let d = (bad.build)(&bad_sop);
        let (check, off) = expected(bad, &d, Level::Safe);
        let id = 2 * n + 1;
        match store(&mut c, id, &bad_sop, &fragments(&d, Some(off))) {
            Ok(cmd) => {
                if let Some(p) = refusal_problem(&cmd, check, off) {
                    problems.push(format!("{}: {p}", bad.what));
                }
            }
            Err(e) => {
                // The association is gone: nothing else can be checked on it.
                panic!("{}: {e}\nradguard:\n{}", bad.what, rg.log());
            }
        }
        if let Err(e) = wait_refusal_alert(&rg, check, off) {
            problems.push(format!("{}: {e}", bad.what));
        }
        if let Err(e) = wait_dimse_refused(&rg, id) {
            problems.push(format!("{}: {e}", bad.what));
        }
        match store(
            &mut c,
            id + 1,
            &good_sop,
            &fragments(&valid(&good_sop), None),
        ) {
            Ok(cmd) if cmd.status == Some(0) => {}
            Ok(cmd) => problems.push(format!(
                "valid C-STORE after {}: status {:04X?} ({:?})",
                bad.what, cmd.status, cmd.error_comment
            )),
            Err(e) => panic!(
                "valid C-STORE after {}: {e}\nradguard:\n{}",
                bad.what,
                rg.log()
            ),
        }
        refused.push(bad_sop);
        good.push(good_sop);
    }
    release(c);
    // storescp handles one association at a time: each valid instance was stored after the
    // aborted association before it had ended.
    let files = scp.files();
    for s in &refused {
        if stored_by(&files, s) {
            problems.push(format!("storescp stored the refused instance {s}"));
        }
    }
    for s in &good {
        if !stored_by(&files, s) {
            problems.push(format!("storescp did not store the valid instance {s}"));
        }
    }
    if files.len() != good.len() {
        problems.push(format!("storescp holds {:?}", names(&files)));
    }
    // One upstream association at the start, a fresh one after each refusal.
    let log = scp.log();
    if scp.associations() != 4 || log.matches("Association Aborted").count() != 3 {
        problems.push(format!(
            "storescp saw {} associations, {} aborted (expected 4 and 3)",
            scp.associations(),
            log.matches("Association Aborted").count()
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n\nradguard:\n{}\n\nstorescp:\n{log}",
        problems.join("\n"),
        rg.log()
    );
}

/// Test 2: one data set per check at the level that refuses it (routes SAFE and STRICT to their
/// own storescp), the tolerated deviations at safe (stored), and `log` relaying a duplicate.
#[test]
fn every_check_refused_at_its_level_tolerated_at_safe_relayed_at_log() {
    let scp_safe = StoreScp::start("SAFE_SCP");
    let scp_strict = StoreScp::start("STRICT_SCP");
    let scp_log = StoreScp::start("LOG_SCP");
    let rg = Radguard::start_fresh(&config_with(|c| {
        c.route_with("SAFE", scp_safe.port, "SAFE_SCP", &["firewall = \"safe\""])
            .route_with(
                "STRICT",
                scp_strict.port,
                "STRICT_SCP",
                &["firewall = \"strict\""],
            )
            .route_with("LOG", scp_log.port, "LOG_SCP", &["firewall = \"log\""])
    }));
    let mut table = String::from(
        "| level | data set | check | answer | alert | stored |\n|---|---|---|---|---|---|\n",
    );
    let mut failed = Vec::new();
    let mut expect_files = [0usize; 2];
    for (k, (level, bad)) in per_check().into_iter().enumerate() {
        let (called, scp, slot) = match level {
            Level::Strict => ("STRICT", &scp_strict, 1),
            _ => ("SAFE", &scp_safe, 0),
        };
        let bad_sop = format!("{ROOT}.2.{}.1", k + 1);
        let good_sop = format!("{ROOT}.2.{}.2", k + 1);
        let d = (bad.build)(&bad_sop);
        let (check, off) = expected(&bad, &d, level);
        let mut c = associate(rg.port(), called);
        let mut row_ok = true;
        let answer = match store(&mut c, 1, &bad_sop, &fragments(&d, Some(off))) {
            Ok(cmd) => match refusal_problem(&cmd, check, off) {
                None => "0xC000".to_string(),
                Some(p) => {
                    row_ok = false;
                    p
                }
            },
            Err(e) => {
                row_ok = false;
                e
            }
        };
        let alert = match wait_refusal_alert(&rg, check, off) {
            Ok(_) => "yes".to_string(),
            Err(e) => {
                row_ok = false;
                e
            }
        };
        // A valid C-STORE on the same association: stored, and (storescp taking associations
        // one at a time) proof that the refused one's upstream association is over.
        match store(&mut c, 2, &good_sop, &fragments(&valid(&good_sop), None)) {
            Ok(cmd) if cmd.status == Some(0) => {
                expect_files[slot] += 1;
                release(c);
            }
            other => {
                row_ok = false;
                failed.push(format!(
                    "{called} {check}: valid C-STORE after it: {other:?}"
                ));
            }
        }
        let files = scp.files();
        let stored = stored_by(&files, &bad_sop);
        if stored || !stored_by(&files, &good_sop) {
            row_ok = false;
        }
        let _ = writeln!(
            table,
            "| {level:?} | {} | {check} at {off} | {answer} | {alert} | {} |",
            bad.what,
            if stored { "STORED" } else { "no" }
        );
        if !row_ok {
            failed.push(format!(
                "{called} {check}: answer {answer}; alert {alert}; storescp holds {:?}",
                names(&files)
            ));
        }
    }
    for (scp, n) in [(&scp_safe, expect_files[0]), (&scp_strict, expect_files[1])] {
        if scp.files().len() != n {
            failed.push(format!(
                "{} holds {:?}, expected {n} files",
                scp.aet,
                names(&scp.files())
            ));
        }
    }

    // The deviations safe tolerates pass at safe and are stored.
    for (k, (level, bad)) in per_check().into_iter().enumerate() {
        if level != Level::Strict {
            continue;
        }
        let sop = format!("{ROOT}.3.{}", k + 1);
        let d = (bad.build)(&sop);
        let mut c = associate(rg.port(), "SAFE");
        match store(&mut c, 1, &sop, &fragments(&d, None)) {
            Ok(cmd) if cmd.status == Some(0) => release(c),
            other => failed.push(format!("SAFE {} ({}): {other:?}", bad.check, bad.what)),
        }
        let stored = stored_by(&scp_safe.files(), &sop);
        let _ = writeln!(
            table,
            "| Safe | {} | {} (tolerated) | relayed | - | {} |",
            bad.what,
            bad.check,
            if stored { "yes" } else { "NOT STORED" }
        );
        if !stored {
            failed.push(format!("SAFE {}: not stored by storescp", bad.check));
        }
    }

    // `log`: a duplicate Patient ID is relayed, stored, and reported.
    let sop = format!("{ROOT}.4.1");
    let d = duplicate_patient_id(&sop);
    let (check, off) = validator_says(&d, Level::Safe, Limits::GATEWAY).expect("refused at safe");
    let mut c = associate(rg.port(), "LOG");
    match store(&mut c, 1, &sop, &fragments(&d, Some(off))) {
        Ok(cmd) if cmd.status == Some(0) => release(c),
        other => failed.push(format!("LOG duplicate: {other:?}")),
    }
    if !stored_by(&scp_log.files(), &sop) {
        failed.push(format!(
            "LOG duplicate: storescp holds {:?}",
            names(&scp_log.files())
        ));
    }
    match wait_firewall_alert(&rg, "relayed (firewall = log)") {
        Ok(a) => {
            let detail = a["detail"].as_str().unwrap_or_default();
            if !detail.contains(&format!("{check} check failed at byte {off}")) {
                failed.push(format!(
                    "LOG duplicate: the alert does not name the check: {a}"
                ));
            }
        }
        Err(e) => failed.push(format!("LOG duplicate: {e}")),
    }
    let _ = writeln!(
        table,
        "| Log | Patient ID twice | {check} at {off} | relayed | - | - |"
    );

    println!("{table}");
    assert!(
        failed.is_empty(),
        "{}\n\n{table}\nradguard:\n{}",
        failed.join("\n"),
        rg.log()
    );
}

/// Test 3: the three motivating data sets and one per check, through routes to Orthanc at
/// `safe` and `strict`: each refused as documented, none in Orthanc; the valid one after them on
/// each association is.
#[test]
fn every_check_refused_before_orthanc() {
    let orthanc = Orthanc::start("ORTHANC", &[]);
    let strict = ["firewall = \"strict\""];
    let rg = Radguard::start_fresh(&config_with(|c| {
        c.route("ORTHANC", orthanc.dicom_port, "ORTHANC")
            .route_with("ORTHANC_STRICT", orthanc.dicom_port, "ORTHANC", &strict)
    }));
    // The three motivating data sets, then one per check, each at the level that refuses it.
    let cases: Vec<(Level, Bad)> = motivating()
        .into_iter()
        .map(|b| (Level::Safe, b))
        .chain(per_check())
        .collect();
    let mut problems = Vec::new();
    let mut refused = Vec::new();
    let mut good = Vec::new();
    for (level, called) in [(Level::Safe, "ORTHANC"), (Level::Strict, "ORTHANC_STRICT")] {
        let mut c = associate(rg.port(), called);
        let mut id = 0u16;
        for (i, (_, bad)) in cases.iter().enumerate().filter(|(_, (l, _))| *l == level) {
            id += 1;
            let sop = format!("{ROOT}.5.{}", i + 1);
            let d = (bad.build)(&sop);
            let (check, off) = expected(bad, &d, level);
            match store(&mut c, id, &sop, &fragments(&d, Some(off))) {
                Ok(cmd) => {
                    if let Some(p) = refusal_problem(&cmd, check, off) {
                        problems.push(format!("{} ({called}): {p}", bad.what));
                    }
                }
                Err(e) => panic!("{} ({called}): {e}\nradguard:\n{}", bad.what, rg.log()),
            }
            if let Err(e) = wait_refusal_alert(&rg, check, off) {
                problems.push(format!("{} ({called}): {e}", bad.what));
            }
            refused.push(sop);
        }
        // A valid instance after them, on the same association (a fresh upstream one).
        id += 1;
        let sop = format!("{ROOT}.5.9{}", good.len());
        match store(&mut c, id, &sop, &fragments(&valid(&sop), None)) {
            Ok(cmd) if cmd.status == Some(0) => {}
            other => problems.push(format!(
                "valid C-STORE after the refused ({called}): {other:?}"
            )),
        }
        release(c);
        good.push(sop);
    }
    // The valid instances were stored before their success was answered; none of the others.
    for s in &good {
        if orthanc.find_instance(s).is_none() {
            problems.push(format!("Orthanc does not have the valid instance {s}"));
        }
    }
    for s in &refused {
        if orthanc.find_instance(s).is_some() {
            problems.push(format!("Orthanc has the refused instance {s}"));
        }
    }
    let n = orthanc.instance_count();
    if n != good.len() as u64 {
        problems.push(format!(
            "Orthanc holds {n} instances, expected {}",
            good.len()
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n\nradguard:\n{}\n\nOrthanc:\n{}",
        problems.join("\n"),
        rg.log(),
        orthanc.log()
    );
}

/// The refusal comes once the client's data set is complete, never before (PS3.7: a response
/// follows its request); the upstream is aborted as soon as the violation arrived, before the
/// client's last fragment.
#[test]
fn refusal_waits_for_the_last_fragment_and_the_upstream_is_aborted_at_the_violation() {
    let scp = StoreScp::start("ARCHIVE");
    let rg = Radguard::start_fresh(&config_with(|c| c.route("ARCHIVE", scp.port, "ARCHIVE")));
    let bad = format!("{ROOT}.7.1");
    let good = format!("{ROOT}.7.2");
    let d = duplicate_patient_id(&bad);
    let bad_case = &motivating()[0];
    let (check, off) = expected(bad_case, &d, Level::Safe);
    let frags = fragments(&d, Some(off));
    assert_eq!(frags.len(), 3, "the recipe cuts into 3 fragments");
    let mut c = associate(rg.port(), "ARCHIVE");
    let cmd = raw::store_rq(1, raw::CT_STORAGE, &bad);
    c.send(&raw::pdata(&[(CT_CTX, raw::CMD_LAST, &cmd)]))
        .unwrap();
    c.send(&raw::pdata(&[(CT_CTX, raw::DATA_MORE, frags[0])]))
        .unwrap();
    c.send(&raw::pdata(&[(CT_CTX, raw::DATA_MORE, frags[1])]))
        .unwrap();
    let aborted = wait_until(Duration::from_secs(10), || {
        scp.log().contains("Association Aborted")
    });
    assert!(
        aborted,
        "the upstream was not aborted once the violation arrived (the client's last fragment \
         not sent yet)\nradguard:\n{}\nstorescp:\n{}",
        rg.log(),
        scp.log()
    );
    // The gateway has acted on the violation; the client must not have an answer yet.
    c.stream.set_nonblocking(true).unwrap();
    let mut one = [0u8; 1];
    let early = c.stream.peek(&mut one);
    c.stream.set_nonblocking(false).unwrap();
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the client got something before its last fragment: {early:?}\nradguard:\n{}",
        rg.log()
    );
    c.send(&raw::pdata(&[(CT_CTX, raw::DATA_LAST, frags[2])]))
        .unwrap();
    let rsp = response(&mut c, 1).unwrap_or_else(|e| panic!("{e}\nradguard:\n{}", rg.log()));
    assert_eq!(refusal_problem(&rsp, check, off), None);
    let ok = store(&mut c, 2, &good, &fragments(&valid(&good), None))
        .unwrap_or_else(|e| panic!("{e}\nradguard:\n{}", rg.log()));
    assert_eq!(ok.status, Some(0), "{ok:?}");
    release(c);
    let files = scp.files();
    assert!(
        stored_by(&files, &good) && files.len() == 1,
        "storescp holds {:?}",
        names(&files)
    );
}

/// Test 4: a vault route (default level) refuses a repeated Patient ID: 0xC000, nothing in the
/// vault; a valid one after it on the same association is stored.
#[test]
fn vault_route_refuses_duplicate_patient_id() {
    let rg = Radguard::start_fresh(&config_with(|c| c.vault_route("VAULT")));
    let bad = format!("{ROOT}.6.1");
    let good = format!("{ROOT}.6.2");
    let d = duplicate_patient_id(&bad);
    let (check, off) = validator_says(&d, Level::Safe, Limits::GATEWAY).expect("refused");
    assert_eq!(check, "duplicate");
    let mut c = associate(rg.port(), "VAULT");
    let mut problems = Vec::new();
    match store(&mut c, 1, &bad, &fragments(&d, Some(off))) {
        Ok(cmd) => {
            if let Some(p) = refusal_problem(&cmd, check, off) {
                problems.push(p);
            }
        }
        Err(e) => panic!("{e}\nradguard:\n{}", rg.log()),
    }
    if let Err(e) = wait_refusal_alert(&rg, check, off) {
        problems.push(e);
    }
    match store(&mut c, 2, &good, &fragments(&valid(&good), None)) {
        Ok(cmd) if cmd.status == Some(0) => {}
        other => problems.push(format!("valid C-STORE after it: {other:?}")),
    }
    release(c);
    // Success means fsync + index commit: both are there now.
    let objects = files_under(&rg.data_dir, ".dcm");
    if objects.len() != 1 {
        problems.push(format!(
            "vault objects: {objects:?} (expected the valid one only)"
        ));
    }
    let index = vault_index(&rg.data_dir);
    if index != [good.as_str()] {
        problems.push(format!("vault index holds {index:?}, expected [{good:?}]"));
    }
    assert!(
        problems.is_empty(),
        "{}\n\nradguard:\n{}",
        problems.join("\n"),
        rg.log()
    );
}

/// A Study Root C-FIND identifier (Explicit VR LE), with Patient ID twice when `dup`.
fn find_identifier(dup: bool) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(ex(0x0008, 0x0052, b"CS", b"STUDY "));
    d.extend(ex(0x0010, 0x0020, b"LO", b"P-FIRST "));
    if dup {
        d.extend(ex(0x0010, 0x0020, b"LO", b"P-SECOND"));
    }
    d.extend(ex(0x0020, 0x000D, b"UI", b""));
    d
}

/// A C-FIND identifier of 65,537 elements (zero-length private LOs after the query keys): one
/// more than an identifier may hold.
fn find_identifier_too_many() -> Vec<u8> {
    let mut d = ex(0x0008, 0x0052, b"CS", b"STUDY ");
    // Query/Retrieve Level, the private elements, Patient ID and Study Instance UID.
    let private = (1usize << 16) + 1 - 3;
    let elements = [0x0009u16, 0x000B]
        .into_iter()
        .flat_map(|g| (0x1000..=0xFFFFu16).map(move |e| (g, e)))
        .take(private);
    for (group, elem) in elements {
        d.extend(ex(group, elem, b"LO", b""));
    }
    d.extend(ex(0x0010, 0x0020, b"LO", b"P-FIRST "));
    d.extend(ex(0x0020, 0x000D, b"UI", b""));
    d
}

fn find_rq(id: u16) -> Vec<u8> {
    raw::command(&[
        (0x0002, Cv::Ui(uid::STUDY_ROOT_FIND)),
        (0x0100, Cv::Us(0x0020)),
        (0x0110, Cv::Us(id)),
        (0x0700, Cv::Us(0)),
        (0x0800, Cv::Us(0)),
    ])
}

/// Test 5: a C-FIND identifier with a repeated Patient ID, and one with more elements than an
/// identifier may hold, are answered 0xC000 by the gateway and dcmqrscp never sees them; a valid
/// C-FIND right after on the same association reaches it.
#[test]
fn find_identifier_with_duplicate_never_reaches_dcmqrscp() {
    let qr = DcmQrScp::start("QRSCP", &[]);
    let rg = Radguard::start_fresh(&config_with(|c| c.route("QR", qr.port, "QRSCP")));
    let id_bad = find_identifier(true);
    let (check, off) =
        validator_says(&id_bad, Level::Safe, Limits::QUERY).expect("refused at safe");
    assert_eq!(check, "duplicate");
    let mut c = associate(rg.port(), "QR");
    let mut problems = Vec::new();
    c.send(&raw::pdata(&[(FIND_CTX, raw::CMD_LAST, &find_rq(1))]))
        .unwrap();
    c.send(&raw::pdata(&[(FIND_CTX, raw::DATA_LAST, &id_bad)]))
        .unwrap();
    match response(&mut c, 1) {
        Ok(cmd) => {
            let want = comment(check, off);
            if cmd.field != Some(0x8020)
                || cmd.status != Some(CANNOT_UNDERSTAND)
                || cmd.error_comment.as_deref() != Some(want.as_str())
            {
                problems.push(format!(
                    "expected C-FIND-RSP 0xC000 with Error Comment {want:?}; got {cmd:?}"
                ));
            }
        }
        Err(e) => panic!("{e}\nradguard:\n{}", rg.log()),
    }
    if let Err(e) = wait_refusal_alert(&rg, check, off) {
        problems.push(e);
    }
    if let Err(e) = wait_dimse_refused(&rg, 1) {
        problems.push(e);
    }
    // An identifier with more elements than any query needs (PS3.4 C.6: a few dozen keys),
    // sent in 8 KiB fragments (dcmqrscp accepts 16 KiB PDUs): refused by the element-count
    // check, never forwarded.
    let many = find_identifier_too_many();
    let (check, off) = validator_says(&many, Level::Safe, Limits::QUERY).expect("refused at safe");
    assert_eq!(check, "element-count");
    c.send(&raw::pdata(&[(FIND_CTX, raw::CMD_LAST, &find_rq(3))]))
        .unwrap();
    let mut parts = many.chunks(8 * 1024).peekable();
    while let Some(part) = parts.next() {
        let flag = if parts.peek().is_some() {
            raw::DATA_MORE
        } else {
            raw::DATA_LAST
        };
        c.send(&raw::pdata(&[(FIND_CTX, flag, part)])).unwrap();
    }
    match response(&mut c, 3) {
        Ok(cmd) => {
            let want = comment(check, off);
            if cmd.status != Some(CANNOT_UNDERSTAND)
                || cmd.error_comment.as_deref() != Some(want.as_str())
            {
                problems.push(format!(
                    "65,537-element identifier: expected 0xC000 with {want:?}; got {cmd:?}"
                ));
            }
        }
        Err(e) => panic!("{e}\nradguard:\n{}", rg.log()),
    }
    // A valid C-FIND on the same association: answered by dcmqrscp (an empty archive: one final
    // response, success).
    c.send(&raw::pdata(&[(FIND_CTX, raw::CMD_LAST, &find_rq(2))]))
        .unwrap();
    c.send(&raw::pdata(&[(
        FIND_CTX,
        raw::DATA_LAST,
        &find_identifier(false),
    )]))
    .unwrap();
    let mut last = None;
    for _ in 0..16 {
        match response(&mut c, 2) {
            Ok(cmd) if matches!(cmd.status, Some(0xFF00 | 0xFF01)) => continue,
            Ok(cmd) => {
                last = Some(cmd);
                break;
            }
            Err(e) => panic!("valid C-FIND: {e}\nradguard:\n{}", rg.log()),
        }
    }
    match last {
        Some(cmd) if cmd.field == Some(0x8020) && cmd.status == Some(0) => {}
        other => problems.push(format!("valid C-FIND after it: final response {other:?}")),
    }
    release(c);
    // dcmqrscp logs every C-FIND it receives ("Received Find SCP", then the identifier): the
    // valid one only (it answered before its response reached us).
    let log = qr.log();
    let finds = log.matches("Received Find SCP").count();
    if finds != 1 || log.contains("P-SECOND") {
        problems.push(format!(
            "dcmqrscp received {finds} C-FIND requests (expected 1, the valid one) or saw P-SECOND"
        ));
    }
    // Nothing of the refused request went upstream, so its association was not aborted: one
    // upstream association carried the valid C-FIND.
    let assocs = log.matches("Association Received").count();
    if assocs != 1 || log.to_lowercase().contains("abort") {
        problems.push(format!(
            "dcmqrscp saw {assocs} associations (expected 1) or an abort"
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n\nradguard:\n{}\n\ndcmqrscp:\n{log}",
        problems.join("\n"),
        rg.log()
    );
}
