//! Differential test against DCMTK: every stream `tests/support/make_jls.py` makes with
//! `dcmcjpls` (lossless and near-lossless, 8/10/12/16 bits, monochrome and RGB in the three
//! interleave modes, custom thresholds and RESET, several frames, several fragments per frame,
//! restart intervals) decodes here to exactly the samples `dcmdjpls` decodes.

use std::path::{Path, PathBuf};
use std::process::Command;

use radguard_jpegls::{decode, Limits};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the generator once per test binary; returns its folder and manifest rows.
fn streams() -> &'static (tempfile::TempDir, Vec<Vec<String>>) {
    static DATA: std::sync::OnceLock<(tempfile::TempDir, Vec<Vec<String>>)> =
        std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        let python = workspace_root().join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup-test-env.sh (pydicom and numpy in the project venv)",
            python.display()
        );
        for tool in ["dcmcjpls", "dcmdjpls"] {
            assert!(
                Path::new("/usr/bin").join(tool).exists(),
                "/usr/bin/{tool} is missing: install DCMTK (scripts/setup-test-env.sh)"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make_jls.py"))
            .arg(dir.path())
            .output()
            .expect("run make_jls.py");
        assert!(
            out.status.success(),
            "make_jls.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = std::fs::read_to_string(dir.path().join("manifest.tsv")).expect("manifest");
        let rows = manifest
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        (dir, rows)
    })
}

fn num(s: &str) -> usize {
    s.parse().expect("number")
}

#[test]
fn every_dcmcjpls_stream_decodes_as_dcmdjpls_decodes_it() {
    let (dir, rows) = streams();
    assert!(rows.len() >= 30, "only {} variants", rows.len());
    let mut frames_checked = 0;
    for row in rows {
        let [name, width, height, frames, spp, bytes] = row.as_slice() else {
            panic!("manifest row {row:?}");
        };
        let want = std::fs::read(dir.path().join(format!("{name}.raw"))).expect("raw");
        let mut got = Vec::new();
        for k in 0..num(frames) {
            let jls = std::fs::read(dir.path().join(format!("{name}.f{k}.jls"))).expect("jls");
            let img = decode(&jls, &Limits::default())
                .unwrap_or_else(|e| panic!("{name} frame {k}: {e}"));
            assert_eq!(img.header.width as usize, num(width), "{name}");
            assert_eq!(img.header.height as usize, num(height), "{name}");
            assert_eq!(img.header.components.len(), num(spp), "{name}");
            for s in img.samples {
                if num(bytes) == 1 {
                    got.push(u8::try_from(s).expect("8-bit sample"));
                } else {
                    got.extend_from_slice(&s.to_le_bytes());
                }
            }
            frames_checked += 1;
        }
        assert_eq!(got.len(), want.len(), "{name}: length");
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!(
                "{name}: first difference at byte {i} (sample {}): got {}, dcmdjpls {}",
                i / num(bytes),
                got[i],
                want[i]
            );
        }
    }
    eprintln!("{} variants, {frames_checked} frames identical", rows.len());
}

/// Damaged copies of real streams (truncated, bytes flipped) give an error or an image, never
/// a panic, and never an image whose sample count disagrees with its header.
#[test]
fn damaged_streams_are_errors_not_panics() {
    let (dir, rows) = streams();
    let mut errors = 0;
    for row in rows.iter().take(12) {
        let name = &row[0];
        let jls = std::fs::read(dir.path().join(format!("{name}.f0.jls"))).expect("jls");
        for cut in (0..jls.len()).step_by(jls.len() / 40 + 1) {
            if decode(&jls[..cut], &Limits::default()).is_err() {
                errors += 1;
            }
        }
        for i in (0..jls.len()).step_by(jls.len() / 60 + 1) {
            let mut bad = jls.clone();
            bad[i] ^= 0x5A;
            match decode(&bad, &Limits::default()) {
                Ok(img) => assert_eq!(
                    img.samples.len(),
                    img.header.width as usize
                        * img.header.height as usize
                        * img.header.components.len()
                ),
                Err(_) => errors += 1,
            }
        }
    }
    assert!(errors > 100, "only {errors} errors");
}

#[test]
fn output_limit_is_checked_before_decoding() {
    let (dir, _) = streams();
    let jls = std::fs::read(dir.path().join("m16-lossless.f0.jls")).expect("jls");
    let e = decode(
        &jls,
        &Limits {
            max_output_bytes: 64 * 64 * 2 - 1,
        },
    )
    .expect_err("limit");
    assert!(
        matches!(e, radguard_jpegls::Error::TooLarge { bytes: 8192, .. }),
        "{e}"
    );
    decode(
        &jls,
        &Limits {
            max_output_bytes: 64 * 64 * 2,
        },
    )
    .expect("at the limit");
}
