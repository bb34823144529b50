//! Fingerprints of real files: agreement with an independent Python implementation, invariance
//! under benign re-encodings made by DCMTK and pydicom, sensitivity to CT-GAN-like tampering,
//! and independence from how the data set is chunked.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use radguard_dicom::part10::{read_head, write_head};
use radguard_dicom::ts::{DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE};
use radguard_ledger::fingerprint::{
    fingerprint_file, part10_data_set, Fingerprint, Fingerprinter, PixelDigest,
    REPRESENTATION_ATTRIBUTES,
};

/// One generated series per variant, shared by the tests of this binary.
struct Data {
    _dir: tempfile::TempDir,
    /// Signed, Bits Stored 16 (explicit VR LE).
    signed16: Vec<PathBuf>,
    /// Unsigned, Bits Stored 12, rescale intercept -1024 (explicit VR LE).
    unsigned12: Vec<PathBuf>,
    root: PathBuf,
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let signed16 = series(
            &root.join("s16"),
            &["--slices", "3", "--rows", "64", "--cols", "64"],
        );
        let unsigned12 = series(
            &root.join("u12"),
            &[
                "--slices",
                "3",
                "--rows",
                "48",
                "--cols",
                "40",
                "--bits-stored",
                "12",
                "--signed",
                "0",
                "--seed",
                "2",
            ],
        );
        Data {
            _dir: dir,
            signed16,
            unsigned12,
            root,
        }
    })
}

fn fp(path: &Path) -> Fingerprint {
    fingerprint_file(path)
        .unwrap_or_else(|e| panic!("fingerprint {}: {e}", path.display()))
        .fingerprint
}

fn reference(paths: &[&Path]) -> Vec<String> {
    ctdata_paths(&["fingerprint"], paths)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = data().root.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

#[test]
fn agrees_with_the_python_reference_in_every_native_syntax() {
    let d = data();
    for (variant, extra) in [
        ("implicit", vec!["--syntax", "implicit"]),
        ("big", vec!["--syntax", "big"]),
    ] {
        let dir = scratch(&format!("native-{variant}"));
        let mut args = vec!["--slices", "3", "--rows", "64", "--cols", "64"];
        args.extend(extra);
        let other = series(&dir, &args);
        for (a, b) in d.signed16.iter().zip(&other) {
            assert_eq!(fp(a), fp(b), "{variant}: {}", b.display());
        }
    }
    // RLE copies, which pydicom decodes with its own RLE decoder.
    let rle_dir = scratch("reference-rle");
    let rle: Vec<PathBuf> = d
        .unsigned12
        .iter()
        .map(|src| {
            let out = rle_dir.join(src.file_name().expect("name"));
            dcmtk("dcmcrle", &[], src, &out);
            out
        })
        .collect();
    for set in [&d.signed16, &d.unsigned12, &rle] {
        let paths: Vec<&Path> = set.iter().map(PathBuf::as_path).collect();
        let want = reference(&paths);
        for (p, w) in set.iter().zip(want) {
            assert_eq!(fp(p).digest.to_hex(), w, "{}", p.display());
        }
    }
}

/// Each benign re-encoding of each slice fingerprints exactly like the original.
#[test]
fn benign_reencodings_are_unchanged() {
    let d = data();
    let conversions: &[(&str, &str, &[&str])] = &[
        ("implicit", "dcmconv", &["+ti"]),
        ("bigendian", "dcmconv", &["+tb"]),
        ("rle", "dcmcrle", &[]),
        ("jpegls", "dcmcjpls", &["+el"]),
        // One frame in several 1 KiB fragments: decoded from the fragments joined.
        ("jpegls-fragments", "dcmcjpls", &["+el", "+fs", "1"]),
        ("jpeg-sv1", "dcmcjpeg", &["+e1"]),
        ("jpeg-p14", "dcmcjpeg", &["+el", "+sv", "2"]),
        // Deflated Explicit VR Little Endian: the same data set, deflate-compressed.
        ("deflated", "dcmconv", &["+td"]),
    ];
    for (set_name, set) in [("s16", &d.signed16), ("u12", &d.unsigned12)] {
        for (label, tool, args) in conversions {
            let dir = scratch(&format!("benign-{set_name}-{label}"));
            for src in set.iter() {
                let out = dir.join(src.file_name().expect("name"));
                dcmtk(tool, args, src, &out);
                let got = fingerprint_file(&out)
                    .unwrap_or_else(|e| panic!("{label} {}: {e}", out.display()));
                assert!(
                    matches!(got.fingerprint.pixels, PixelDigest::Samples { .. }),
                    "{label}: {:?}",
                    got.fingerprint.pixels
                );
                assert_eq!(
                    got.fingerprint,
                    fp(src),
                    "{set_name} {label} {}",
                    out.display()
                );
            }
        }
        let dir = scratch(&format!("benign-{set_name}-pydicom"));
        for src in set.iter() {
            let out = dir.join(src.file_name().expect("name"));
            ctdata_paths(&["rewrite", "--private"], &[src, &out]);
            let original = std::fs::read(src).expect("read");
            let rewritten = std::fs::read(&out).expect("read");
            assert_ne!(
                original.get(..128),
                rewritten.get(..128),
                "the preamble changed"
            );
            assert_eq!(fp(&out), fp(src), "pydicom rewrite {}", out.display());
        }
    }
}

/// A Deflated Explicit VR Little Endian copy (PS3.5 §A.5) fingerprints exactly as the original:
/// the fingerprint covers the attributes and pixels, not how the data set is encoded. Copies
/// made by DCMTK and by flate2 behind Radguard's own File Meta Information, read as files and
/// streamed in pieces as the gateway would see them.
#[test]
fn deflated_copies_fingerprint_as_the_original() {
    use std::io::Write as _;
    let d = data();
    let dir = scratch("deflated");
    for (i, src) in d.signed16.iter().chain(&d.unsigned12).enumerate() {
        let want = fp(src);
        let original = std::fs::read(src).expect("read");
        let (ts, start) = part10_data_set(&original).expect("part 10");
        assert_eq!(ts, EXPLICIT_VR_LE);

        let by_dcmtk = dir.join(format!("dcmtk{i}.dcm"));
        dcmtk("dcmconv", &["+td"], src, &by_dcmtk);

        let meta = read_head(&original).expect("meta").meta;
        let head = write_head(
            meta.media_storage_sop_class_uid.as_deref().expect("class"),
            meta.media_storage_sop_instance_uid
                .as_deref()
                .expect("instance"),
            DEFLATED_EXPLICIT_VR_LE,
        );
        let mut z = flate2::write::DeflateEncoder::new(head, flate2::Compression::fast());
        z.write_all(&original[start..]).expect("deflate");
        let by_flate2 = dir.join(format!("flate2-{i}.dcm"));
        std::fs::write(&by_flate2, z.finish().expect("deflate")).expect("write");

        for copy in [&by_dcmtk, &by_flate2] {
            let got = fingerprint_file(copy).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
            assert_eq!(got.transfer_syntax, DEFLATED_EXPLICIT_VR_LE);
            assert_eq!(got.fingerprint, want, "{}", copy.display());
            assert!(got.size < original.len() as u64, "{}", copy.display());

            let bytes = std::fs::read(copy).expect("read");
            let (ts, start) = part10_data_set(&bytes).expect("part 10");
            assert_eq!(ts, DEFLATED_EXPLICIT_VR_LE);
            for piece in [1, 7, 1000, bytes.len()] {
                let mut f = Fingerprinter::new(&ts).expect("deflated is supported");
                for c in bytes[start..].chunks(piece) {
                    f.feed(c);
                }
                assert_eq!(f.finish().expect("fingerprint"), want, "pieces of {piece}");
            }
            // Cut short, the deflate stream does not end: an error, not a fingerprint.
            let mut f = Fingerprinter::new(&ts).expect("ts");
            f.feed(&bytes[start..bytes.len() - 4]);
            assert!(f.finish().is_err(), "{}", copy.display());
        }
    }
}

#[test]
fn lossy_reencoding_keeps_attributes_and_fingerprints_the_codestream() {
    let d = data();
    let dir = scratch("lossy");
    let src = &d.unsigned12[0];
    let out = dir.join("lossy.dcm");
    // JPEG Extended (12-bit lossy), keeping the SOP Instance UID.
    dcmtk("dcmcjpeg", &["+ee", "+un"], src, &out);
    let lossy = fp(&out);
    let original = fp(src);
    assert!(lossy.pixels.is_lossy(), "{:?}", lossy.pixels);
    assert_ne!(lossy.digest, original.digest);
    // DCMTK re-maps the stored values for lossy JPEG and adjusts Rescale Intercept to match:
    // only pixel-representation attributes may differ.
    let changed = lossy.changed_attributes(&original);
    assert!(
        changed
            .iter()
            .all(|t| REPRESENTATION_ATTRIBUTES.contains(t)),
        "{changed:08x?}"
    );
    // The same lossy file again fingerprints the same (the codestream is what is covered).
    let copy = dir.join("copy.dcm");
    ctdata_paths(&["rewrite"], &[&out, &copy]);
    assert_eq!(fp(&copy), lossy);
}

#[test]
fn tampering_changes_the_fingerprint_and_names_what_changed() {
    let d = data();
    let dir = scratch("tamper");
    let src = &d.signed16[1];
    let original = fp(src);
    for mode in ["raise", "flatten"] {
        let out = dir.join(format!("{mode}.dcm"));
        ctdata_paths(&["tamper", "--mode", mode], &[src, &out]);
        let t = fp(&out);
        assert_ne!(t.digest, original.digest, "{mode}");
        assert_eq!(
            t.attributes, original.attributes,
            "{mode}: attributes untouched"
        );
        assert_ne!(t.pixels, original.pixels, "{mode}");
    }
    let out = dir.join("pid.dcm");
    ctdata_paths(&["tamper", "--mode", "patient-id"], &[src, &out]);
    let t = fp(&out);
    assert_ne!(t.digest, original.digest);
    assert_eq!(t.pixels, original.pixels);
    assert_eq!(t.changed_attributes(&original), vec![0x0010_0020]);
}

/// Feeding the data set in any chunking gives the same fingerprint (the gateway sees P-DATA
/// fragments of arbitrary size).
#[test]
fn chunking_does_not_matter() {
    let d = data();
    let dir = scratch("chunks");
    let native = &d.signed16[2];
    let rle = dir.join("rle.dcm");
    dcmtk("dcmcrle", &[], native, &rle);
    let want = fp(native);
    for path in [native.as_path(), rle.as_path()] {
        let bytes = std::fs::read(path).expect("read");
        let (ts, start) = part10_data_set(&bytes).expect("part 10");
        let data_set = &bytes[start..];
        // Deterministic pseudo-random chunk sizes, including 1-byte chunks.
        let mut seed = 0x2545F4914F6CDD1Du64;
        for round in 0..20 {
            let mut f = Fingerprinter::new(&ts).expect("ts");
            let mut rest = data_set;
            while !rest.is_empty() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let max = if round % 4 == 0 { 3 } else { 20_000 };
                let n = (1 + (seed % max) as usize).min(rest.len());
                f.feed(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(
                f.finish().expect("fingerprint"),
                want,
                "{} round {round}",
                path.display()
            );
        }
    }
}

#[test]
fn truncated_and_corrupt_inputs_are_errors_not_panics() {
    let d = data();
    let bytes = std::fs::read(&d.signed16[0]).expect("read");
    let (ts, start) = part10_data_set(&bytes).expect("part 10");
    for cut in [start + 1, start + 100, bytes.len() / 2, bytes.len() - 1] {
        let mut f = Fingerprinter::new(&ts).expect("ts");
        f.feed(&bytes[start..cut]);
        assert!(f.finish().is_err(), "cut at {cut}");
    }
    // Flipping bytes anywhere never panics; a flip inside the pixel data always shows.
    let want = fp(&d.signed16[0]);
    let pixels_from = bytes.len() - 64 * 64 * 2;
    for i in (start..bytes.len()).step_by(97) {
        let mut b = bytes[start..].to_vec();
        b[i - start] ^= 0xFF;
        let mut f = Fingerprinter::new(&ts).expect("ts");
        f.feed(&b);
        let got = f.finish();
        if i >= pixels_from {
            assert_ne!(
                got.expect("still parses").digest,
                want.digest,
                "flip at {i}"
            );
        }
    }
}

/// JPEG-LS Lossless copies of an RGB multi-frame image, in each interleave mode and with the
/// frames split over several fragments (found through the Basic Offset Table), fingerprint as
/// decoded samples exactly like the native original.
#[test]
fn colour_multiframe_jpegls_fingerprints_as_the_original() {
    let dir = scratch("colour-jpegls");
    let native = dir.join("native.dcm");
    ctdata_paths(&["colour", "--frames", "3"], &[&native]);
    let want = fp(&native);
    assert!(matches!(want.pixels, PixelDigest::Samples { .. }));
    for (label, args) in [
        ("line", &["+el", "+il"][..]),
        ("sample", &["+el", "+is"]),
        ("none", &["+el", "+in"]),
        ("sample-fragments", &["+el", "+is", "+fs", "1"]),
    ] {
        let out = dir.join(format!("{label}.dcm"));
        dcmtk("dcmcjpls", args, &native, &out);
        let got = fingerprint_file(&out).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(got.fingerprint, want, "{label}");
    }
}
