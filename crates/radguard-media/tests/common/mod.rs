//! A tiny DICOM writer for building the test corpus byte by byte (hostile files included).
#![allow(dead_code, clippy::vec_init_then_push)]

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
pub const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const ENCAPSULATED_PDF: &str = "1.2.840.10008.5.1.4.1.1.104.1";
pub const DICOMDIR_CLASS: &str = "1.2.840.10008.1.3.10";

fn is_long(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// Pads a value to even length (UI with NUL, text with space, binary with NUL).
pub fn pad(vr: &[u8; 2], v: &[u8]) -> Vec<u8> {
    let mut v = v.to_vec();
    if v.len() % 2 == 1 {
        v.push(if matches!(vr, b"UI" | b"OB" | b"UN") {
            0
        } else {
            b' '
        });
    }
    v
}

/// An explicit VR little endian element with the given raw length field.
pub fn el_len(g: u16, e: u16, vr: &[u8; 2], len: u32, v: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&g.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(vr);
    if is_long(vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        out.extend_from_slice(&(len as u16).to_le_bytes());
    }
    out.extend_from_slice(v);
    out
}

/// An explicit VR little endian element, padded.
pub fn el(g: u16, e: u16, vr: &[u8; 2], v: &[u8]) -> Vec<u8> {
    let v = pad(vr, v);
    el_len(g, e, vr, v.len() as u32, &v)
}

/// An implicit VR little endian element, padded.
pub fn iel(g: u16, e: u16, vr: &[u8; 2], v: &[u8]) -> Vec<u8> {
    let v = pad(vr, v);
    let mut out = Vec::new();
    out.extend_from_slice(&g.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(&v);
    out
}

pub fn us(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// An item with defined length.
pub fn item(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFE, 0xFF, 0x00, 0xE0];
    out.extend_from_slice(&(content.len() as u32).to_le_bytes());
    out.extend_from_slice(content);
    out
}

/// A sequence with undefined length of undefined-length items.
pub fn seq_undefined(g: u16, e: u16, items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = el_len(g, e, b"SQ", 0xFFFF_FFFF, &[]);
    for i in items {
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        out.extend_from_slice(i);
        out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
    }
    out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    out
}

/// A sequence with defined length of defined-length items.
pub fn seq_defined(g: u16, e: u16, items: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = items.iter().flat_map(|i| item(i)).collect();
    el_len(g, e, b"SQ", body.len() as u32, &body)
}

/// Preamble + DICM + meta group (correct group length) for the given UIDs.
pub fn part10_header(preamble: &[u8; 128], ts: &str, class: &str, instance: &str) -> Vec<u8> {
    let mut meta = Vec::new();
    meta.extend(el(0x0002, 0x0001, b"OB", &[0, 1]));
    meta.extend(el(0x0002, 0x0002, b"UI", class.as_bytes()));
    meta.extend(el(0x0002, 0x0003, b"UI", instance.as_bytes()));
    meta.extend(el(0x0002, 0x0010, b"UI", ts.as_bytes()));
    meta.extend(el(0x0002, 0x0012, b"UI", b"1.2.3.4.5.6"));
    let mut out = preamble.to_vec();
    out.extend_from_slice(b"DICM");
    out.extend(el(
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    ));
    out.extend(meta);
    out
}

pub fn part10(preamble: &[u8; 128], ts: &str, class: &str, instance: &str, ds: &[u8]) -> Vec<u8> {
    let mut out = part10_header(preamble, ts, class, instance);
    out.extend_from_slice(ds);
    out
}

/// Sorts top-level elements (each chunk starts with its tag) and concatenates them.
pub fn assemble(mut chunks: Vec<Vec<u8>>) -> Vec<u8> {
    chunks.sort_by_key(|c| {
        (
            u16::from_le_bytes([c[0], c[1]]),
            u16::from_le_bytes([c[2], c[3]]),
        )
    });
    chunks.concat()
}

/// Patient/study attributes of a small CT, without pixel module.
pub fn ct_header(instance: &str) -> Vec<Vec<u8>> {
    let mut ds = Vec::new();
    ds.push(el(0x0008, 0x0005, b"CS", b"ISO_IR 100"));
    ds.push(el(0x0008, 0x0016, b"UI", CT.as_bytes()));
    ds.push(el(0x0008, 0x0018, b"UI", instance.as_bytes()));
    ds.push(el(0x0008, 0x0060, b"CS", b"CT"));
    ds.push(el(0x0010, 0x0010, b"PN", b"Test^Patient"));
    ds.push(el(0x0010, 0x0020, b"LO", b"RG-0001"));
    ds.push(el(0x0020, 0x000D, b"UI", b"1.2.826.0.1.3680043.9.7433.2.1"));
    ds.push(el(0x0020, 0x000E, b"UI", b"1.2.826.0.1.3680043.9.7433.3.1"));
    ds
}

/// Image pixel module for rows×cols 16-bit monochrome.
pub fn pixel_module(rows: u16, cols: u16) -> Vec<Vec<u8>> {
    let mut ds = Vec::new();
    ds.push(el(0x0028, 0x0002, b"US", &us(1)));
    ds.push(el(0x0028, 0x0004, b"CS", b"MONOCHROME2"));
    ds.push(el(0x0028, 0x0010, b"US", &us(rows)));
    ds.push(el(0x0028, 0x0011, b"US", &us(cols)));
    ds.push(el(0x0028, 0x0100, b"US", &us(16)));
    ds.push(el(0x0028, 0x0101, b"US", &us(12)));
    ds.push(el(0x0028, 0x0102, b"US", &us(11)));
    ds.push(el(0x0028, 0x0103, b"US", &us(0)));
    ds
}

/// Deterministic "image" bytes.
pub fn pixels(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// A clean 16×16 CT in explicit VR little endian, optionally with extra elements inserted
/// (each one whole element; they are sorted into place).
pub fn clean_ct(instance: &str, extra: &[Vec<u8>]) -> Vec<u8> {
    let mut ds = ct_header(instance);
    ds.extend_from_slice(extra);
    ds.extend(pixel_module(16, 16));
    ds.push(el(0x7FE0, 0x0010, b"OW", &pixels(16 * 16 * 2, 7)));
    part10(&[0; 128], EXPLICIT_LE, CT, instance, &assemble(ds))
}

/// A minimal valid PE image (DOS header + PE header + optional header magic), `e_lfanew`
/// relative to its start.
pub fn pe_image(e_lfanew: u32) -> Vec<u8> {
    let mut v = vec![0u8; e_lfanew as usize + 248];
    v[..2].copy_from_slice(b"MZ");
    v[0x3c..0x40].copy_from_slice(&e_lfanew.to_le_bytes());
    let i = e_lfanew as usize;
    v[i..i + 4].copy_from_slice(b"PE\0\0");
    v[i + 4..i + 6].copy_from_slice(&0x014cu16.to_le_bytes());
    v[i + 24..i + 26].copy_from_slice(&0x010bu16.to_le_bytes());
    v
}

/// A PE header without the DOS part (what PEDICOM puts in a private element).
pub fn pe_header_only() -> Vec<u8> {
    let mut v = vec![0u8; 248];
    v[..4].copy_from_slice(b"PE\0\0");
    v[4..6].copy_from_slice(&0x014cu16.to_le_bytes());
    v[24..26].copy_from_slice(&0x010bu16.to_le_bytes());
    v
}

pub fn elf_header() -> Vec<u8> {
    let mut e = vec![0u8; 64];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // 64-bit
    e[5] = 1; // little endian
    e[6] = 1; // version
    e[0x10] = 2; // ET_EXEC
    e[0x12] = 0x3e; // x86-64
    e[0x14] = 1;
    e
}

pub fn macho_header() -> Vec<u8> {
    let mut m = vec![0u8; 32];
    m[..4].copy_from_slice(b"\xcf\xfa\xed\xfe");
    m[4..8].copy_from_slice(&0x0100_0007u32.to_le_bytes());
    m[12..16].copy_from_slice(&2u32.to_le_bytes());
    m[16..20].copy_from_slice(&12u32.to_le_bytes());
    m
}

pub fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The Python of the project venv; the tests that need it fail (not skip) without it.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("RADGUARD_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run the project setup (python3 -m venv .venv && .venv/bin/pip install pydicom==3.0.2 numpy) or set RADGUARD_PYTHON",
        p.display()
    );
    p
}

/// pydicom's package folder, from the venv's Python. Panics if pydicom is missing.
pub fn pydicom_dir() -> PathBuf {
    let out = Command::new(python())
        .args([
            "-c",
            "import pydicom, os; print(os.path.dirname(pydicom.__file__))",
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "pydicom not importable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Every DICOM file pydicom ships: files under its data folder that end in .dcm, are named
/// DICOMDIR*, or carry DICM at offset 128.
pub fn pydicom_files() -> Vec<PathBuf> {
    let data = pydicom_dir().join("data");
    let mut out = Vec::new();
    let mut stack = vec![data];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let dicm = std::fs::read(&p)
                .map(|b| b.len() >= 132 && &b[128..132] == b"DICM")
                .unwrap_or(false);
            if name.ends_with(".dcm") || name.starts_with("DICOMDIR") || dicm {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// PEDICOM as published: DOS header in the preamble, its e_lfanew pointing at a PE header
/// that lives inside a private OB element.
pub fn pedicom() -> Vec<u8> {
    let inst = "1.2.826.0.1.3680043.9.7433.1.100";
    let extra = vec![
        el(0x0009, 0x0010, b"LO", b"PEDICOM"),
        el(0x0009, 0x1010, b"OB", &pe_header_only()),
    ];
    let mut f = clean_ct(inst, &extra);
    let pe_offset = f.windows(4).position(|w| w == b"PE\0\0").unwrap() as u32;
    f[..2].copy_from_slice(b"MZ");
    f[0x3c..0x40].copy_from_slice(&pe_offset.to_le_bytes());
    f[0x40..0x4d].copy_from_slice(b"This program ");
    f
}

pub fn clean_ct_with_preamble(inst: &str, extra: &[Vec<u8>], pre: [u8; 128]) -> Vec<u8> {
    let mut f = clean_ct(inst, extra);
    f[..128].copy_from_slice(&pre);
    f
}

pub fn pdf_with(payload: &[u8]) -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n1 0 obj << /Length 999 >>\nstream\n".to_vec();
    pdf.extend_from_slice(payload);
    pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
    pdf
}

pub fn encapsulated_pdf(pdf: &[u8]) -> Vec<u8> {
    let inst = "1.2.3.15";
    let mut ds = Vec::new();
    ds.push(el(0x0008, 0x0016, b"UI", ENCAPSULATED_PDF.as_bytes()));
    ds.push(el(0x0008, 0x0018, b"UI", inst.as_bytes()));
    ds.push(el(0x0010, 0x0010, b"PN", b"Doc^Patient"));
    ds.push(el(0x0042, 0x0011, b"OB", pdf));
    ds.push(el(0x0042, 0x0012, b"LO", b"application/pdf"));
    part10(
        &[0; 128],
        EXPLICIT_LE,
        ENCAPSULATED_PDF,
        inst,
        &assemble(ds),
    )
}

pub fn dicomdir(ids: &[&str]) -> Vec<u8> {
    let inst = "1.2.3.16";
    let items: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| {
            let mut it = el(0x0004, 0x1430, b"CS", b"IMAGE");
            it.extend(el(0x0004, 0x1500, b"CS", id.as_bytes()));
            it
        })
        .collect();
    let mut ds = Vec::new();
    ds.push(el(0x0004, 0x1130, b"CS", b"RADGUARD"));
    ds.push(seq_undefined(0x0004, 0x1220, &items));
    part10(&[0; 128], EXPLICIT_LE, DICOMDIR_CLASS, inst, &assemble(ds))
}

pub fn deflated_file(ds: &[u8], inst: &str) -> Vec<u8> {
    let mut f = part10_header(&[0; 128], DEFLATED, CT, inst);
    f.extend(deflate(ds));
    f
}
