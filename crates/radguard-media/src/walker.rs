//! The streaming Part 10 scan: preamble, meta group, data set, trailing data.
//!
//! The bytes are read by the one DICOM grammar in `radguard-dicom`: the meta group by
//! [`radguard_dicom::part10::read_meta_group`], the data set by the push
//! [`Tokenizer`](radguard_dicom::tokens::Tokenizer) (behind an
//! [`Inflater`](radguard_dicom::inflate::Inflater) for deflated transfer syntaxes). The scanner
//! therefore sees exactly the elements the gateway, the vault and de-identification see: a file
//! cannot be one data set here and another there (a parser differential is how polyglots win).
//!
//! This module consumes the tokens. It checks what the grammar leaves to its consumers (lengths
//! against the VR, pixel data against the image attributes, encapsulation, meta UIDs), hands
//! every value to the [`ContentScanner`] as its chunks pass, and after a fatal structural error
//! keeps scanning the unparsed bytes for payloads. At the top level, a header that cannot be an
//! element after at least one element is where the data set ended: the rest is trailing data.
//!
//! Bytes come in chunks from a fixed 256 KiB buffer ([`Source`]); nothing is allocated from a
//! length field, so peak memory is a few hundred KiB whatever the file size. Nesting is bounded
//! by [`ScanOptions::max_depth`] (the tokenizer's [`Limits::max_depth`]).

use std::io::{self, Read};

use dicom_core::{Tag, VR};
use radguard_dicom::inflate::{InflateError, Inflater};
use radguard_dicom::limits::Limits;
use radguard_dicom::part10::{read_meta_group, FileMeta, MetaError, MetaIssue, MAX_META};
use radguard_dicom::tokens::{
    implicit_vr, is_pixel_tag, AnomalyKind, ElementKind, ErrorKind, GrammarError, Header, Inside,
    Length, TagStr, Token, Tokenizer, ITEM, ITEM_DELIMITER, PIXEL_DATA,
};
use radguard_dicom::ts::{Encoding, TransferSyntax};
use radguard_dicom::types::Uid;

use crate::bytes::prefix;
use crate::content::{ContentHit, ContentScanner};
use crate::report::{DataSetFacts, Finding, FindingCode as C, Severity as S};
use crate::signature::{classify_preamble, is_pe_header, PreambleKind};
use crate::source::{Source, BLOCK};
use crate::ScanOptions;

const ENCAPSULATED_DOCUMENT: Tag = Tag(0x0042, 0x0011);
const REFERENCED_FILE_ID: Tag = Tag(0x0004, 0x1500);
const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);
const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
const SAMPLES_PER_PIXEL: Tag = Tag(0x0028, 0x0002);
const PHOTOMETRIC: Tag = Tag(0x0028, 0x0004);
const NUMBER_OF_FRAMES: Tag = Tag(0x0028, 0x0008);
const ROWS: Tag = Tag(0x0028, 0x0010);
const COLUMNS: Tag = Tag(0x0028, 0x0011);
const BITS_ALLOCATED: Tag = Tag(0x0028, 0x0100);

/// Media Storage Directory Storage: a DICOMDIR.
pub(crate) const DICOMDIR_SOP_CLASS: &str = "1.2.840.10008.1.3.10";
/// Values shorter than this cannot hold any executable header we look for.
const MIN_SCAN_LEN: u64 = 24;
/// Values we collect to look at are at most this long.
const MAX_CAPTURE: u32 = 1024;
/// Cap on the number of DICOMDIR Referenced File IDs kept.
const MAX_REF_IDS: usize = 200_000;
/// Cap on findings of one code, so a pathological file cannot grow the report unboundedly.
const MAX_PER_CODE: usize = 20;
/// Stream bytes kept behind the tokenizer: more than one element header (12 bytes), so the
/// header where trailing data begins can be scanned with it.
const RECENT: usize = 16;
/// Bytes of a data set's start that decide an encoding guess: one element header.
const HEADER_MAX: usize = 12;

/// VRs whose values are bulk binary or long text; the rest get an "oversized" check.
fn bulk_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::UN
            | VR::UT
            | VR::UC
            | VR::UR
            | VR::LT
            | VR::ST
            | VR::SQ
    )
}

/// Unit size of binary VRs.
fn unit_of(vr: VR) -> u32 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::AT | VR::OF | VR::OL => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

fn trim_value(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .trim_start_matches(' ')
        .to_string()
}

/// How the data set is encoded, as far as the scan is concerned.
#[derive(Debug, Clone, Copy)]
struct Syntax {
    encoding: Encoding,
    deflated: bool,
    /// A known transfer syntax with encapsulated pixel data (PS3.5 §A.4).
    encapsulated: bool,
}

impl Syntax {
    fn plain(encoding: Encoding) -> Syntax {
        Syntax {
            encoding,
            deflated: false,
            encapsulated: false,
        }
    }
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

/// What the grammar says about the first header of some bytes.
enum First {
    Header(Header),
    /// Explicit VR bytes that are not a VR.
    BadVr,
    /// Another structural error, with its tag when it has one.
    Error(Option<Tag>),
    /// Too few bytes for a header.
    Nothing,
}

fn error_tag(kind: &ErrorKind) -> Option<Tag> {
    match *kind {
        ErrorKind::UnknownVr { tag, .. }
        | ErrorKind::UndefinedLength { tag, .. }
        | ErrorKind::DelimiterInDataSet { tag }
        | ErrorKind::NotAnItem { tag }
        | ErrorKind::NotAFragment { tag }
        | ErrorKind::Overrun { tag, .. }
        | ErrorKind::PastEnd { tag, .. }
        | ErrorKind::ValueTooLong { tag, .. } => Some(tag),
        _ => None,
    }
}

/// Tokenizes one header (at most [`HEADER_MAX`] bytes of `head`) in `encoding`. `total`, when
/// known, is how many bytes the data set has: a length past it is an error.
fn first_header(head: &[u8], encoding: Encoding, total: Option<u64>) -> First {
    let mut tz = Tokenizer::new(encoding, Limits::SCANNER);
    if let Some(t) = total {
        tz = tz.with_total(t);
    }
    for t in tz.tokens(prefix(head, HEADER_MAX)) {
        match t {
            Token::Element(h) => return First::Header(h),
            Token::Error(GrammarError {
                kind: ErrorKind::UnknownVr { .. },
                ..
            }) => return First::BadVr,
            Token::Error(e) => return First::Error(error_tag(&e.kind)),
            _ => {}
        }
    }
    First::Nothing
}

/// Whether the bytes at offset 0 look like the start of a raw data set: its encoding and
/// first tag.
fn sniff_dataset(head: &[u8]) -> Option<(Encoding, Tag)> {
    // A data set starts with a low, even group: 0002, 0008 or another small group.
    let low_even = |t: &Tag| t.group().is_multiple_of(2) && t.group() != 0 && t.group() <= 0x0010;
    match first_header(head, Encoding::ExplicitLittle, None) {
        First::Header(h) => return low_even(&h.tag).then_some((Encoding::ExplicitLittle, h.tag)),
        // A valid VR whose length the grammar refuses: still explicit VR.
        First::Error(tag) => return tag.filter(low_even).map(|t| (Encoding::ExplicitLittle, t)),
        First::Nothing => return None,
        First::BadVr => {}
    }
    // Implicit VR: a known tag with a small length.
    let First::Header(h) = first_header(head, Encoding::ImplicitLittle, None) else {
        return None;
    };
    let len = h.length.defined();
    let known = implicit_vr(h.tag) != VR::UN;
    let plausible =
        (h.tag.element() == 0 && len == Some(4)) || (known && len.is_some_and(|l| l < 1024));
    (low_even(&h.tag) && plausible).then_some((Encoding::ImplicitLittle, h.tag))
}

pub(crate) struct Walker<'o> {
    opts: &'o ScanOptions,
    limits: Limits,
    pub(crate) findings: Vec<Finding>,
    pub(crate) facts: DataSetFacts,
    pub(crate) ref_file_ids: Vec<(u64, String)>,
    meta_class: Option<String>,
    meta_instance: Option<String>,
    /// The transfer syntax says pixel data is encapsulated.
    encapsulated: bool,
    /// Set while walking an inflated stream: offsets are not file offsets.
    inflated: bool,
    /// Known total length of the raw stream.
    total: Option<u64>,
}

impl<'o> Walker<'o> {
    pub(crate) fn new(opts: &'o ScanOptions, total: Option<u64>) -> Self {
        Walker {
            opts,
            limits: opts.limits(),
            findings: Vec::new(),
            facts: DataSetFacts::default(),
            ref_file_ids: Vec::new(),
            meta_class: None,
            meta_instance: None,
            encapsulated: false,
            inflated: false,
            total,
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

    // ----- entry points -------------------------------------------------------------------

    /// Walks a Part 10 stream (or a raw data set, detected) from its first byte.
    pub(crate) fn walk_file<R: Read>(&mut self, src: &mut Source<R>) -> io::Result<()> {
        let head = prefix(src.peek(132)?, 132).to_vec();
        let part10 = head
            .split_first_chunk::<128>()
            .filter(|(_, magic)| magic.starts_with(b"DICM"));
        if let Some((pre, _)) = part10 {
            self.check_preamble(src, pre);
            src.skip_with(132, |_, _| {})?;
            return self.after_preamble(src);
        }
        // No preamble: a raw data set (possibly starting with a meta group), or not DICOM.
        match sniff_dataset(&head) {
            Some((enc, tag)) => {
                self.push(
                    S::Warning,
                    C::NoPart10Header,
                    Some(0),
                    "no 128-byte preamble and DICM prefix: a raw data set, not a Part 10 file",
                );
                if tag.group() == 0x0002 {
                    self.after_preamble(src)
                } else {
                    self.walk_body(src, Syntax::plain(enc))?;
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
        let syntax = self.syntax(transfer_syntax, src)?;
        self.walk_body(src, syntax)?;
        self.finish(src);
        Ok(())
    }

    /// What the transfer syntax UID says; for a UID PS3.6 does not list, an error and a guess
    /// from the first header (explicit VR when its VR bytes are a VR).
    fn syntax<R: Read>(&mut self, uid: &str, src: &mut Source<R>) -> io::Result<Syntax> {
        if let Ok(ts) = TransferSyntax::from_uid(uid) {
            if ts.known {
                return Ok(Syntax {
                    encoding: ts.encoding,
                    deflated: ts.deflated,
                    encapsulated: ts.encapsulated(),
                });
            }
        }
        self.push(
            S::Error,
            C::UnknownTransferSyntax,
            None,
            format!("transfer syntax {uid:?} is not known; guessing the encoding"),
        );
        let head = src.peek(HEADER_MAX)?;
        let encoding = match first_header(head, Encoding::ExplicitLittle, None) {
            First::BadVr => Encoding::ImplicitLittle,
            First::Nothing if head.len() < 6 => Encoding::ImplicitLittle,
            _ => Encoding::ExplicitLittle,
        };
        Ok(Syntax::plain(encoding))
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
                    // The PE header lies ahead in the file: checked when its bytes pass.
                    src.add_probe(at, 6, 0);
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
        let start = src.pos();
        let head = src.peek(MAX_META + 1)?;
        let avail = head.len() as u64;
        let (meta, len, issues) = match read_meta_group(head) {
            Ok(m) => m,
            Err(e) => {
                self.meta_error(&e, start, avail);
                self.scan_rest(src, "after the unreadable meta group")?;
                self.finish(src);
                return Ok(());
            }
        };
        src.skip_with(len as u64, |_, _| {})?;
        let ts = self.check_meta(&meta, &issues, start);
        self.facts.dataset_start = Some(src.pos());
        let syntax = self.syntax(ts.as_deref().unwrap_or(""), src)?;
        self.walk_body(src, syntax)?;
        self.finish(src);
        Ok(())
    }

    /// Walks the data set after the meta group (inflating it when needed).
    fn walk_body<R: Read>(&mut self, src: &mut Source<R>, syntax: Syntax) -> io::Result<()> {
        self.encapsulated = syntax.encapsulated;
        if syntax.deflated {
            return self.walk_deflated(src);
        }
        let encoding = self.check_encoding(src, syntax.encoding)?;
        let base = src.pos();
        let mut tz = Tokenizer::new(encoding, self.limits);
        if let Some(total) = self.total {
            // Lengths past the end of the file are impossible at once, not truncations later.
            tz = tz.with_total(total.saturating_sub(base));
        }
        let mut ds = DataSet::new(tz, base);
        src.skip_with(u64::MAX, |chunk, _| ds.feed(self, chunk))?;
        let end = ds.finish(self);
        self.facts.dataset_end = Some(base + end);
        Ok(())
    }

    /// A data set whose first element has no valid VR where the transfer syntax says
    /// explicit VR is read as implicit VR (as other toolkits do), with an error: two parsers
    /// that disagree on the encoding see different content.
    fn check_encoding<R: Read>(
        &mut self,
        src: &mut Source<R>,
        enc: Encoding,
    ) -> io::Result<Encoding> {
        if enc != Encoding::ExplicitLittle {
            return Ok(enc);
        }
        let at = src.pos();
        let left = self.total.map(|t| t.saturating_sub(at));
        let head = src.peek(HEADER_MAX)?;
        if !matches!(first_header(head, enc, None), First::BadVr) {
            return Ok(enc);
        }
        let implicit = match first_header(head, Encoding::ImplicitLittle, left) {
            First::Header(h) => h.tag.group().is_multiple_of(2) && h.length.defined().is_some(),
            _ => false,
        };
        if !implicit {
            return Ok(enc);
        }
        self.push(
            S::Error,
            C::Structure,
            Some(at),
            "the transfer syntax says explicit VR but the data set is implicit VR",
        );
        Ok(Encoding::ImplicitLittle)
    }

    /// A deflated data set (PS3.5 §A.5): inflated under the bomb caps, then tokenized.
    /// Offsets inside it are offsets in the inflated stream.
    fn walk_deflated<R: Read>(&mut self, src: &mut Source<R>) -> io::Result<()> {
        let start = src.pos();
        let mut inflater = Inflater::new(self.limits);
        let mut ds = DataSet::new(Tokenizer::new(Encoding::ExplicitLittle, self.limits), 0);
        let mut failed: Option<InflateError> = None;
        // Compressed bytes after the end of the deflate stream: offset, count, scanner.
        let mut after: Option<(u64, u64, ContentScanner)> = None;
        self.inflated = true;
        loop {
            let n = src.skip_with(BLOCK as u64, |chunk, abs| {
                if failed.is_some() {
                    return;
                }
                let rest = if inflater.done() {
                    chunk
                } else {
                    match inflater.feed(chunk, |out| ds.feed(self, out)) {
                        Ok(used) if inflater.done() => chunk.get(used..).unwrap_or_default(),
                        Ok(used) if used == chunk.len() => &[],
                        // Input left over while the stream goes on: the inflater stalled on it.
                        Ok(_) => {
                            failed = Some(InflateError::Corrupt);
                            return;
                        }
                        Err(e) => {
                            failed = Some(e);
                            return;
                        }
                    }
                };
                if !rest.is_empty() {
                    let at = abs + (chunk.len() - rest.len()) as u64;
                    let a = after.get_or_insert_with(|| (at, 0, ContentScanner::new(false)));
                    a.1 += rest.len() as u64;
                    a.2.feed(rest, at);
                }
            })?;
            if n == 0 || failed.is_some() {
                break;
            }
        }
        let (used, made) = inflater.totals();
        if let Some(e) = failed {
            // What was inflated before the failure is not read further as a data set.
            self.inflated = false;
            let (code, msg) = match e {
                InflateError::TooLarge { limit } => (
                    C::DeflateBomb,
                    format!("deflated data set inflates past {limit} bytes from {used} compressed bytes"),
                ),
                InflateError::Ratio { ratio, .. } => (
                    C::DeflateBomb,
                    format!(
                        "deflated data set inflates {}:1 ({made} bytes from {used}), past the {ratio}:1 limit",
                        made / used.max(1)
                    ),
                ),
                InflateError::Corrupt | InflateError::Truncated => (C::DeflateInvalid, e.to_string()),
            };
            self.push(S::Error, code, Some(start), msg);
            self.facts.dataset_end = Some(start + used);
            return Ok(());
        }
        ds.finish(self);
        self.inflated = false;
        if !inflater.done() {
            self.push(
                S::Error,
                C::DeflateInvalid,
                Some(start),
                "the deflate stream ends before its final block: the deflated data set is cut short",
            );
        }
        self.facts.dataset_end = Some(start + used);
        if let Some((at, n, mut s)) = after {
            s.finish();
            self.trailing(at, n, &s);
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

    /// The preamble's far PE probe (the only probe registered).
    fn resolve_probes<R: Read>(&mut self, src: &mut Source<R>) {
        for r in src.take_probe_results() {
            match r.bytes.and_then(|b| is_pe_header(&b[..6])) {
                Some(m) => self.push(
                    S::Critical,
                    C::PreambleExecutable,
                    Some(0),
                    format!("DOS/PE executable header in the preamble: e_lfanew={:#x} leads to PE\\0\\0 (machine {m:#06x}) inside the data set (PEDICOM, CVE-2019-11687)", r.probe.at),
                ),
                None => self.preamble_mz_only(r.probe.at),
            }
        }
    }

    // ----- meta group ---------------------------------------------------------------------

    fn meta_error(&mut self, e: &MetaError, start: u64, avail: u64) {
        match e {
            MetaError::Truncated => self.push(
                S::Error,
                C::Truncated,
                Some(start + avail),
                "file ends inside the meta group",
            ),
            MetaError::Malformed(g) => {
                let msg = match g.kind {
                    ErrorKind::UnknownVr { tag, .. } => {
                        format!("meta element {} has no valid explicit VR", TagStr(tag))
                    }
                    ErrorKind::ValueTooLong { tag, length, .. } => {
                        format!("meta element {} has length {length:#x}", TagStr(tag))
                    }
                    ErrorKind::UndefinedLength { tag, .. } => {
                        format!("meta element {} has undefined length", TagStr(tag))
                    }
                    kind => format!("File Meta Information is malformed: {kind}"),
                };
                self.push(S::Error, C::MetaInvalid, Some(start + g.offset), msg);
            }
            MetaError::TooLong | MetaError::NoPrefix => {
                self.push(S::Error, C::MetaInvalid, Some(start), e.to_string())
            }
        }
    }

    /// Checks what the meta group says; returns its transfer syntax UID. Findings about the
    /// whole group or its fields are at the group's offset.
    fn check_meta(&mut self, meta: &FileMeta, issues: &[MetaIssue], start: u64) -> Option<String> {
        for (what, v) in [
            (
                "Media Storage SOP Class UID",
                &meta.media_storage_sop_class_uid,
            ),
            (
                "Media Storage SOP Instance UID",
                &meta.media_storage_sop_instance_uid,
            ),
            ("Transfer Syntax UID", &meta.transfer_syntax_uid),
        ] {
            if let Some(v) = v {
                if let Err(e) = Uid::new(v) {
                    self.push(
                        S::Warning,
                        C::MetaInvalid,
                        Some(start),
                        format!("{what} {v:?} is not a valid UID: {e}"),
                    );
                }
            }
        }
        for issue in issues {
            match issue {
                MetaIssue::GroupLengthMissing => self.push(
                    S::Warning,
                    C::MetaGroupLength,
                    Some(start),
                    issue.to_string(),
                ),
                MetaIssue::GroupLengthMisplaced { offset } => self.push(
                    S::Error,
                    C::MetaGroupLength,
                    Some(start + offset),
                    "File Meta Information Group Length is misplaced or not 4 bytes",
                ),
                MetaIssue::GroupLengthMismatch { .. } => {
                    self.push(S::Error, C::MetaGroupLength, Some(start), issue.to_string())
                }
                MetaIssue::Anomaly(kind) => self.push(
                    S::Warning,
                    C::MetaInvalid,
                    Some(start),
                    format!("File Meta Information: {kind}"),
                ),
            }
        }
        self.facts.is_dicomdir =
            meta.media_storage_sop_class_uid.as_deref() == Some(DICOMDIR_SOP_CLASS);
        self.meta_class = meta.media_storage_sop_class_uid.clone();
        self.meta_instance = meta.media_storage_sop_instance_uid.clone();
        for (ok, what) in [
            (
                meta.version.is_some(),
                "File Meta Information Version (0002,0001)",
            ),
            (
                self.meta_class.is_some(),
                "Media Storage SOP Class UID (0002,0002)",
            ),
            (
                self.meta_instance.is_some(),
                "Media Storage SOP Instance UID (0002,0003)",
            ),
            (
                meta.implementation_class_uid.is_some(),
                "Implementation Class UID (0002,0012)",
            ),
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
        let ts = meta.transfer_syntax_uid.clone();
        if ts.is_none() {
            self.push(
                S::Error,
                C::MetaInvalid,
                Some(start),
                "Transfer Syntax UID (0002,0010) is missing",
            );
        }
        self.facts.transfer_syntax = ts.clone();
        ts
    }

    // ----- data set -----------------------------------------------------------------------

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

    fn check_document(&mut self, offset: u64, s: &ContentScanner) {
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
                Some(offset),
                format!("encapsulated PDF with active content: {}", names.join(" ")),
            );
        }
    }

    /// A small value collected whole: the facts and attributes it carries.
    fn capture(
        &mut self,
        tag: Tag,
        encoding: Encoding,
        depth: usize,
        offset: u64,
        val: &[u8],
        px: &mut PixelAttrs,
    ) {
        let us = || val.first_chunk::<2>().map(|b| u64::from(encoding.u16(*b)));
        match tag {
            REFERENCED_FILE_ID if self.ref_file_ids.len() < MAX_REF_IDS => {
                self.ref_file_ids
                    .push((offset, String::from_utf8_lossy(val).into_owned()));
            }
            // A repeated element: the first occurrence is the one recorded, as the gateway's
            // head sniffer, DCMTK and pydicom read it.
            SOP_CLASS_UID if depth == 0 && self.facts.sop_class_uid.is_none() => {
                self.facts.sop_class_uid = Some(trim_value(val))
            }
            SOP_INSTANCE_UID if depth == 0 && self.facts.sop_instance_uid.is_none() => {
                self.facts.sop_instance_uid = Some(trim_value(val))
            }
            SAMPLES_PER_PIXEL => px.samples = us(),
            ROWS => px.rows = us(),
            COLUMNS => px.columns = us(),
            BITS_ALLOCATED => px.bits = us(),
            PHOTOMETRIC => px.photometric = Some(trim_value(val)),
            NUMBER_OF_FRAMES => px.frames = trim_value(val).parse::<u64>().ok(),
            _ => {}
        }
    }

    /// Length checks the grammar leaves to its consumers: the VR's unit and size.
    fn check_length(&mut self, h: &Header, len: u32, offset: u64) {
        // An implicit VR element the dictionary does not know has no VR to check against.
        if !h.encoding.explicit() && h.vr == VR::UN {
            return;
        }
        let unit = unit_of(h.vr);
        if !len.is_multiple_of(2) || !len.is_multiple_of(unit) {
            self.push(
                S::Warning,
                C::BadLength,
                Some(offset),
                format!(
                    "element {} ({}) has length {len}, not a multiple of {}",
                    TagStr(h.tag),
                    h.vr,
                    unit.max(2)
                ),
            );
        }
        if !bulk_vr(h.vr) && u64::from(len) > self.opts.max_text_length {
            self.push(
                S::Warning,
                C::OversizedValue,
                Some(offset),
                format!("element {} ({}) is {len} bytes long", TagStr(h.tag), h.vr),
            );
        }
    }

    fn check_native_pixels(&mut self, tag: Tag, offset: u64, len: u32, px: &PixelAttrs) {
        if self.encapsulated && tag == PIXEL_DATA {
            self.push(
                S::Warning,
                C::EncapsulationInvalid,
                Some(offset),
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
                Some(offset),
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
        let actual = u64::from(len);
        if actual < expected {
            self.push(
                S::Error,
                C::PixelDataLength,
                Some(offset),
                format!("pixel data has {actual} bytes; {rows}×{cols}×{samples} samples × {bits} bits × {frames} frames need {expected}"),
            );
        } else if actual > expected + 1 {
            self.push(
                S::Warning,
                C::PixelDataLength,
                Some(offset),
                format!("pixel data has {} bytes more than {rows}×{cols}×{samples} samples × {bits} bits × {frames} frames need ({expected})", actual - expected),
            );
        }
    }

    /// A fatal structural error that does not end the data set.
    fn structure_error(&mut self, e: &GrammarError, base: u64, frame: Option<&Frame>) {
        let what = |tag: Tag| match frame {
            Some(Frame::Sequence { .. }) if tag == ITEM => "item".to_string(),
            Some(Frame::Fragments { .. }) if tag == ITEM => "pixel data fragment".to_string(),
            _ => format!("element {}", TagStr(tag)),
        };
        let (code, msg) = match e.kind {
            ErrorKind::UnknownVr { tag, .. } => (
                C::Structure,
                format!(
                    "element {} has no valid VR in an explicit VR data set",
                    TagStr(tag)
                ),
            ),
            ErrorKind::UndefinedLength { tag, vr } => (
                C::UndefinedLengthMisuse,
                format!(
                    "element {} ({vr}) has undefined length; only SQ, UN and encapsulated pixel data may",
                    TagStr(tag)
                ),
            ),
            ErrorKind::DelimiterInDataSet { tag } => (
                C::Structure,
                format!("unexpected {} in a data set", TagStr(tag)),
            ),
            ErrorKind::NotAnItem { tag } => (
                C::Structure,
                format!("expected an item in a sequence, found {}", TagStr(tag)),
            ),
            ErrorKind::NotAFragment { tag } => (
                C::EncapsulationInvalid,
                format!("expected a pixel data item, found {}", TagStr(tag)),
            ),
            ErrorKind::UndefinedFragment => (
                C::EncapsulationInvalid,
                "pixel data item of undefined length; fragments have defined lengths".to_string(),
            ),
            ErrorKind::Overrun { tag, end, limit } => {
                let container = match frame {
                    Some(Frame::Sequence { .. }) => "sequence",
                    _ => "item",
                };
                (
                    C::ImpossibleLength,
                    format!(
                        "{} ends at byte {}, past the end of its {container} at byte {}",
                        what(tag),
                        base + end,
                        base + limit
                    ),
                )
            }
            ErrorKind::PastEnd {
                tag,
                length,
                available,
            } => (
                C::ImpossibleLength,
                match frame {
                    Some(Frame::Sequence { .. } | Frame::Fragments { .. }) if tag == ITEM => {
                        format!(
                            "{} length {length} but only {available} bytes follow",
                            what(tag)
                        )
                    }
                    _ => format!(
                        "{} declares length {length} ({length:#x}) but only {available} bytes follow",
                        what(tag)
                    ),
                },
            ),
            ErrorKind::ValueTooLong { tag, length, limit } => (
                C::ImpossibleLength,
                format!(
                    "{} declares length {length} ({length:#x}), more than the limit of {limit}",
                    what(tag)
                ),
            ),
            ErrorKind::TooLarge { .. } => (C::ImpossibleLength, e.kind.to_string()),
            ErrorKind::TooManyElements { .. } => (C::Structure, e.kind.to_string()),
            ErrorKind::TooDeep { limit } => (
                C::NestingTooDeep,
                format!("sequences nested more than {limit} deep"),
            ),
            ErrorKind::Truncated(_) => (C::Truncated, e.kind.to_string()),
            ErrorKind::Inflate(_) => (C::DeflateInvalid, e.kind.to_string()),
        };
        self.push(S::Error, code, Some(base + e.offset), msg);
    }

    /// Bytes after the data set: count them, and report executables in them.
    fn trailing(&mut self, off: u64, n: u64, s: &ContentScanner) {
        self.push(
            S::Warning,
            C::TrailingData,
            Some(off),
            format!("{n} bytes after the end of the data set"),
        );
        self.content_hits(s, "the trailing data");
    }

    /// After an unreadable meta group: scan what is left for executables.
    fn scan_rest<R: Read>(&mut self, src: &mut Source<R>, context: &str) -> io::Result<()> {
        let mut s = ContentScanner::new(false);
        let start = src.pos();
        src.skip_with(u64::MAX, |c, abs| s.feed(c, abs))?;
        s.finish();
        if src.pos() > start {
            self.content_hits(&s, &format!("the unparsed bytes {context}"));
        }
        Ok(())
    }
}

// ----- the token consumer -----------------------------------------------------------------

/// An open container, mirroring the tokenizer's.
enum Frame {
    Sequence {
        /// Closed by a delimiter (8 bytes) rather than by its length.
        undefined: bool,
    },
    /// The data set of a sequence item.
    Item { px: PixelAttrs },
    /// Encapsulated pixel data: the element's offset (absolute) and fragments seen.
    Fragments { element: u64, n: u64 },
}

/// A value whose chunks are passing (stream offsets).
struct Value {
    /// The element's tag, or [`ITEM`] for a pixel data fragment.
    tag: Tag,
    /// Offset of the element's (or fragment's) header.
    offset: u64,
    start: u64,
    len: u64,
    got: u64,
    /// Index of a pixel data fragment.
    fragment: Option<u64>,
    scanner: Option<ContentScanner>,
    document: bool,
    capture: Option<Vec<u8>>,
    encoding: Encoding,
    depth: usize,
}

impl Value {
    fn context(&self) -> String {
        match self.fragment {
            Some(n) => format!("pixel data fragment {n}"),
            None => format!("element {}", TagStr(self.tag)),
        }
    }
}

/// What happens to the bytes from here on.
enum Mode {
    /// Tokenized.
    Tokens,
    /// After a fatal structural error at `from`: scanned for payloads only.
    Unparsed { from: u64, scanner: ContentScanner },
    /// After the end of the data set at `from`: trailing data.
    Trailing { from: u64, scanner: ContentScanner },
}

/// One data set read through the tokenizer.
struct DataSet {
    tz: Tokenizer,
    st: Walk,
}

/// What the consumer keeps between tokens. Offsets are stream offsets (from the data set's
/// first byte); `base` makes them file offsets (0 for an inflated stream, whose findings carry
/// inflated offsets).
struct Walk {
    base: u64,
    /// Bytes fed so far.
    fed: u64,
    mode: Mode,
    frames: Vec<Frame>,
    top_px: PixelAttrs,
    value: Option<Value>,
    /// The previous top-level element's tag: a top-level header at or below it that cannot
    /// be an element is where the data set ended.
    top_prev: Option<Tag>,
    /// Where the last top-level element ended: a clean end of the data set.
    boundary: u64,
    /// An order anomaly, for the element token that follows it.
    anomaly: Option<AnomalyKind>,
    /// The last bytes fed, ending at `fed` (while tokenizing).
    recent: Vec<u8>,
}

impl DataSet {
    fn new(tz: Tokenizer, base: u64) -> DataSet {
        DataSet {
            tz,
            st: Walk {
                base,
                fed: 0,
                mode: Mode::Tokens,
                frames: Vec::new(),
                top_px: PixelAttrs::default(),
                value: None,
                top_prev: None,
                boundary: 0,
                anomaly: None,
                recent: Vec::with_capacity(2 * RECENT),
            },
        }
    }

    /// Feeds the next chunk of the data set.
    fn feed(&mut self, w: &mut Walker<'_>, chunk: &[u8]) {
        let st = &mut self.st;
        let at = st.fed;
        st.fed += chunk.len() as u64;
        match &mut st.mode {
            Mode::Unparsed { scanner, .. } | Mode::Trailing { scanner, .. } => {
                scanner.feed(chunk, st.base + at);
                return;
            }
            Mode::Tokens => {}
        }
        let mut stop = None;
        for t in self.tz.tokens(chunk) {
            if let Some(s) = st.token(w, t) {
                stop = Some(s);
                break;
            }
        }
        match stop {
            Some((from, trailing)) => st.stop(from, trailing, chunk, at),
            None => st.remember(chunk),
        }
    }

    /// Ends the data set; returns where it ended (stream offset).
    fn finish(self, w: &mut Walker<'_>) -> u64 {
        let DataSet { tz, mut st } = self;
        match std::mem::replace(&mut st.mode, Mode::Tokens) {
            Mode::Trailing { from, mut scanner } => {
                scanner.finish();
                w.trailing(st.base + from, st.fed - from, &scanner);
                from
            }
            Mode::Unparsed { from, mut scanner } => {
                scanner.finish();
                if st.fed > from {
                    w.content_hits(&scanner, "the unparsed bytes after the structural error");
                }
                st.fed
            }
            Mode::Tokens => match tz.finish() {
                Ok(()) => st.fed,
                Err(e) => st.truncated(w, &e),
            },
        }
    }
}

impl Walk {
    fn remember(&mut self, chunk: &[u8]) {
        let tail = chunk.get(chunk.len().saturating_sub(RECENT)..);
        self.recent.extend_from_slice(tail.unwrap_or(chunk));
        let excess = self.recent.len().saturating_sub(RECENT);
        self.recent.drain(..excess);
    }

    /// Scans the stream bytes from `from` (at most [`RECENT`] before `at`) in `recent` and
    /// then `chunk` (which starts at `at`).
    fn scan_from(&self, s: &mut ContentScanner, from: u64, chunk: &[u8], at: u64) {
        if from < at {
            let kept = at - self.recent.len() as u64;
            let skip = usize::try_from(from.saturating_sub(kept)).unwrap_or(usize::MAX);
            let old = self.recent.get(skip..).unwrap_or_default();
            s.feed(old, self.base + from.max(kept));
        }
        let skip = usize::try_from(from.saturating_sub(at)).unwrap_or(usize::MAX);
        s.feed(
            chunk.get(skip..).unwrap_or_default(),
            self.base + from.max(at),
        );
    }

    /// The structure cannot be followed past `from` (a header already consumed, in this chunk
    /// or just before it): the bytes from there on, the header's included, are scanned as
    /// trailing or unparsed data.
    fn stop(&mut self, from: u64, trailing: bool, chunk: &[u8], at: u64) {
        let mut scanner = ContentScanner::new(false);
        self.scan_from(&mut scanner, from, chunk, at);
        self.mode = if trailing {
            Mode::Trailing { from, scanner }
        } else {
            Mode::Unparsed { from, scanner }
        };
    }

    /// The pixel attributes of the data set the current element belongs to.
    fn px(&mut self) -> &mut PixelAttrs {
        match self.frames.last_mut() {
            Some(Frame::Item { px }) => px,
            _ => &mut self.top_px,
        }
    }

    /// Handles a token; `Some((from, trailing))` when the structure cannot be followed past
    /// `from`.
    fn token(&mut self, w: &mut Walker<'_>, t: Token<'_>) -> Option<(u64, bool)> {
        match t {
            Token::Element(h) => return self.element(w, h),
            Token::Value(b) => {
                if let Some(v) = self.value.as_mut() {
                    if let Some(s) = v.scanner.as_mut() {
                        s.feed(b, self.base + v.start + v.got);
                    }
                    if let Some(c) = v.capture.as_mut() {
                        c.extend_from_slice(b);
                    }
                    v.got += b.len() as u64;
                }
            }
            Token::ValueEnd => {
                if let Some(v) = self.value.take() {
                    let end = v.start + v.len;
                    self.close_value(w, v);
                    if self.frames.is_empty() {
                        self.boundary = end;
                    }
                }
            }
            Token::ItemStart { .. } => self.frames.push(Frame::Item {
                px: PixelAttrs::default(),
            }),
            Token::ItemEnd { .. } => {
                self.frames.pop();
            }
            Token::SequenceEnd { offset } => {
                let end = match self.frames.pop() {
                    Some(Frame::Fragments { element, n }) => {
                        if n == 0 {
                            w.push(
                                S::Error,
                                C::EncapsulationInvalid,
                                Some(element),
                                "encapsulated pixel data has no Basic Offset Table item",
                            );
                        }
                        offset + 8
                    }
                    Some(Frame::Sequence { undefined: true }) => offset + 8,
                    _ => offset,
                };
                if self.frames.is_empty() {
                    self.boundary = end;
                }
            }
            Token::Fragment { offset, length } => {
                let n = match self.frames.last() {
                    Some(Frame::Fragments { n, .. }) => *n,
                    _ => 0,
                };
                if n == 0 && !length.is_multiple_of(4) {
                    w.push(
                        S::Warning,
                        C::EncapsulationInvalid,
                        Some(self.base + offset),
                        "Basic Offset Table length is not a multiple of 4",
                    );
                }
                let len = u64::from(length);
                self.value = Some(Value {
                    tag: ITEM,
                    offset,
                    start: offset + 8,
                    len,
                    got: 0,
                    fragment: Some(n),
                    scanner: (len >= MIN_SCAN_LEN).then(|| ContentScanner::new(false)),
                    document: false,
                    capture: None,
                    encoding: Encoding::ExplicitLittle,
                    depth: 0,
                });
            }
            Token::Anomaly(a) => match a.kind {
                AnomalyKind::OutOfOrder { .. } | AnomalyKind::Duplicate { .. } => {
                    self.anomaly = Some(a.kind)
                }
                // Reported with the VR's unit by the length checks.
                AnomalyKind::OddLength { .. } => {}
                AnomalyKind::ReservedBytes { .. } => w.push(
                    S::Warning,
                    C::Structure,
                    Some(self.base + a.offset),
                    a.kind.to_string(),
                ),
                AnomalyKind::DelimiterLength { tag, length } => w.push(
                    S::Warning,
                    C::Structure,
                    Some(self.base + a.offset),
                    format!(
                        "{} delimiter with non-zero length {length}",
                        if tag == ITEM_DELIMITER {
                            "item"
                        } else {
                            "sequence"
                        }
                    ),
                ),
            },
            Token::Error(e) => return Some(self.error(w, e)),
            // Not reached: the walk stops at the error, before the raw bytes.
            Token::Raw(_) => {}
        }
        None
    }

    fn element(&mut self, w: &mut Walker<'_>, h: Header) -> Option<(u64, bool)> {
        let top = self.frames.is_empty();
        let offset = self.base + h.offset;
        // At the top level, a header out of order that cannot be an element is where the
        // data set ended; a plausible one is a misplaced or repeated element (some real files
        // have them) and the walk goes on.
        if top && self.top_prev.is_some_and(|p| h.tag <= p) {
            let written = if h.encoding.explicit() {
                h.vr
            } else {
                implicit_vr(h.tag)
            };
            if h.tag.group() == 0
                || (h.length == Length::Undefined && written != VR::SQ && written != VR::UN)
            {
                return Some((h.offset, true));
            }
        }
        if let Some(kind) = self.anomaly.take() {
            let msg = match kind {
                AnomalyKind::Duplicate { tag } => format!("element {} appears twice", TagStr(tag)),
                AnomalyKind::OutOfOrder { tag, previous } => format!(
                    "tag {} follows {}: tags out of order",
                    TagStr(tag),
                    TagStr(previous)
                ),
                other => other.to_string(),
            };
            w.push(S::Warning, C::Structure, Some(offset), msg);
        }
        if top {
            self.top_prev = Some(h.tag);
        }
        if let Length::Defined(len) = h.length {
            w.check_length(&h, len, offset);
        }
        match h.kind {
            ElementKind::Value => {
                let len = h.length.defined().unwrap_or(0);
                if is_pixel_tag(h.tag) {
                    w.check_native_pixels(h.tag, offset, len, self.px());
                }
                let wanted = len <= MAX_CAPTURE
                    && (h.tag == REFERENCED_FILE_ID
                        || (h.depth == 0 && matches!(h.tag, SOP_CLASS_UID | SOP_INSTANCE_UID))
                        || matches!(
                            h.tag,
                            SAMPLES_PER_PIXEL
                                | PHOTOMETRIC
                                | NUMBER_OF_FRAMES
                                | ROWS
                                | COLUMNS
                                | BITS_ALLOCATED
                        ));
                let document = h.tag == ENCAPSULATED_DOCUMENT;
                let len = u64::from(len);
                self.value = Some(Value {
                    tag: h.tag,
                    offset: h.offset,
                    start: h.offset + u64::from(h.header_len),
                    len,
                    got: 0,
                    fragment: None,
                    scanner: (len >= MIN_SCAN_LEN).then(|| ContentScanner::new(document)),
                    document,
                    capture: wanted.then(Vec::new),
                    encoding: h.encoding,
                    depth: h.depth,
                });
            }
            ElementKind::Sequence => self.frames.push(Frame::Sequence {
                undefined: h.length == Length::Undefined,
            }),
            ElementKind::Encapsulated => self.frames.push(Frame::Fragments {
                element: offset,
                n: 0,
            }),
        }
        None
    }

    /// A value is complete (or cut short): report what its scanner found and what it says.
    fn close_value(&mut self, w: &mut Walker<'_>, v: Value) {
        let offset = self.base + v.offset;
        let context = v.context();
        let complete = v.got == v.len;
        if let Some(mut s) = v.scanner {
            s.finish();
            w.content_hits(&s, &context);
            if v.document {
                w.check_document(offset, &s);
            }
        }
        if !complete {
            return;
        }
        if let Some(c) = &v.capture {
            w.capture(v.tag, v.encoding, v.depth, offset, c, self.px());
        }
        if v.fragment.is_some() {
            if let Some(Frame::Fragments { n, .. }) = self.frames.last_mut() {
                *n += 1;
            }
        }
    }

    /// A fatal error: `(from, trailing)`.
    fn error(&mut self, w: &mut Walker<'_>, e: GrammarError) -> (u64, bool) {
        let out_of_order = |tag: Tag| self.top_prev.is_some_and(|p| tag <= p);
        // At the top level, after an element, a header that cannot be an element (no VR, a
        // delimiter, or out of order with an impossible length) is where the data set ended.
        let trailing = self.frames.is_empty()
            && match e.kind {
                ErrorKind::UnknownVr { .. } | ErrorKind::DelimiterInDataSet { .. } => {
                    self.top_prev.is_some()
                }
                ErrorKind::UndefinedLength { tag, .. } | ErrorKind::PastEnd { tag, .. } => {
                    out_of_order(tag)
                }
                _ => false,
            };
        if !trailing {
            w.structure_error(&e, self.base, self.frames.last());
        }
        (e.offset, trailing)
    }

    /// The data ended inside the structure (the tokenizer's `Truncated`); returns where the
    /// data set ended.
    fn truncated(&mut self, w: &mut Walker<'_>, e: &GrammarError) -> u64 {
        if let Some(v) = self.value.take() {
            let msg = format!(
                "data ends inside {}: {} of {} bytes",
                v.context(),
                v.got,
                v.len
            );
            let offset = self.base + v.offset;
            self.close_value(w, v);
            w.push(S::Error, C::Truncated, Some(offset), msg);
            return self.fed;
        }
        let ErrorKind::Truncated(inside) = e.kind else {
            // Structural errors were reported as they came.
            return self.fed;
        };
        let msg = match (inside, self.frames.last()) {
            (Inside::Header, None) => {
                // A partial header at the top level: the data set ended before it.
                let from = self.boundary;
                let mut s = ContentScanner::new(false);
                self.scan_from(&mut s, from, &[], self.fed);
                s.finish();
                w.trailing(self.base + from, self.fed - from, &s);
                return from;
            }
            (Inside::Header, Some(Frame::Item { .. })) => "data ends inside an element header",
            (Inside::Sequence, _) | (Inside::Header, Some(Frame::Sequence { .. })) => {
                "data ends inside a sequence"
            }
            (Inside::Fragments, _) | (Inside::Header, Some(Frame::Fragments { .. })) => {
                "data ends inside encapsulated pixel data"
            }
            (Inside::Item, _) => "data ends inside a sequence item",
            (Inside::Value, _) => "data ends inside an element value",
        };
        w.push(S::Error, C::Truncated, Some(self.base + e.offset), msg);
        self.fed
    }
}
