//! Verdicts for DICOM files: `unchanged` (with an inclusion proof checked against the signed
//! head), `altered` (which attributes, whether the pixels differ, and where when the original
//! is in the vault), `lossy-reencoded`, `unknown`, `unsupported`, or `error`.
//!
//! The comparison itself ([`compare`]) is pure; [`verify_file`] adds the file, ledger and
//! vault I/O; [`collect_files`] walks folders; [`verify_all`] verifies many files in parallel,
//! reporting each as it is done; [`open_views`] opens ledgers under pinned keys.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::fingerprint::{
    attribute_name, fingerprint_file, fingerprint_file_with_pixels, Fingerprint, FingerprintError,
    Layout, PixelDigest, DEFAULT_MAX_ENCAPSULATED, REPRESENTATION_ATTRIBUTES,
};
use crate::ledger::{LedgerError, LedgerView};
use crate::note::{NoteError, VerifierKey};
use crate::store::LoggedEntry;

/// Why a verifier key or a ledger could not be opened ([`load_key`], [`open_views`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `arg` is neither a verifier key nor a readable file.
    #[error("key {arg}: {source}")]
    KeyFile {
        arg: String,
        #[source]
        source: std::io::Error,
    },
    /// The file `arg` does not hold a verifier key.
    #[error("key {arg}: {source}")]
    Key {
        arg: String,
        #[source]
        source: NoteError,
    },
    /// Keys were pinned, but none for this ledger's origin (a swapped `verifier.key` must not
    /// be trusted instead).
    #[error("no --key given for the ledger in {}", .0.display())]
    NoKeyFor(PathBuf),
    #[error("ledger {}: {source}", dir.display())]
    Ledger {
        dir: PathBuf,
        #[source]
        source: LedgerError,
    },
}

/// Why the vault's copy of an instance could not be looked up ([`vault_object`]).
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The vault has no index (not a vault, or the wrong directory).
    #[error("{} does not exist", .0.display())]
    NoIndex(PathBuf),
    #[error("vault index: {0}")]
    Index(#[from] rusqlite::Error),
    /// The index names an object by something other than a lowercase SHA-256 (refused: it
    /// would become a path, e.g. `../..`).
    #[error("vault index holds an invalid hash")]
    InvalidHash,
}

/// Why an altered file got no changed-region report (it goes into the report's detail).
#[derive(Debug, thiserror::Error)]
enum RegionError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("the original is not in the vault")]
    NotInVault,
    #[error("vault copy: {0}")]
    VaultCopy(#[source] FingerprintError),
    #[error("the vault copy does not match the ledger either")]
    VaultCopyMismatch,
    /// The copy being verified could not be read with its pixels.
    #[error(transparent)]
    Copy(FingerprintError),
    #[error("pixel samples unavailable")]
    NoPixelSamples,
    #[error("the image geometry differs")]
    GeometryDiffers,
}

/// The verdict for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The fingerprint equals the logged one, and the entry is proven in the signed log.
    Unchanged,
    /// A fingerprinted attribute or the pixels differ from what was logged.
    Altered,
    /// Identity attributes match but the pixels were re-encoded with a lossy codec, so they
    /// cannot be proven equal (nor shown tampered).
    LossyReencoded,
    /// The SOP Instance UID was never logged.
    Unknown,
    /// The file cannot be compared (a codec Radguard does not decode, a transfer syntax UID
    /// that is not a UID).
    Unsupported,
    /// The file could not be read, or the ledger did not prove the entry.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unchanged => "unchanged",
            Verdict::Altered => "altered",
            Verdict::LossyReencoded => "lossy-reencoded",
            Verdict::Unknown => "unknown",
            Verdict::Unsupported => "unsupported",
            Verdict::Error => "error",
        }
    }
}

/// Where the changed pixels of one frame lie (inclusive bounds, 0-based).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Region {
    pub frame: u32,
    pub x_min: u32,
    pub y_min: u32,
    pub x_max: u32,
    pub y_max: u32,
    /// Pixels with at least one changed sample.
    pub changed_pixels: u64,
    /// Largest absolute difference of a stored sample value.
    pub max_abs_diff: u64,
}

/// The log entry a file was matched to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerMatch {
    pub ledger: PathBuf,
    pub origin: String,
    pub index: u64,
    pub logged_at: String,
    pub gateway_id: String,
    pub assoc_id: String,
    /// Size of the signed checkpoint the inclusion proof was checked against.
    pub checkpoint_size: u64,
    pub proof_hashes: usize,
    pub logged_fingerprint: String,
}

/// The report for one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sop_instance_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_syntax: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerMatch>,
    /// Keywords of fingerprinted attributes whose value differs from the logged one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_attributes: Vec<String>,
    /// Do the pixels differ from the logged ones? (`None`: not comparable.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixels_differ: Option<bool>,
    /// Changed regions per frame (only with the original from the vault).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<Region>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Bytes in the file.
    pub size: u64,
}

impl Report {
    /// The report for an input that could not be read as a file to verify (`why`).
    pub fn unreadable(path: PathBuf, why: String) -> Report {
        let mut r = Report::new(&path, Verdict::Error);
        r.detail = Some(why);
        r
    }

    fn new(path: &Path, verdict: Verdict) -> Report {
        Report {
            path: path.to_path_buf(),
            verdict,
            sop_instance_uid: None,
            fingerprint: None,
            transfer_syntax: None,
            ledger: None,
            changed_attributes: Vec::new(),
            pixels_differ: None,
            regions: Vec::new(),
            detail: None,
            size: 0,
        }
    }

    fn with_detail(mut self, detail: impl Into<String>) -> Report {
        self.detail = Some(detail.into());
        self
    }
}

/// How the pixels of a copy compare with the logged ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelComparison {
    Same,
    Differ,
    /// The copy (or the logged original) went through a lossy codec.
    Lossy,
    /// A codec Radguard cannot decode stands between them.
    NotComparable,
}

/// The outcome of comparing a fingerprint with the logged one (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub verdict: Verdict,
    pub changed_attributes: Vec<u32>,
    pub pixels: PixelComparison,
}

/// Compares a copy's fingerprint with the first logged fingerprint of its SOP Instance UID.
pub fn compare(copy: &Fingerprint, logged: &Fingerprint) -> Comparison {
    let changed = copy.changed_attributes(logged);
    if copy.digest == logged.digest {
        return Comparison {
            verdict: Verdict::Unchanged,
            changed_attributes: Vec::new(),
            pixels: PixelComparison::Same,
        };
    }
    let pixels = match (&logged.pixels, &copy.pixels) {
        (PixelDigest::None, PixelDigest::None) => PixelComparison::Same,
        (PixelDigest::Samples { digest: a }, PixelDigest::Samples { digest: b }) => {
            if a == b {
                PixelComparison::Same
            } else {
                PixelComparison::Differ
            }
        }
        (a @ PixelDigest::Codestream { .. }, b @ PixelDigest::Codestream { .. }) if a == b => {
            PixelComparison::Same
        }
        (PixelDigest::None, _) | (_, PixelDigest::None) => PixelComparison::Differ,
        (a, b) if a.is_lossy() || b.is_lossy() => PixelComparison::Lossy,
        _ => PixelComparison::NotComparable,
    };
    let identity_changed = changed
        .iter()
        .any(|t| !REPRESENTATION_ATTRIBUTES.contains(t));
    let verdict = match pixels {
        PixelComparison::Lossy if !identity_changed => Verdict::LossyReencoded,
        PixelComparison::NotComparable if changed.is_empty() => Verdict::Unsupported,
        // Any listed attribute (or the pixels) differing without a lossy codec in between,
        // or an identity attribute differing with one, is an alteration. A digest that differs
        // with no component differing cannot happen with consistent fingerprints; it is
        // reported as altered too.
        _ => Verdict::Altered,
    };
    Comparison {
        verdict,
        changed_attributes: changed,
        pixels,
    }
}

/// What `verify` works with.
pub struct Context {
    pub ledgers: Vec<LedgerView>,
    pub vault: Option<PathBuf>,
    /// Cap on encapsulated pixel data held for decoding, per file.
    pub max_encapsulated: u64,
}

impl Context {
    pub fn new(ledgers: Vec<LedgerView>, vault: Option<PathBuf>) -> Context {
        Context {
            ledgers,
            vault,
            max_encapsulated: DEFAULT_MAX_ENCAPSULATED,
        }
    }
}

/// Verifies one file.
pub fn verify_file(path: &Path, ctx: &Context) -> Report {
    let fp = match fingerprint_file(path) {
        Ok(fp) => fp,
        Err(FingerprintError::UnsupportedTransferSyntax(ts)) => {
            return Report::new(path, Verdict::Unsupported)
                .with_detail(format!("transfer syntax {ts} cannot be fingerprinted"))
        }
        Err(e) => return Report::new(path, Verdict::Error).with_detail(e.to_string()),
    };
    let mut report = Report::new(path, Verdict::Unknown);
    report.size = fp.size;
    report.fingerprint = Some(fp.fingerprint.digest.to_hex());
    report.transfer_syntax = Some(fp.transfer_syntax.clone());
    report.sop_instance_uid = fp.sop_instance_uid.clone();
    let Some(uid) = fp.sop_instance_uid.as_deref() else {
        return report.with_detail("the file has no SOP Instance UID");
    };

    // The first ledger that logged this UID decides.
    let mut found: Option<(&LedgerView, Vec<LoggedEntry>)> = None;
    for view in &ctx.ledgers {
        match view.lookup(uid) {
            Ok(entries) if !entries.is_empty() => {
                found = Some((view, entries));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                report.verdict = Verdict::Error;
                return report.with_detail(format!("ledger {}: {e}", view.dir().display()));
            }
        }
    }
    let Some((view, entries)) = found else {
        return report.with_detail("this SOP Instance UID was never logged");
    };
    let Some(first) = entries.first() else {
        return report;
    };
    let (head, proof) = match view.prove_included(first) {
        Ok(p) => p,
        Err(e) => {
            report.verdict = Verdict::Error;
            return report.with_detail(format!(
                "the ledger does not prove entry {}: {e}",
                first.index
            ));
        }
    };
    report.ledger = Some(LedgerMatch {
        ledger: view.dir().to_path_buf(),
        origin: head.checkpoint.origin.clone(),
        index: first.index,
        logged_at: first.entry.time.to_rfc3339(),
        gateway_id: first.entry.gateway_id.clone(),
        assoc_id: first.entry.assoc_id.clone(),
        checkpoint_size: head.checkpoint.size,
        proof_hashes: proof.len(),
        logged_fingerprint: first.entry.fingerprint.digest.to_hex(),
    });

    let cmp = compare(&fp.fingerprint, &first.entry.fingerprint);
    report.verdict = cmp.verdict;
    report.changed_attributes = cmp
        .changed_attributes
        .iter()
        .map(|t| attribute_name(*t))
        .collect();
    report.pixels_differ = match cmp.pixels {
        PixelComparison::Same => Some(false),
        PixelComparison::Differ => Some(true),
        PixelComparison::Lossy | PixelComparison::NotComparable => None,
    };
    match cmp.verdict {
        Verdict::Unchanged => {}
        Verdict::Altered => {
            if let Some(later) = entries
                .iter()
                .skip(1)
                .find(|e| e.entry.fingerprint.digest == fp.fingerprint.digest)
            {
                report.detail = Some(format!(
                    "matches a conflicting re-send logged later (entry {}), not the original",
                    later.index
                ));
            }
            if cmp.pixels == PixelComparison::Differ {
                if let Some(vault) = &ctx.vault {
                    match regions_from_vault(
                        path,
                        uid,
                        &first.entry.fingerprint,
                        vault,
                        ctx.max_encapsulated,
                    ) {
                        Ok(regions) => report.regions = regions,
                        Err(why) => {
                            let d = report.detail.take();
                            report.detail = Some(match d {
                                Some(d) => format!("{d}; no region report: {why}"),
                                None => format!("no region report: {why}"),
                            });
                        }
                    }
                }
            }
        }
        Verdict::LossyReencoded => {
            let rep: Vec<String> = cmp
                .changed_attributes
                .iter()
                .map(|t| attribute_name(*t))
                .collect();
            report.detail = Some(if rep.is_empty() {
                "pixels went through a lossy codec; identity attributes match".to_string()
            } else {
                format!(
                    "pixels went through a lossy codec (representation changed: {}); identity attributes match",
                    rep.join(", ")
                )
            });
        }
        Verdict::Unsupported => {
            report.detail =
                Some("the pixels are in a codec Radguard cannot decode; attributes match".into());
        }
        _ => {}
    }
    report
}

/// The vault object for a SOP Instance UID (read-only access to `<vault>/index.sqlite`).
pub fn vault_object(vault: &Path, sop_instance_uid: &str) -> Result<Option<PathBuf>, VaultError> {
    let index = vault.join("index.sqlite");
    if !index.exists() {
        return Err(VaultError::NoIndex(index));
    }
    let conn = Connection::open_with_flags(
        &index,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let sha: Option<String> = conn
        .query_row(
            "SELECT sha256 FROM instances WHERE sop_instance_uid = ?1",
            [sop_instance_uid],
            |r| r.get(0),
        )
        .optional()?;
    let Some(sha) = sha else { return Ok(None) };
    // Only a lowercase SHA-256 may become a path.
    if sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(VaultError::InvalidHash);
    }
    Ok(Some(
        vault
            .join("objects")
            .join(&sha[0..2])
            .join(&sha[2..4])
            .join(format!("{sha}.dcm")),
    ))
}

fn regions_from_vault(
    copy: &Path,
    uid: &str,
    logged: &Fingerprint,
    vault: &Path,
    max_encapsulated: u64,
) -> Result<Vec<Region>, RegionError> {
    let original = vault_object(vault, uid)?.ok_or(RegionError::NotInVault)?;
    let orig = fingerprint_file_with_pixels(&original, max_encapsulated)
        .map_err(RegionError::VaultCopy)?;
    if orig.fingerprint.digest != logged.digest {
        return Err(RegionError::VaultCopyMismatch);
    }
    let new = fingerprint_file_with_pixels(copy, max_encapsulated).map_err(RegionError::Copy)?;
    let (Some((la, a)), Some((lb, b))) = (orig.pixels, new.pixels) else {
        return Err(RegionError::NoPixelSamples);
    };
    changed_regions(&la, &a, &lb, &b).ok_or(RegionError::GeometryDiffers)
}

/// Bounding boxes of changed pixels per frame, between two canonical sample buffers of the
/// same geometry (`None` if the geometries differ).
pub fn changed_regions(la: &Layout, a: &[u8], lb: &Layout, b: &[u8]) -> Option<Vec<Region>> {
    if la.rows != lb.rows
        || la.columns != lb.columns
        || la.frames != lb.frames
        || la.samples_per_pixel != lb.samples_per_pixel
        || la.sample_bytes() != lb.sample_bytes()
        || la.bits_allocated == 1
        || la.ybr422
        || lb.ybr422
    {
        return None;
    }
    let sb = la.sample_bytes();
    let spp = la.samples_per_pixel as usize;
    let cols = la.columns as usize;
    let frame_bytes = la.frame_bytes() as usize;
    let value = |s: &[u8], signed: bool| -> i128 {
        let s = s.get(..8).unwrap_or(s);
        let mut buf = [0u8; 8];
        for (d, b) in buf.iter_mut().zip(s) {
            *d = *b;
        }
        let u = i128::from(u64::from_le_bytes(buf));
        match s.last() {
            Some(&top) if signed && s.len() < 8 && top & 0x80 != 0 => u - (1i128 << (8 * s.len())),
            _ => u,
        }
    };
    let mut out = Vec::new();
    for f in 0..la.frames as usize {
        let (Some(fa), Some(fb)) = (
            a.get(f * frame_bytes..(f + 1) * frame_bytes),
            b.get(f * frame_bytes..(f + 1) * frame_bytes),
        ) else {
            return None;
        };
        if fa == fb {
            continue;
        }
        let mut r = Region {
            frame: f as u32 + 1,
            x_min: u32::MAX,
            y_min: u32::MAX,
            x_max: 0,
            y_max: 0,
            changed_pixels: 0,
            max_abs_diff: 0,
        };
        let px_bytes = sb * spp;
        for (p, (pa, pb)) in fa
            .chunks_exact(px_bytes)
            .zip(fb.chunks_exact(px_bytes))
            .enumerate()
        {
            if pa == pb {
                continue;
            }
            let (x, y) = ((p % cols) as u32, (p / cols) as u32);
            r.x_min = r.x_min.min(x);
            r.y_min = r.y_min.min(y);
            r.x_max = r.x_max.max(x);
            r.y_max = r.y_max.max(y);
            r.changed_pixels += 1;
            for (sa, sb_) in pa.chunks_exact(sb).zip(pb.chunks_exact(sb)) {
                let d = (value(sa, la.signed) - value(sb_, lb.signed)).unsigned_abs();
                r.max_abs_diff = r.max_abs_diff.max(d.min(u128::from(u64::MAX)) as u64);
            }
        }
        out.push(r);
    }
    Some(out)
}

/// Files under the given paths: files as given, folders searched recursively (symbolic links
/// to folders are not followed), sorted per folder. Files found in folders that do not carry
/// the `DICM` prefix are left out; files named explicitly are always kept. Also returns the
/// paths that could not be read.
pub fn collect_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut files, &mut problems),
            Ok(_) => files.push(p.clone()),
            Err(e) => problems.push((p.clone(), e.to_string())),
        }
    }
    (files, problems)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    let mut items: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    items.sort();
    for p in items {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, files, problems),
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::metadata(&p).map(|t| t.is_file()).unwrap_or(false)
                    && looks_like_dicom(&p)
                {
                    files.push(p);
                }
            }
            Ok(m) if m.is_file() => {
                if looks_like_dicom(&p) {
                    files.push(p);
                }
            }
            Ok(_) => {}
            Err(e) => problems.push((p, e.to_string())),
        }
    }
}

/// Does the file carry the Part 10 `DICM` prefix? (Used to pass over other files in folders.)
pub fn looks_like_dicom(path: &Path) -> bool {
    use std::io::Read as _;
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::with_capacity(132);
    if f.take(132).read_to_end(&mut head).is_err() {
        return false;
    }
    head.get(128..132) == Some(b"DICM") || head.get(..4) == Some(b"DICM")
}

/// Verifies `files` on `jobs` worker threads (at least one), in the order given; `done` is
/// called (from the workers) as each report is made, e.g. to drive a progress bar.
pub fn verify_all(
    files: &[PathBuf],
    ctx: &Context,
    jobs: usize,
    done: &(dyn Fn(&Report) + Sync),
) -> Result<Vec<Report>, rayon::ThreadPoolBuildError> {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()?;
    Ok(pool.install(|| {
        files
            .par_iter()
            .map(|f| {
                let r = verify_file(f, ctx);
                done(&r);
                r
            })
            .collect()
    }))
}

/// Reads a verifier key given as text (`name+hash+key`) or as a file holding it.
pub fn load_key(arg: &str) -> Result<VerifierKey, VerifyError> {
    if let Ok(k) = VerifierKey::parse(arg) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(arg).map_err(|source| VerifyError::KeyFile {
        arg: arg.to_string(),
        source,
    })?;
    VerifierKey::parse(&text).map_err(|source| VerifyError::Key {
        arg: arg.to_string(),
        source,
    })
}

/// Opens each ledger directory read-only. Without `pinned` keys each ledger is checked with its
/// own `verifier.key`; with them, each ledger needs the pinned key of its origin (or the only
/// one given), so a ledger whose key was swapped is refused instead of trusted.
pub fn open_views(
    ledgers: &[PathBuf],
    pinned: &[VerifierKey],
) -> Result<Vec<LedgerView>, VerifyError> {
    let mut views = Vec::new();
    for dir in ledgers {
        let key = if pinned.is_empty() {
            None
        } else {
            let own = std::fs::read_to_string(dir.join(crate::VERIFIER_KEY_FILE))
                .ok()
                .and_then(|t| VerifierKey::parse(&t).ok());
            let name = own.as_ref().map(|k| k.name().to_string());
            let k = pinned
                .iter()
                .find(|k| Some(k.name()) == name.as_deref())
                .or_else(|| {
                    if pinned.len() == 1 {
                        pinned.first()
                    } else {
                        None
                    }
                })
                .ok_or_else(|| VerifyError::NoKeyFor(dir.clone()))?;
            Some(k.clone())
        };
        views.push(
            LedgerView::open(dir, key).map_err(|source| VerifyError::Ledger {
                dir: dir.clone(),
                source,
            })?,
        );
    }
    Ok(views)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{AttributeDigest, Digest};

    fn fp(attrs: &[(u32, u8)], pixels: PixelDigest) -> Fingerprint {
        let attribute_digests: Vec<AttributeDigest> = attrs
            .iter()
            .map(|(t, v)| AttributeDigest {
                tag: *t,
                digest: [*v; 8],
            })
            .collect();
        let mut a = [0u8; 32];
        for (i, (_, v)) in attrs.iter().enumerate() {
            a[i % 32] ^= v.wrapping_add(i as u8);
        }
        let attributes = Digest(a);
        Fingerprint {
            digest: Fingerprint::compose(&attributes, &pixels),
            attributes,
            pixels,
            attribute_digests,
        }
    }

    fn samples(v: u8) -> PixelDigest {
        PixelDigest::Samples {
            digest: Digest([v; 32]),
        }
    }

    fn codestream(ts: &str, v: u8) -> PixelDigest {
        PixelDigest::Codestream {
            transfer_syntax: ts.into(),
            digest: Digest([v; 32]),
        }
    }

    const PID: u32 = 0x0010_0020;
    const INTERCEPT: u32 = 0x0028_1052;
    const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
    const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";

    #[test]
    fn verdict_table() {
        let base = [(PID, 1), (INTERCEPT, 1)];
        let logged = fp(&base, samples(1));
        let c = compare(&logged.clone(), &logged);
        assert_eq!(
            (c.verdict, c.pixels),
            (Verdict::Unchanged, PixelComparison::Same)
        );

        let c = compare(&fp(&base, samples(2)), &logged);
        assert_eq!(
            (c.verdict, c.pixels),
            (Verdict::Altered, PixelComparison::Differ)
        );
        assert!(c.changed_attributes.is_empty());

        let c = compare(&fp(&[(PID, 9), (INTERCEPT, 1)], samples(1)), &logged);
        assert_eq!(
            (c.verdict, c.changed_attributes.clone()),
            (Verdict::Altered, vec![PID])
        );
        assert_eq!(c.pixels, PixelComparison::Same);

        // Attribute removed.
        let c = compare(&fp(&[(INTERCEPT, 1)], samples(1)), &logged);
        assert_eq!(
            (c.verdict, c.changed_attributes),
            (Verdict::Altered, vec![PID])
        );

        // Lossy copy: representation changes allowed, identity changes not.
        let c = compare(
            &fp(&[(PID, 1), (INTERCEPT, 7)], codestream(JPEG_BASELINE, 3)),
            &logged,
        );
        assert_eq!(
            (c.verdict, c.pixels),
            (Verdict::LossyReencoded, PixelComparison::Lossy)
        );
        let c = compare(
            &fp(&[(PID, 2), (INTERCEPT, 1)], codestream(JPEG_BASELINE, 3)),
            &logged,
        );
        assert_eq!(c.verdict, Verdict::Altered);

        // A logged lossy original decoded to native: lossy, not provable.
        let lossy_logged = fp(&base, codestream(JPEG_BASELINE, 4));
        assert_eq!(
            compare(&fp(&base, samples(4)), &lossy_logged).verdict,
            Verdict::LossyReencoded
        );
        // The same lossy codestream is unchanged; another one is lossy-reencoded.
        assert_eq!(
            compare(&lossy_logged.clone(), &lossy_logged).verdict,
            Verdict::Unchanged
        );
        assert_eq!(
            compare(&fp(&base, codestream(JPEG_BASELINE, 5)), &lossy_logged).verdict,
            Verdict::LossyReencoded
        );

        // A lossless codec Radguard cannot decode: not comparable, unless attributes differ.
        let c = compare(&fp(&base, codestream(J2K_LOSSLESS, 6)), &logged);
        assert_eq!(
            (c.verdict, c.pixels),
            (Verdict::Unsupported, PixelComparison::NotComparable)
        );
        let c = compare(
            &fp(&[(PID, 3), (INTERCEPT, 1)], codestream(J2K_LOSSLESS, 6)),
            &logged,
        );
        assert_eq!(c.verdict, Verdict::Altered);

        // Pixel data removed or added.
        let c = compare(&fp(&base, PixelDigest::None), &logged);
        assert_eq!(
            (c.verdict, c.pixels),
            (Verdict::Altered, PixelComparison::Differ)
        );
    }

    fn layout(rows: u32, cols: u32, frames: u32, signed: bool) -> Layout {
        Layout {
            rows,
            columns: cols,
            frames,
            samples_per_pixel: 1,
            bits_allocated: 16,
            bits_stored: 16,
            shift: 0,
            signed,
            planar: false,
            ybr422: false,
            float: false,
        }
    }

    #[test]
    fn regions_are_bounding_boxes_per_frame() {
        let l = layout(8, 10, 3, true);
        let a: Vec<u8> = (0..8 * 10 * 3)
            .flat_map(|i: i32| ((i % 50) as i16 - 25).to_le_bytes())
            .collect();
        let mut b = a.clone();
        // Frame 2 (index 1): pixels (2,3) and (6,5) raised by 300; frame 3 untouched; frame 1:
        // one pixel lowered by 1000.
        let set = |buf: &mut Vec<u8>, f: usize, x: usize, y: usize, delta: i16| {
            let at = ((f * 80) + y * 10 + x) * 2;
            let v = i16::from_le_bytes([buf[at], buf[at + 1]]).wrapping_add(delta);
            buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
        };
        set(&mut b, 1, 2, 3, 300);
        set(&mut b, 1, 6, 5, 300);
        set(&mut b, 0, 9, 7, -1000);
        let r = changed_regions(&l, &a, &l, &b).expect("same geometry");
        assert_eq!(
            r,
            vec![
                Region {
                    frame: 1,
                    x_min: 9,
                    y_min: 7,
                    x_max: 9,
                    y_max: 7,
                    changed_pixels: 1,
                    max_abs_diff: 1000
                },
                Region {
                    frame: 2,
                    x_min: 2,
                    y_min: 3,
                    x_max: 6,
                    y_max: 5,
                    changed_pixels: 2,
                    max_abs_diff: 300
                },
            ]
        );
        assert!(changed_regions(&l, &a, &layout(10, 8, 3, true), &b).is_none());
        assert_eq!(changed_regions(&l, &a, &l, &a).expect("same"), vec![]);
    }
}
