//! docs/fingerprint.md is part of the specification: its attribute table must be the code's,
//! and every test vector in it must be reproduced exactly (whole data set, and byte-by-byte
//! chunks).

use std::path::Path;

use radguard_ledger::fingerprint::{Fingerprinter, PixelDigest, ATTRIBUTES};
use sha2::{Digest as _, Sha256};

fn doc() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/fingerprint.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let a = s.find(start).unwrap_or_else(|| panic!("no {start:?}")) + start.len();
    let b = s[a..].find(end).unwrap_or_else(|| panic!("no {end:?}")) + a;
    &s[a..b]
}

fn field<'a>(block: &'a str, name: &str) -> &'a str {
    between(block, &format!("- {name}: `"), "`")
}

#[test]
fn attribute_table_matches_the_code() {
    let d = doc();
    let table = between(&d, "<!-- attribute-table -->", "<!-- /attribute-table -->");
    let rows: Vec<(String, String, String)> = table
        .lines()
        .filter(|l| l.starts_with("| ("))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (
                cells[0].to_string(),
                cells[1].to_string(),
                cells[2].to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = ATTRIBUTES
        .iter()
        .map(|a| {
            (
                format!("({:04X},{:04X})", a.tag >> 16, a.tag & 0xFFFF),
                a.keyword.to_string(),
                String::from_utf8_lossy(a.vr.code()).into_owned(),
            )
        })
        .collect();
    assert_eq!(rows, want);
}

#[test]
fn test_vectors_reproduce() {
    let d = doc();
    let blocks: Vec<&str> = d.split("<!-- vector -->").skip(1).collect();
    assert!(blocks.len() >= 3, "at least 3 vectors");
    for (i, block) in blocks.iter().enumerate() {
        let ts = field(block, "transfer syntax");
        let kind = field(block, "kind");
        let a = field(block, "A");
        let p = field(block, "P");
        let f = field(block, "fingerprint");
        let hex_text: String = between(block, "```hex\n", "```")
            .split_whitespace()
            .collect();
        let data = hex::decode(&hex_text).unwrap_or_else(|e| panic!("vector {}: {e}", i + 1));

        for chunk in [data.len().max(1), 1, 7] {
            let mut fp = Fingerprinter::new(ts).expect("transfer syntax");
            for c in data.chunks(chunk) {
                fp.feed(c);
            }
            let got = fp
                .finish()
                .unwrap_or_else(|e| panic!("vector {}: {e}", i + 1));
            assert_eq!(got.attributes.to_hex(), a, "vector {} A", i + 1);
            assert_eq!(got.pixels.digest().to_hex(), p, "vector {} P", i + 1);
            assert_eq!(got.digest.to_hex(), f, "vector {} fingerprint", i + 1);
            let got_kind = match got.pixels {
                PixelDigest::None => "none",
                PixelDigest::Samples { .. } => "samples",
                PixelDigest::Codestream { .. } => "codestream",
            };
            assert_eq!(got_kind, kind, "vector {}", i + 1);
        }
    }
}

/// Deflating (PS3.5 §A.5) changes the encoding, not the data set: every Explicit VR Little
/// Endian vector, deflated here with flate2 at several levels, fingerprints as the vector does.
#[test]
fn deflated_vectors_fingerprint_as_the_originals() {
    use std::io::Write as _;
    let d = doc();
    let mut checked = 0;
    for block in d.split("<!-- vector -->").skip(1) {
        if field(block, "transfer syntax") != "1.2.840.10008.1.2.1" {
            continue;
        }
        let hex_text: String = between(block, "```hex\n", "```")
            .split_whitespace()
            .collect();
        let data = hex::decode(&hex_text).expect("hex");
        for level in [0, 1, 9] {
            let mut z =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
            z.write_all(&data).expect("deflate");
            let z = z.finish().expect("deflate");
            for chunk in [z.len(), 1, 7] {
                let mut fp = Fingerprinter::new("1.2.840.10008.1.2.1.99").expect("deflated");
                for c in z.chunks(chunk) {
                    fp.feed(c);
                }
                let got = fp.finish().expect("fingerprint");
                assert_eq!(
                    got.digest.to_hex(),
                    field(block, "fingerprint"),
                    "level {level}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "{checked} explicit VR LE vectors");
}

/// The worked example in §10: P of vectors 1–4 from the canonical samples given in the text.
#[test]
fn worked_pixel_example() {
    let mut h = Sha256::new();
    h.update(hex::decode("E07F10004F5700000C000000").expect("hex"));
    h.update(hex::decode("FFFFFF0700F80000640 09CFF".replace(' ', "")).expect("hex"));
    let p = hex::encode(h.finalize());
    let d = doc();
    let first = d.split("<!-- vector -->").nth(1).expect("vector 1");
    assert_eq!(field(first, "P"), p);
}
