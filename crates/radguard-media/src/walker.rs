//! The streaming Part 10 walker: preamble, meta group, data set, trailing data.
//!
//! # Why not `dicom-object`?
//!
//! `dicom_object::open_file` builds an `InMemDicomObject`: every value, the pixel data
//! included, is read into memory, so a 512 MiB file costs more than 512 MiB of RSS, and a
//! hostile length field is an allocation request. `dicom-parser`'s token reader streams, but
//! it turns structural errors into a single error (we need to know *where* and *what*, and to
//! keep going to find payloads behind the error), it does not expose raw value bytes in
//! chunks for signature search, and it has no notion of bytes after the data set. So the scan
//! uses this small walker: it reads through a fixed 256 KiB buffer ([`Source`]), never
//! allocates from a length field, checks every length against what is left before trusting
//! it, and hands value bytes to the [`ContentScanner`] as they pass. Peak memory is a few
//! hundred KiB whatever the file size.
//!
//! The walker never panics on input: every length is checked, every arithmetic on input
//! values is checked, and recursion is bounded by [`ScanOptions::max_depth`].

use std::io::{self, Read};

use dicom_core::dictionary::{DataDictionary, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use flate2::bufread::DeflateDecoder;
use radguard_dicom::types::Uid;

use crate::bytes::{array_at, prefix, u16_at, u16_from, u32_from};
use crate::content::{ContentHit, ContentScanner};
use crate::report::{DataSetFacts, Finding, FindingCode as C, Severity as S};
use crate::signature::{classify_preamble, is_pe_header, PreambleKind};
use crate::source::Source;
use crate::ScanOptions;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: u32 = 0xFFFE_E000;
const ITEM_DELIM: u32 = 0xFFFE_E00D;
const SEQ_DELIM: u32 = 0xFFFE_E0DD;
const PIXEL_DATA: u32 = 0x7FE0_0010;
const FLOAT_PIXEL_DATA: u32 = 0x7FE0_0008;
const DOUBLE_PIXEL_DATA: u32 = 0x7FE0_0009;
const ENCAPSULATED_DOCUMENT: u32 = 0x0042_0011;
const REFERENCED_FILE_ID: u32 = 0x0004_1500;
const SOP_CLASS_UID: u32 = 0x0008_0016;
const SOP_INSTANCE_UID: u32 = 0x0008_0018;
const SAMPLES_PER_PIXEL: u32 = 0x0028_0002;
const PHOTOMETRIC: u32 = 0x0028_0004;
const NUMBER_OF_FRAMES: u32 = 0x0028_0008;
const ROWS: u32 = 0x0028_0010;
const COLUMNS: u32 = 0x0028_0011;
const BITS_ALLOCATED: u32 = 0x0028_0100;

/// Media Storage Directory Storage: a DICOMDIR.
pub(crate) const DICOMDIR_SOP_CLASS: &str = "1.2.840.10008.1.3.10";
/// Values shorter than this cannot hold any executable header we look for.
const MIN_SCAN_LEN: u64 = 24;
/// Values we read into memory to look at are at most this long.
const MAX_CAPTURE: u32 = 1024;
/// Cap on the number of DICOMDIR Referenced File IDs kept.
const MAX_REF_IDS: usize = 200_000;
/// Cap on findings of one code, so a pathological file cannot grow the report unboundedly.
const MAX_PER_CODE: usize = 20;

/// How the data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Enc {
    pub explicit: bool,
    pub big: bool,
}

pub(crate) const EXPLICIT_LE: Enc = Enc {
    explicit: true,
    big: false,
};
pub(crate) const IMPLICIT_LE: Enc = Enc {
    explicit: false,
    big: false,
};

/// What a transfer syntax says about the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TsInfo {
    pub enc: Enc,
    pub deflated: bool,
    pub encapsulated: bool,
}

/// Classifies a transfer syntax UID, `None` when unknown.
pub(crate) fn transfer_syntax_info(uid: &str) -> Option<TsInfo> {
    let native = |enc, deflated| TsInfo {
        enc,
        deflated,
        encapsulated: false,
    };
    let encap = TsInfo {
        enc: EXPLICIT_LE,
        deflated: false,
        encapsulated: true,
    };
    match uid {
        "1.2.840.10008.1.2" => Some(native(IMPLICIT_LE, false)),
        "1.2.840.10008.1.2.1" => Some(native(EXPLICIT_LE, false)),
        "1.2.840.10008.1.2.2" => Some(native(
            Enc {
                explicit: true,
                big: true,
            },
            false,
        )),
        "1.2.840.10008.1.2.1.99" => Some(native(EXPLICIT_LE, true)),
        // JPIP Referenced Deflate: deflated data set, pixel data referenced.
        "1.2.840.10008.1.2.4.95" => Some(native(EXPLICIT_LE, true)),
        "1.2.840.10008.1.2.1.98" | "1.2.840.10008.1.2.5" | "1.2.840.10008.1.2.8.1" => Some(encap),
        u if u.starts_with("1.2.840.10008.1.2.4.")
            || u.starts_with("1.2.840.10008.1.2.6.")
            || u.starts_with("1.2.840.10008.1.2.7.") =>
        {
            let tail = u.rsplit('.').next().unwrap_or("");
            if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
                Some(encap)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn valid_vr(v: [u8; 2]) -> bool {
    VR::from_binary(v).is_some()
}

/// VRs whose values are bulk binary or long text; the rest get an "oversized" check.
fn bulk_vr(v: [u8; 2]) -> bool {
    matches!(
        &v,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"UN"
            | b"UT"
            | b"UC"
            | b"UR"
            | b"LT"
            | b"ST"
            | b"SQ"
    )
}

/// Unit size of binary VRs.
fn unit_of(v: [u8; 2]) -> u32 {
    match &v {
        b"US" | b"SS" | b"OW" => 2,
        b"UL" | b"SL" | b"FL" | b"AT" | b"OF" | b"OL" => 4,
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => 8,
        _ => 1,
    }
}

fn dict_vr(tag: u32) -> Option<[u8; 2]> {
    let (g, e) = ((tag >> 16) as u16, tag as u16);
    if e == 0 {
        return Some(*b"UL");
    }
    if g % 2 == 1 {
        return if (0x0010..=0x00FF).contains(&e) {
            Some(*b"LO")
        } else {
            None
        };
    }
    let entry = StandardDataDictionary.by_tag(Tag(g, e))?;
    let vr = match entry.vr {
        VirtualVr::Exact(vr) => vr,
        VirtualVr::Xs => VR::US,
        _ => VR::OW,
    };
    <[u8; 2]>::try_from(vr.to_string().as_bytes()).ok()
}

fn fmt_tag(tag: u32) -> String {
    format!("({:04X},{:04X})", tag >> 16, tag & 0xFFFF)
}

fn trim_value(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .trim_start_matches(' ')
        .to_string()
}

/// Why the walk stopped early.
enum Stop {
    /// A finding has been recorded; the structure cannot be followed further.
    Fatal,
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

type W<T> = Result<T, Stop>;

/// Where a data set or sequence ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// End of stream (the top-level data set).
    Eof,
    /// An absolute offset (defined length).
    At(u64),
    /// An item or sequence delimiter (undefined length).
    Delim,
}

struct Header {
    tag: u32,
    /// `None` for item and delimiter tags, or an unknown VR in implicit encoding.
    vr: Option<[u8; 2]>,
    len: u32,
    offset: u64,
    raw: [u8; 12],
    raw_len: usize,
}

impl Header {
    /// The header bytes as read.
    fn raw(&self) -> &[u8] {
        prefix(&self.raw, self.raw_len)
    }
}

enum ReadHeader {
    Eof,
    /// `n` bytes before end of stream, fewer than a header.
    Partial(usize, [u8; 12]),
    /// Explicit VR bytes that are not a VR.
    BadVr(Header),
    Ok(Header),
}

/// Per-data-set attributes needed to check the pixel data length.
#[derive(Default)]
struct PixelAttrs {
    rows: Option<u64>,
    columns: Option<u64>,
    samples: Option<u64>,
    bits: Option<u64>,
    frames: Option<u64>,
    photometric: Option<String>,
}

/// What a far-PE probe stands for.
struct FarProbe {
    mz: u64,
    context: String,
    from_preamble: bool,
}

pub(crate) struct Walker<'o> {
    opts: &'o ScanOptions,
    pub(crate) findings: Vec<Finding>,
    pub(crate) facts: DataSetFacts,
    pub(crate) ref_file_ids: Vec<(u64, String)>,
    meta_class: Option<String>,
    meta_instance: Option<String>,
    ts: Option<TsInfo>,
    /// Set while walking an inflated stream: offsets are not file offsets.
    inflated: bool,
    /// Known total length of the raw stream.
    total: Option<u64>,
    far: Vec<FarProbe>,
}

impl<'o> Walker<'o> {
    pub(crate) fn new(opts: &'o ScanOptions, total: Option<u64>) -> Self {
        Walker {
            opts,
            findings: Vec::new(),
            facts: DataSetFacts::default(),
            ref_file_ids: Vec::new(),
            meta_class: None,
            meta_instance: None,
            ts: None,
            inflated: false,
            total,
            far: Vec::new(),
        }
    }

    fn push(&mut self, sev: S, code: C, off: Option<u64>, msg: impl Into<String>) {
        if self.findings.iter().filter(|f| f.code == code).count() >= MAX_PER_CODE {
            return;
        }
        let mut msg = msg.into();
        let off = if self.inflated {
            if let Some(o) = off {
                msg.push_str(&format!(" (at byte {o} of the inflated data set)"));
            }
            None
        } else {
            off
        };
        self.findings.push(Finding::new(sev, code, off, msg));
    }

    /// Bytes left in the raw stream after `pos`, when known.
    fn remaining(&self, pos: u64) -> Option<u64> {
        if self.inflated {
            None
        } else {
            self.total.map(|t| t.saturating_sub(pos))
        }
    }

    // ----- entry points -------------------------------------------------------------------

    /// Walks a Part 10 stream (or a raw data set, detected) from its first byte.
    pub(crate) fn walk_file<R: Read>(&mut self, src: &mut Source<R>) -> io::Result<()> {
        let head = prefix(src.peek(132)?, 132).to_vec();
        let part10 = head
            .split_first_chunk::<128>()
            .filter(|(_, magic)| magic.starts_with(b"DICM"));
        if let Some((pre, _)) = part10 {
            self.check_preamble(src, pre);
            let mut skip = [0u8; 132];
            src.read_full(&mut skip)?;
            return self.after_preamble(src);
        }
        // No preamble: a raw data set (possibly starting with a meta group), or not DICOM.
        match sniff_dataset(&head) {
            Some(enc) => {
                self.push(
                    S::Warning,
                    C::NoPart10Header,
                    Some(0),
                    "no 128-byte preamble and DICM prefix: a raw data set, not a Part 10 file",
                );
                if u16_at(&head, 0, false) == Some(0x0002) {
                    self.after_preamble(src)
                } else {
                    self.walk_body(src, enc, None)?;
                    self.finish(src);
                    Ok(())
                }
            }
            None => {
                let what = match classify_preamble(prefix(&head, 128)) {
                    PreambleKind::Mz { .. } => "a DOS/Windows executable",
                    PreambleKind::Exe(_) | PreambleKind::BareMagic(_) => "an executable",
                    PreambleKind::Script => "a script",
                    PreambleKind::Zip => "a ZIP archive",
                    PreambleKind::Pdf => "a PDF document",
                    PreambleKind::Tiff => "a TIFF image",
                    PreambleKind::Zero | PreambleKind::Other => "not DICOM",
                };
                let msg = if what == "not DICOM" {
                    "no DICM prefix at offset 128 and no data set at offset 0".to_string()
                } else {
                    format!("not DICOM: the file is {what}")
                };
                self.push(S::Info, C::NotDicom, Some(0), msg);
                Ok(())
            }
        }
    }

    /// Walks a bare data set (no preamble, no meta) in the given transfer syntax, as a
    /// gateway receives it over the network.
    pub(crate) fn walk_dataset_only<R: Read>(
        &mut self,
        src: &mut Source<R>,
        transfer_syntax: &str,
    ) -> io::Result<()> {
        self.facts.transfer_syntax = Some(transfer_syntax.to_string());
        let info = self.ts_from_uid(transfer_syntax, src)?;
        self.walk_body(src, info.enc, Some(info))?;
        self.finish(src);
        Ok(())
    }

    fn ts_from_uid<R: Read>(&mut self, uid: &str, src: &mut Source<R>) -> io::Result<TsInfo> {
        Ok(match transfer_syntax_info(uid) {
            Some(i) => i,
            None => {
                self.push(
                    S::Error,
                    C::UnknownTransferSyntax,
                    None,
                    format!("transfer syntax {uid:?} is not known; guessing the encoding"),
                );
                let head = src.peek(8)?;
                let enc = if array_at(head, 4).is_some_and(valid_vr) {
                    EXPLICIT_LE
                } else {
                    IMPLICIT_LE
                };
                TsInfo {
                    enc,
                    deflated: false,
                    encapsulated: false,
                }
            }
        })
    }

    fn check_preamble<R: Read>(&mut self, src: &mut Source<R>, pre: &[u8]) {
        match classify_preamble(pre) {
            PreambleKind::Zero => {}
            PreambleKind::Mz { e_lfanew } => {
                let at = u64::from(e_lfanew);
                if at + 6 <= 128 {
                    let i = at as usize;
                    match pre.get(i..i + 6).and_then(is_pe_header) {
                        Some(m) => self.push(
                            S::Critical,
                            C::PreambleExecutable,
                            Some(0),
                            format!("DOS/PE executable header in the preamble: e_lfanew={at:#x} leads to PE\\0\\0 (machine {m:#06x})"),
                        ),
                        None => self.preamble_mz_only(at),
                    }
                } else if at < 4 {
                    self.preamble_mz_only(at);
                } else {
                    let id = self.far.len();
                    self.far.push(FarProbe {
                        mz: 0,
                        context: "the preamble".into(),
                        from_preamble: true,
                    });
                    src.add_probe(at, 6, id);
                }
            }
            PreambleKind::Exe(exe) => self.push(
                S::Critical,
                C::PreambleExecutable,
                Some(0),
                format!(
                    "{} header in the preamble (CVE-2019-11687 polyglot)",
                    exe.describe()
                ),
            ),
            PreambleKind::BareMagic(what) => self.push(
                S::Warning,
                C::PreambleExecutable,
                Some(0),
                format!("{what} magic in the preamble, header not valid"),
            ),
            PreambleKind::Script => self.push(
                S::Critical,
                C::PreambleExecutable,
                Some(0),
                "script interpreter line (#!) in the preamble: the file runs as a script",
            ),
            PreambleKind::Zip => self.push(
                S::Warning,
                C::PreambleArchive,
                Some(0),
                "ZIP local file header in the preamble (ZIP/JAR polyglot)",
            ),
            PreambleKind::Pdf => self.push(
                S::Warning,
                C::PreambleArchive,
                Some(0),
                "PDF header in the preamble (PDF polyglot)",
            ),
            PreambleKind::Tiff => {
                if self.opts.allow_tiff_preamble {
                    self.push(
                        S::Info,
                        C::PreambleTiff,
                        Some(0),
                        "TIFF header in the preamble (dual-personality file, allowed)",
                    )
                } else {
                    self.push(
                        S::Warning,
                        C::PreambleTiff,
                        Some(0),
                        "TIFF header in the preamble (dual-personality file; allow with --allow-tiff)",
                    )
                }
            }
            PreambleKind::Other => {
                let n = pre.iter().filter(|&&b| b != 0).count();
                self.push(
                    S::Info,
                    C::PreambleNonZero,
                    Some(0),
                    format!("preamble holds {n} non-zero bytes of no known format"),
                );
            }
        }
    }

    fn preamble_mz_only(&mut self, e_lfanew: u64) {
        self.push(
            S::Warning,
            C::PreambleDosHeader,
            Some(0),
            format!("DOS MZ header in the preamble; e_lfanew={e_lfanew:#x} does not lead to a PE header"),
        );
    }

    /// From the start of the meta group to the end.
    fn after_preamble<R: Read>(&mut self, src: &mut Source<R>) -> io::Result<()> {
        let ts = match self.walk_meta(src) {
            Ok(ts) => ts,
            Err(Stop::Fatal) => {
                self.scan_rest(src, "after the unreadable meta group")?;
                self.finish(src);
                return Ok(());
            }
            Err(Stop::Io(e)) => return Err(e),
        };
        self.facts.dataset_start = Some(src.pos());
        let info = match ts {
            Some(uid) => self.ts_from_uid(&uid, src)?,
            None => self.ts_from_uid("", src)?,
        };
        self.walk_body(src, info.enc, Some(info))?;
        self.finish(src);
        Ok(())
    }

    /// Walks the data set after the meta group (inflating it when needed).
    fn walk_body<R: Read>(
        &mut self,
        src: &mut Source<R>,
        enc: Enc,
        info: Option<TsInfo>,
    ) -> io::Result<()> {
        self.ts = info;
        if info.is_some_and(|i| i.deflated) {
            return self.walk_deflated(src);
        }
        let enc = self.check_encoding(src, enc)?;
        match self.walk_dataset(src, enc, End::Eof, 0) {
            Ok(()) => {}
            Err(Stop::Fatal) => self.scan_rest(src, "after the structural error")?,
            Err(Stop::Io(e)) => return Err(e),
        }
        self.facts.dataset_end.get_or_insert(src.pos());
        Ok(())
    }

    /// A data set whose first element has no valid VR where the transfer syntax says
    /// explicit VR is read as implicit VR (as other toolkits do), with an error: two parsers
    /// that disagree on the encoding see different content.
    fn check_encoding<R: Read>(&mut self, src: &mut Source<R>, enc: Enc) -> io::Result<Enc> {
        if !enc.explicit || enc.big {
            return Ok(enc);
        }
        let Some(&[g0, g1, _, _, v0, v1, l2, l3]) = src.peek(8)?.first_chunk::<8>() else {
            return Ok(enc);
        };
        if valid_vr([v0, v1]) {
            return Ok(enc);
        }
        let g = u16::from_le_bytes([g0, g1]);
        let len = u32::from_le_bytes([v0, v1, l2, l3]);
        if g == 0xFFFE
            || g % 2 == 1
            || u64::from(len) > self.remaining(src.pos() + 8).unwrap_or(u64::MAX)
        {
            return Ok(enc);
        }
        let off = src.pos();
        self.push(
            S::Error,
            C::Structure,
            Some(off),
            "the transfer syntax says explicit VR but the data set is implicit VR",
        );
        Ok(IMPLICIT_LE)
    }

    fn walk_deflated<R: Read>(&mut self, src: &mut Source<R>) -> io::Result<()> {
        let start = src.pos();
        let limits = InflateLimits {
            max_bytes: self.opts.max_inflated_bytes,
            max_ratio: self.opts.max_inflate_ratio,
            ratio_floor: self.opts.inflate_ratio_floor,
        };
        let outcome = {
            let decoder = DeflateDecoder::new(&mut *src);
            let limited = Limited {
                inner: decoder,
                start,
                produced: 0,
                limits,
            };
            let mut inflated = Source::new(limited);
            self.inflated = true;
            let r = self.walk_dataset(&mut inflated, EXPLICIT_LE, End::Eof, 0);
            let r = match r {
                Err(Stop::Fatal) => self
                    .scan_rest(&mut inflated, "after the structural error")
                    .map_err(Stop::Io),
                other => other,
            };
            // Probes registered on the inflated stream are content-relative.
            self.resolve_probes(&mut inflated);
            self.inflated = false;
            r
        };
        match outcome {
            Ok(()) | Err(Stop::Fatal) => {}
            Err(Stop::Io(e)) => {
                if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BombError>()) {
                    let msg = b.0.clone();
                    self.push(S::Error, C::DeflateBomb, Some(start), msg);
                } else if e.kind() == io::ErrorKind::InvalidInput
                    || e.kind() == io::ErrorKind::InvalidData
                {
                    self.push(
                        S::Error,
                        C::DeflateInvalid,
                        Some(start),
                        format!("the deflated data set is corrupt: {e}"),
                    );
                } else {
                    return Err(e);
                }
                // Whatever is left unread is not scanned as a data set.
                self.facts.dataset_end.get_or_insert(src.pos());
                return Ok(());
            }
        }
        self.facts.dataset_end.get_or_insert(src.pos());
        if !src.at_end()? {
            let off = src.pos();
            self.trailing(src, None, off)?;
        }
        Ok(())
    }

    /// Post-walk checks: probes, meta vs data set UIDs.
    fn finish<R: Read>(&mut self, src: &mut Source<R>) {
        if src.has_pending_probes() {
            // A walk that stopped early (deflate limit) still owes the preamble check its bytes.
            let _ = src.skip_with(u64::MAX, |_, _| {});
        }
        self.resolve_probes(src);
        self.facts.bytes_read = src.pos();
        if let (Some(m), Some(d)) = (&self.meta_class, &self.facts.sop_class_uid) {
            if m != d {
                let msg = format!("Media Storage SOP Class UID {m} differs from SOP Class UID {d}");
                self.push(S::Warning, C::MetaMismatch, None, msg);
            }
        }
        if let (Some(m), Some(d)) = (&self.meta_instance, &self.facts.sop_instance_uid) {
            if m != d {
                let msg =
                    format!("Media Storage SOP Instance UID {m} differs from SOP Instance UID {d}");
                self.push(S::Warning, C::MetaMismatch, None, msg);
            }
        }
    }

    fn resolve_probes<R: Read>(&mut self, src: &mut Source<R>) {
        for r in src.take_probe_results() {
            let Some(fp) = self.far.get(r.probe.id) else {
                continue;
            };
            let (mz, ctx, pre) = (fp.mz, fp.context.clone(), fp.from_preamble);
            let pe = r.bytes.and_then(|b| is_pe_header(&b[..6]));
            match (pe, pre) {
                (Some(m), true) => self.push(
                    S::Critical,
                    C::PreambleExecutable,
                    Some(0),
                    format!("DOS/PE executable header in the preamble: e_lfanew={:#x} leads to PE\\0\\0 (machine {m:#06x}) inside the data set (PEDICOM, CVE-2019-11687)", r.probe.at),
                ),
                (None, true) => self.preamble_mz_only(r.probe.at),
                (Some(m), false) => self.push(
                    S::Critical,
                    C::EmbeddedExecutable,
                    Some(mz),
                    format!("PE executable (machine {m:#06x}) in {ctx}; PE header at {}", r.probe.at),
                ),
                (None, false) => {}
            }
        }
    }

    // ----- meta group ---------------------------------------------------------------------

    /// Reads the meta group; returns the transfer syntax UID if present.
    fn walk_meta<R: Read>(&mut self, src: &mut Source<R>) -> W<Option<String>> {
        let mut group_len: Option<(u32, u64)> = None;
        let mut ts: Option<String> = None;
        let mut seen_version = false;
        let mut seen_impl = false;
        let start = src.pos();
        let mut first = true;
        loop {
            if u16_at(src.peek(2)?, 0, false) != Some(0x0002) {
                break;
            }
            let h = match self.read_header(src, EXPLICIT_LE)? {
                ReadHeader::Ok(h) => h,
                ReadHeader::BadVr(h) => {
                    self.push(
                        S::Error,
                        C::MetaInvalid,
                        Some(h.offset),
                        format!("meta element {} has no valid explicit VR", fmt_tag(h.tag)),
                    );
                    return Err(Stop::Fatal);
                }
                ReadHeader::Eof | ReadHeader::Partial(..) => {
                    self.push(
                        S::Error,
                        C::Truncated,
                        Some(src.pos()),
                        "file ends inside the meta group",
                    );
                    return Err(Stop::Fatal);
                }
            };
            if h.len == UNDEFINED || h.len > 64 * 1024 {
                self.push(
                    S::Error,
                    C::MetaInvalid,
                    Some(h.offset),
                    format!("meta element {} has length {:#x}", fmt_tag(h.tag), h.len),
                );
                return Err(Stop::Fatal);
            }
            let mut val = vec![0u8; h.len as usize];
            let got = src.read_full(&mut val)?;
            if got < val.len() {
                self.push(
                    S::Error,
                    C::Truncated,
                    Some(h.offset),
                    "file ends inside the meta group",
                );
                return Err(Stop::Fatal);
            }
            let text = || trim_value(&val);
            match h.tag {
                0x0002_0000 => match <[u8; 4]>::try_from(val.as_slice()) {
                    Ok(v) if first => group_len = Some((u32::from_le_bytes(v), src.pos())),
                    _ => self.push(
                        S::Error,
                        C::MetaGroupLength,
                        Some(h.offset),
                        "File Meta Information Group Length is misplaced or not 4 bytes",
                    ),
                },
                0x0002_0001 => seen_version = true,
                0x0002_0002 => {
                    let t = text();
                    self.check_uid_field("Media Storage SOP Class UID", &t, h.offset);
                    self.facts.is_dicomdir = t == DICOMDIR_SOP_CLASS;
                    self.meta_class = Some(t);
                }
                0x0002_0003 => {
                    let t = text();
                    self.check_uid_field("Media Storage SOP Instance UID", &t, h.offset);
                    self.meta_instance = Some(t);
                }
                0x0002_0010 => {
                    let t = text();
                    self.check_uid_field("Transfer Syntax UID", &t, h.offset);
                    ts = Some(t);
                }
                0x0002_0012 => seen_impl = true,
                _ => {}
            }
            first = false;
        }
        let end = src.pos();
        match group_len {
            Some((v, after)) => {
                let actual = end - after;
                if u64::from(v) != actual {
                    self.push(
                        S::Error,
                        C::MetaGroupLength,
                        Some(start),
                        format!("File Meta Information Group Length says {v} bytes, the meta group has {actual}"),
                    );
                }
            }
            None => self.push(
                S::Warning,
                C::MetaGroupLength,
                Some(start),
                "File Meta Information Group Length (0002,0000) is missing",
            ),
        }
        for (ok, what) in [
            (seen_version, "File Meta Information Version (0002,0001)"),
            (
                self.meta_class.is_some(),
                "Media Storage SOP Class UID (0002,0002)",
            ),
            (
                self.meta_instance.is_some(),
                "Media Storage SOP Instance UID (0002,0003)",
            ),
            (seen_impl, "Implementation Class UID (0002,0012)"),
        ] {
            if !ok {
                self.push(
                    S::Warning,
                    C::MetaInvalid,
                    Some(start),
                    format!("{what} is missing"),
                );
            }
        }
        if ts.is_none() {
            self.push(
                S::Error,
                C::MetaInvalid,
                Some(start),
                "Transfer Syntax UID (0002,0010) is missing",
            );
        }
        self.facts.transfer_syntax = ts.clone();
        Ok(ts)
    }

    fn check_uid_field(&mut self, what: &str, v: &str, off: u64) {
        if let Err(e) = Uid::new(v) {
            self.push(
                S::Warning,
                C::MetaInvalid,
                Some(off),
                format!("{what} {v:?} is not a valid UID: {e}"),
            );
        }
    }

    // ----- data set -----------------------------------------------------------------------

    fn read_header<R: Read>(&mut self, src: &mut Source<R>, enc: Enc) -> W<ReadHeader> {
        let offset = src.pos();
        let mut raw = [0u8; 12];
        let n = src.read_full(&mut raw[..8])?;
        if n == 0 {
            return Ok(ReadHeader::Eof);
        }
        if n < 8 {
            return Ok(ReadHeader::Partial(n, raw));
        }
        let [g0, g1, e0, e1, b4, b5, b6, b7, ..] = raw;
        let tag =
            (u32::from(u16_from([g0, g1], enc.big)) << 16) | u32::from(u16_from([e0, e1], enc.big));
        // Implicit VR and item headers: a 4-byte length after the tag.
        let len4 = u32_from([b4, b5, b6, b7], enc.big);
        if tag >> 16 == 0xFFFE {
            return Ok(ReadHeader::Ok(Header {
                tag,
                vr: None,
                len: len4,
                offset,
                raw,
                raw_len: 8,
            }));
        }
        if !enc.explicit {
            return Ok(ReadHeader::Ok(Header {
                tag,
                vr: dict_vr(tag),
                len: len4,
                offset,
                raw,
                raw_len: 8,
            }));
        }
        let vr = [b4, b5];
        if !valid_vr(vr) {
            return Ok(ReadHeader::BadVr(Header {
                tag,
                vr: None,
                len: 0,
                offset,
                raw,
                raw_len: 8,
            }));
        }
        if radguard_dicom::head::long_form(vr) {
            let m = src.read_full(&mut raw[8..12])?;
            if m < 4 {
                return Ok(ReadHeader::Partial(8 + m, raw));
            }
            let [.., l0, l1, l2, l3] = raw;
            Ok(ReadHeader::Ok(Header {
                tag,
                vr: Some(vr),
                len: u32_from([l0, l1, l2, l3], enc.big),
                offset,
                raw,
                raw_len: 12,
            }))
        } else {
            Ok(ReadHeader::Ok(Header {
                tag,
                vr: Some(vr),
                len: u32::from(u16_from([b6, b7], enc.big)),
                offset,
                raw,
                raw_len: 8,
            }))
        }
    }

    fn walk_dataset<R: Read>(
        &mut self,
        src: &mut Source<R>,
        enc: Enc,
        end: End,
        depth: usize,
    ) -> W<()> {
        let mut px = PixelAttrs::default();
        let mut last_tag: Option<u32> = None;
        let top = end == End::Eof && depth == 0;
        loop {
            if let End::At(e) = end {
                let pos = src.pos();
                if pos == e {
                    return Ok(());
                }
                if pos > e {
                    self.push(
                        S::Error,
                        C::ImpossibleLength,
                        Some(pos),
                        "an element runs past the end of its item",
                    );
                    return Err(Stop::Fatal);
                }
            }
            let h = match self.read_header(src, enc)? {
                ReadHeader::Eof => {
                    if end == End::Eof {
                        return Ok(());
                    }
                    self.push(
                        S::Error,
                        C::Truncated,
                        Some(src.pos()),
                        "data ends inside a sequence item",
                    );
                    return Err(Stop::Fatal);
                }
                ReadHeader::Partial(n, raw) => {
                    if top {
                        let off = src.pos() - n as u64;
                        self.facts.dataset_end = Some(off);
                        return self
                            .trailing(src, Some(prefix(&raw, n)), off)
                            .map_err(Stop::Io);
                    }
                    self.push(
                        S::Error,
                        C::Truncated,
                        Some(src.pos()),
                        "data ends inside an element header",
                    );
                    return Err(Stop::Fatal);
                }
                ReadHeader::BadVr(h) => {
                    if top && last_tag.is_some() {
                        self.facts.dataset_end = Some(h.offset);
                        return self
                            .trailing(src, Some(h.raw()), h.offset)
                            .map_err(Stop::Io);
                    }
                    self.push(
                        S::Error,
                        C::Structure,
                        Some(h.offset),
                        format!(
                            "element {} has no valid VR in an explicit VR data set",
                            fmt_tag(h.tag)
                        ),
                    );
                    return Err(Stop::Fatal);
                }
                ReadHeader::Ok(h) => h,
            };
            match h.tag {
                ITEM_DELIM if end == End::Delim => {
                    if h.len != 0 {
                        self.push(
                            S::Warning,
                            C::Structure,
                            Some(h.offset),
                            "item delimiter with non-zero length",
                        );
                    }
                    return Ok(());
                }
                ITEM | ITEM_DELIM | SEQ_DELIM => {
                    if top && last_tag.is_some() {
                        self.facts.dataset_end = Some(h.offset);
                        return self
                            .trailing(src, Some(h.raw()), h.offset)
                            .map_err(Stop::Io);
                    }
                    self.push(
                        S::Error,
                        C::Structure,
                        Some(h.offset),
                        format!("unexpected {} in a data set", fmt_tag(h.tag)),
                    );
                    return Err(Stop::Fatal);
                }
                _ => {}
            }
            if let Some(prev) = last_tag {
                if h.tag <= prev {
                    // Out of order: at the top level, a header that cannot be an element is
                    // where the data set ended; a plausible one is a misplaced or duplicate
                    // element (some real files have them) and the walk goes on.
                    let implausible = h.tag >> 16 == 0
                        || self
                            .remaining(src.pos())
                            .is_some_and(|left| h.len != UNDEFINED && u64::from(h.len) > left)
                        || (h.len == UNDEFINED && h.vr != Some(*b"SQ") && h.vr != Some(*b"UN"));
                    if top && implausible {
                        self.facts.dataset_end = Some(h.offset);
                        return self
                            .trailing(src, Some(h.raw()), h.offset)
                            .map_err(Stop::Io);
                    }
                    self.push(
                        S::Warning,
                        C::Structure,
                        Some(h.offset),
                        if h.tag == prev {
                            format!("element {} appears twice", fmt_tag(h.tag))
                        } else {
                            format!(
                                "tag {} follows {}: tags out of order",
                                fmt_tag(h.tag),
                                fmt_tag(prev)
                            )
                        },
                    );
                }
            }
            last_tag = Some(h.tag);
            self.element(src, enc, end, depth, &h, &mut px)?;
        }
    }

    /// One element, header read.
    fn element<R: Read>(
        &mut self,
        src: &mut Source<R>,
        enc: Enc,
        end: End,
        depth: usize,
        h: &Header,
        px: &mut PixelAttrs,
    ) -> W<()> {
        let value_off = src.pos();
        let is_sq = h.vr == Some(*b"SQ");
        if h.len == UNDEFINED {
            if h.tag == PIXEL_DATA {
                return self.walk_encapsulated(src, enc, h.offset);
            }
            let vr_un = h.vr == Some(*b"UN") || (!enc.explicit && !is_sq);
            if is_sq || vr_un {
                // UN of undefined length holds an implicit VR little endian sequence.
                let inner = if is_sq { enc } else { IMPLICIT_LE };
                return self.walk_sequence(src, inner, End::Delim, depth + 1);
            }
            self.push(
                S::Error,
                C::UndefinedLengthMisuse,
                Some(h.offset),
                format!(
                    "element {} ({}) has undefined length; only SQ, UN and encapsulated pixel data may",
                    fmt_tag(h.tag),
                    vr_name(h.vr)
                ),
            );
            return Err(Stop::Fatal);
        }
        let len = u64::from(h.len);
        // Lengths checked against what is there before anything is trusted.
        if let End::At(e) = end {
            if value_off + len > e {
                self.push(
                    S::Error,
                    C::ImpossibleLength,
                    Some(h.offset),
                    format!(
                        "element {} length {} runs past the end of its item ({} bytes left)",
                        fmt_tag(h.tag),
                        h.len,
                        e - value_off
                    ),
                );
                return Err(Stop::Fatal);
            }
        }
        if let Some(left) = self.remaining(value_off) {
            if len > left {
                self.push(
                    S::Error,
                    C::ImpossibleLength,
                    Some(h.offset),
                    format!(
                        "element {} declares length {} ({:#x}) but only {} bytes follow",
                        fmt_tag(h.tag),
                        h.len,
                        h.len,
                        left
                    ),
                );
                return Err(Stop::Fatal);
            }
        }
        if len > self.opts.max_value_length {
            self.push(
                S::Error,
                C::ImpossibleLength,
                Some(h.offset),
                format!(
                    "element {} declares length {} ({:#x}), more than the limit of {}",
                    fmt_tag(h.tag),
                    h.len,
                    h.len,
                    self.opts.max_value_length
                ),
            );
            return Err(Stop::Fatal);
        }
        if let Some(vr) = h.vr {
            let unit = unit_of(vr);
            if !h.len.is_multiple_of(2) || !h.len.is_multiple_of(unit) {
                self.push(
                    S::Warning,
                    C::BadLength,
                    Some(h.offset),
                    format!(
                        "element {} ({}) has length {}, not a multiple of {}",
                        fmt_tag(h.tag),
                        vr_name(h.vr),
                        h.len,
                        unit.max(2)
                    ),
                );
            }
            if !bulk_vr(vr) && len > self.opts.max_text_length {
                self.push(
                    S::Warning,
                    C::OversizedValue,
                    Some(h.offset),
                    format!(
                        "element {} ({}) is {} bytes long",
                        fmt_tag(h.tag),
                        vr_name(h.vr),
                        h.len
                    ),
                );
            }
        }
        if is_sq {
            return self.walk_sequence(src, enc, End::At(value_off + len), depth + 1);
        }
        let wanted = h.len <= MAX_CAPTURE
            && (h.tag == REFERENCED_FILE_ID
                || (depth == 0 && matches!(h.tag, SOP_CLASS_UID | SOP_INSTANCE_UID))
                || matches!(
                    h.tag,
                    SAMPLES_PER_PIXEL
                        | PHOTOMETRIC
                        | NUMBER_OF_FRAMES
                        | ROWS
                        | COLUMNS
                        | BITS_ALLOCATED
                ));
        if wanted {
            let mut val = vec![0u8; h.len as usize];
            let got = src.read_full(&mut val)?;
            if got < val.len() {
                self.push(
                    S::Error,
                    C::Truncated,
                    Some(h.offset),
                    format!("data ends inside element {}", fmt_tag(h.tag)),
                );
                return Err(Stop::Fatal);
            }
            self.capture(h, enc, &val, depth, px);
            return Ok(());
        }
        if matches!(h.tag, PIXEL_DATA | FLOAT_PIXEL_DATA | DOUBLE_PIXEL_DATA) {
            self.check_native_pixels(h, px);
        }
        let doc = h.tag == ENCAPSULATED_DOCUMENT;
        self.scan_value(src, h, len, doc, &format!("element {}", fmt_tag(h.tag)))
    }

    /// Reads a value through the content scanner and records what it found.
    fn scan_value<R: Read>(
        &mut self,
        src: &mut Source<R>,
        h: &Header,
        len: u64,
        doc: bool,
        context: &str,
    ) -> W<()> {
        let mut scanner = if len >= MIN_SCAN_LEN {
            Some(ContentScanner::new(doc))
        } else {
            None
        };
        let got = src.skip_with(len, |chunk, abs| {
            if let Some(s) = scanner.as_mut() {
                s.feed(chunk, abs);
            }
        })?;
        if let Some(mut s) = scanner {
            s.finish();
            self.content_hits(&s, context);
            if doc {
                self.check_document(h, &s);
            }
        }
        if got < len {
            self.push(
                S::Error,
                C::Truncated,
                Some(h.offset),
                format!("data ends inside {context}: {got} of {len} bytes"),
            );
            return Err(Stop::Fatal);
        }
        Ok(())
    }

    fn content_hits(&mut self, s: &ContentScanner, context: &str) {
        for hit in &s.hits {
            match *hit {
                ContentHit::Exe { at, exe } => self.push(
                    S::Critical,
                    C::EmbeddedExecutable,
                    Some(at),
                    format!("{} inside {context}", exe.describe()),
                ),
                ContentHit::Pdf { .. } => {}
            }
        }
    }

    fn check_document(&mut self, h: &Header, s: &ContentScanner) {
        let pdf_head = s.head().starts_with(b"%PDF-");
        let active: Vec<String> = s
            .hits
            .iter()
            .filter_map(|h| match h {
                ContentHit::Pdf { name, .. } => Some(String::from_utf8_lossy(name).into_owned()),
                _ => None,
            })
            .collect();
        if pdf_head && !active.is_empty() {
            let mut names = active;
            names.sort();
            names.dedup();
            self.push(
                S::Warning,
                C::EncapsulatedDocument,
                Some(h.offset),
                format!("encapsulated PDF with active content: {}", names.join(" ")),
            );
        }
    }

    fn capture(&mut self, h: &Header, enc: Enc, val: &[u8], depth: usize, px: &mut PixelAttrs) {
        let us = || u16_at(val, 0, enc.big).map(u64::from);
        match h.tag {
            REFERENCED_FILE_ID if self.ref_file_ids.len() < MAX_REF_IDS => {
                self.ref_file_ids
                    .push((h.offset, String::from_utf8_lossy(val).into_owned()));
            }
            SOP_CLASS_UID if depth == 0 => self.facts.sop_class_uid = Some(trim_value(val)),
            SOP_INSTANCE_UID if depth == 0 => self.facts.sop_instance_uid = Some(trim_value(val)),
            SAMPLES_PER_PIXEL => px.samples = us(),
            ROWS => px.rows = us(),
            COLUMNS => px.columns = us(),
            BITS_ALLOCATED => px.bits = us(),
            PHOTOMETRIC => px.photometric = Some(trim_value(val)),
            NUMBER_OF_FRAMES => px.frames = trim_value(val).parse::<u64>().ok(),
            _ => {}
        }
        // Small values can still carry a (tiny) executable header: scan them too.
        if val.len() as u64 >= MIN_SCAN_LEN {
            let mut s = ContentScanner::new(false);
            s.feed(val, h.offset + h.raw_len as u64);
            s.finish();
            for hit in s.hits {
                if let ContentHit::Exe { at, exe } = hit {
                    self.push(
                        S::Critical,
                        C::EmbeddedExecutable,
                        Some(at),
                        format!("{} inside element {}", exe.describe(), fmt_tag(h.tag)),
                    );
                }
            }
        }
    }

    fn check_native_pixels(&mut self, h: &Header, px: &PixelAttrs) {
        if self.ts.is_some_and(|t| t.encapsulated) && h.tag == PIXEL_DATA {
            self.push(
                S::Warning,
                C::EncapsulationInvalid,
                Some(h.offset),
                "pixel data has a defined length in an encapsulated transfer syntax",
            );
            return;
        }
        let (Some(rows), Some(cols), Some(bits)) = (px.rows, px.columns, px.bits) else {
            return;
        };
        let samples = px.samples.unwrap_or(1);
        let frames = px.frames.unwrap_or(1);
        let total_bits = rows
            .checked_mul(cols)
            .and_then(|v| v.checked_mul(samples))
            .and_then(|v| v.checked_mul(frames))
            .and_then(|v| v.checked_mul(bits));
        let Some(total_bits) = total_bits else {
            self.push(
                S::Error,
                C::PixelDataLength,
                Some(h.offset),
                format!("Rows×Columns×Samples×Frames×Bits ({rows}×{cols}×{samples}×{frames}×{bits}) overflows 64 bits"),
            );
            return;
        };
        let mut expected = total_bits.div_ceil(8);
        if px
            .photometric
            .as_deref()
            .is_some_and(|p| p.ends_with("_422"))
        {
            expected = expected / 3 * 2;
        }
        let actual = u64::from(h.len);
        if actual < expected {
            self.push(
                S::Error,
                C::PixelDataLength,
                Some(h.offset),
                format!("pixel data has {actual} bytes; {rows}×{cols}×{samples} samples × {bits} bits × {frames} frames need {expected}"),
            );
        } else if actual > expected + 1 {
            self.push(
                S::Warning,
                C::PixelDataLength,
                Some(h.offset),
                format!("pixel data has {} bytes more than {rows}×{cols}×{samples} samples × {bits} bits × {frames} frames need ({expected})", actual - expected),
            );
        }
    }

    fn walk_sequence<R: Read>(
        &mut self,
        src: &mut Source<R>,
        enc: Enc,
        end: End,
        depth: usize,
    ) -> W<()> {
        if depth > self.opts.max_depth {
            self.push(
                S::Error,
                C::NestingTooDeep,
                Some(src.pos()),
                format!("sequences nested more than {} deep", self.opts.max_depth),
            );
            return Err(Stop::Fatal);
        }
        loop {
            if let End::At(e) = end {
                let pos = src.pos();
                if pos == e {
                    return Ok(());
                }
                if pos > e {
                    self.push(
                        S::Error,
                        C::ImpossibleLength,
                        Some(pos),
                        "an item runs past the end of its sequence",
                    );
                    return Err(Stop::Fatal);
                }
            }
            let h = match self.read_item_header(src, enc)? {
                Some(h) => h,
                None => {
                    self.push(
                        S::Error,
                        C::Truncated,
                        Some(src.pos()),
                        "data ends inside a sequence",
                    );
                    return Err(Stop::Fatal);
                }
            };
            match h.tag {
                ITEM if h.len == UNDEFINED => {
                    self.walk_dataset(src, enc, End::Delim, depth)?;
                }
                ITEM => {
                    let item_end = src.pos() + u64::from(h.len);
                    let beyond_seq = matches!(end, End::At(e) if item_end > e);
                    let beyond_file = self
                        .remaining(src.pos())
                        .is_some_and(|left| u64::from(h.len) > left);
                    if beyond_seq || beyond_file {
                        self.push(
                            S::Error,
                            C::ImpossibleLength,
                            Some(h.offset),
                            format!(
                                "item length {} runs past the end of its {}",
                                h.len,
                                if beyond_seq { "sequence" } else { "file" }
                            ),
                        );
                        return Err(Stop::Fatal);
                    }
                    self.walk_dataset(src, enc, End::At(item_end), depth)?;
                }
                SEQ_DELIM if end == End::Delim => return Ok(()),
                t => {
                    self.push(
                        S::Error,
                        C::Structure,
                        Some(h.offset),
                        format!("expected an item in a sequence, found {}", fmt_tag(t)),
                    );
                    return Err(Stop::Fatal);
                }
            }
        }
    }

    fn read_item_header<R: Read>(&mut self, src: &mut Source<R>, enc: Enc) -> W<Option<Header>> {
        let offset = src.pos();
        let mut raw = [0u8; 12];
        if src.read_full(&mut raw[..8])? < 8 {
            return Ok(None);
        }
        let (g, e, len) = if enc.big {
            (
                u16::from_be_bytes([raw[0], raw[1]]),
                u16::from_be_bytes([raw[2], raw[3]]),
                u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]),
            )
        } else {
            (
                u16::from_le_bytes([raw[0], raw[1]]),
                u16::from_le_bytes([raw[2], raw[3]]),
                u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]),
            )
        };
        Ok(Some(Header {
            tag: (u32::from(g) << 16) | u32::from(e),
            vr: None,
            len,
            offset,
            raw,
            raw_len: 8,
        }))
    }

    fn walk_encapsulated<R: Read>(&mut self, src: &mut Source<R>, enc: Enc, off: u64) -> W<()> {
        let mut n = 0u64;
        loop {
            let Some(h) = self.read_item_header(src, enc)? else {
                self.push(
                    S::Error,
                    C::Truncated,
                    Some(src.pos()),
                    "data ends inside encapsulated pixel data",
                );
                return Err(Stop::Fatal);
            };
            match h.tag {
                ITEM if h.len != UNDEFINED => {
                    if let Some(left) = self.remaining(src.pos()) {
                        if u64::from(h.len) > left {
                            self.push(
                                S::Error,
                                C::ImpossibleLength,
                                Some(h.offset),
                                format!(
                                    "pixel data fragment length {} but only {} bytes follow",
                                    h.len, left
                                ),
                            );
                            return Err(Stop::Fatal);
                        }
                    }
                    if n == 0 && h.len % 4 != 0 {
                        self.push(
                            S::Warning,
                            C::EncapsulationInvalid,
                            Some(h.offset),
                            "Basic Offset Table length is not a multiple of 4",
                        );
                    }
                    self.scan_value(
                        src,
                        &h,
                        u64::from(h.len),
                        false,
                        &format!("pixel data fragment {n}"),
                    )?;
                    n += 1;
                }
                SEQ_DELIM => {
                    if n == 0 {
                        self.push(
                            S::Error,
                            C::EncapsulationInvalid,
                            Some(off),
                            "encapsulated pixel data has no Basic Offset Table item",
                        );
                    }
                    return Ok(());
                }
                t => {
                    self.push(
                        S::Error,
                        C::EncapsulationInvalid,
                        Some(h.offset),
                        format!(
                            "expected a pixel data item, found {} with length {:#x}",
                            fmt_tag(t),
                            h.len
                        ),
                    );
                    return Err(Stop::Fatal);
                }
            }
        }
    }

    /// Bytes after the data set: count them, and scan them for executables.
    fn trailing<R: Read>(
        &mut self,
        src: &mut Source<R>,
        head: Option<&[u8]>,
        off: u64,
    ) -> io::Result<()> {
        let mut s = ContentScanner::new(false);
        let mut n = 0u64;
        if let Some(h) = head {
            s.feed(h, off);
            n += h.len() as u64;
        }
        n += src.skip_with(u64::MAX, |c, abs| s.feed(c, abs))?;
        s.finish();
        let off_opt = if self.inflated { None } else { Some(off) };
        self.push(
            S::Warning,
            C::TrailingData,
            off_opt.or(Some(off)),
            format!("{n} bytes after the end of the data set"),
        );
        self.content_hits(&s, "the trailing data");
        Ok(())
    }

    /// After a fatal structural error: scan what is left for executables.
    fn scan_rest<R: Read>(&mut self, src: &mut Source<R>, context: &str) -> io::Result<()> {
        let mut s = ContentScanner::new(false);
        let start = src.pos();
        src.skip_with(u64::MAX, |c, abs| s.feed(c, abs))?;
        s.finish();
        let end = src.pos();
        if end > start {
            self.content_hits(&s, &format!("the unparsed bytes {context}"));
        }
        Ok(())
    }
}

fn vr_name(vr: Option<[u8; 2]>) -> String {
    match vr {
        Some(v) => String::from_utf8_lossy(&v).into_owned(),
        None => "implicit".into(),
    }
}

/// Whether the bytes at offset 0 look like the start of a raw data set; which encoding.
fn sniff_dataset(head: &[u8]) -> Option<Enc> {
    let &[g0, g1, e0, e1, v0, v1, l2, l3] = head.first_chunk::<8>()?;
    let g = u16::from_le_bytes([g0, g1]);
    let e = u16::from_le_bytes([e0, e1]);
    // A data set starts with a low, even group: 0002, 0008 or another small group.
    if g % 2 == 1 || g == 0 || g > 0x0010 {
        return None;
    }
    if valid_vr([v0, v1]) {
        return Some(EXPLICIT_LE);
    }
    let len = u32::from_le_bytes([v0, v1, l2, l3]);
    // Implicit VR: a known tag with a small length.
    if (e == 0 && len == 4)
        || (dict_vr((u32::from(g) << 16) | u32::from(e)).is_some() && len < 1024)
    {
        return Some(IMPLICIT_LE);
    }
    None
}

// ----- deflate limits ---------------------------------------------------------------------

#[derive(Clone, Copy)]
struct InflateLimits {
    max_bytes: u64,
    max_ratio: u64,
    ratio_floor: u64,
}

/// The error a [`Limited`] reader returns when inflation goes past a limit.
#[derive(Debug)]
struct BombError(String);

impl std::fmt::Display for BombError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BombError {}

/// Counts inflated bytes and fails once they pass the size or ratio limit.
struct Limited<'a, R: Read> {
    inner: DeflateDecoder<&'a mut Source<R>>,
    start: u64,
    produced: u64,
    limits: InflateLimits,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        let consumed = self.inner.get_ref().pos().saturating_sub(self.start).max(1);
        if self.produced > self.limits.max_bytes {
            return Err(io::Error::other(BombError(format!(
                "deflated data set inflates past {} bytes from {} compressed bytes",
                self.limits.max_bytes, consumed
            ))));
        }
        if self.produced > self.limits.ratio_floor
            && self.produced / consumed > self.limits.max_ratio
        {
            return Err(io::Error::other(BombError(format!(
                "deflated data set inflates {}:1 ({} bytes from {}), past the {}:1 limit",
                self.produced / consumed,
                self.produced,
                consumed,
                self.limits.max_ratio
            ))));
        }
        Ok(n)
    }
}
