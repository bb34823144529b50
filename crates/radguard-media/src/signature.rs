//! Executable and archive signatures, each with a structural check.
//!
//! A two-byte `MZ` occurs every 64 KiB in random pixel data, so a bare magic match means
//! nothing. Each check here looks at the header fields a loader relies on: for PE the
//! `e_lfanew` pointer must lead to `PE\0\0` and a known machine type; for ELF the class,
//! data encoding, version and type must be valid; for Mach-O the CPU type, file type and
//! number of load commands must be plausible.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::bytes::{u16_at, u32_at};

/// What kind of executable a structural check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exe {
    Pe { machine: u16 },
    Elf { class64: bool, machine: u16 },
    MachO { cputype: u32 },
}

impl Exe {
    pub(crate) fn describe(&self) -> String {
        match self {
            Exe::Pe { machine } => format!("PE executable (machine {:#06x})", machine),
            Exe::Elf { class64, machine } => format!(
                "ELF{} executable (machine {:#x})",
                if *class64 { "64" } else { "32" },
                machine
            ),
            Exe::MachO { cputype } => format!("Mach-O executable (cputype {:#x})", cputype),
        }
    }
}

/// The result of a structural check on bytes starting at a magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    Found(Exe),
    No,
    /// More bytes are needed than the slice holds.
    NeedMore,
    /// A DOS header whose `e_lfanew` points further than the local window: the caller must
    /// look at `PE\0\0` at this distance from the `MZ`.
    FarPe {
        e_lfanew: u32,
    },
}

/// Distance within which a structural check is done on buffered bytes. A DOS header whose
/// `e_lfanew` is further away is resolved with a probe on the stream.
pub(crate) const WINDOW: usize = 4096;

/// Machine types a Windows loader knows (IMAGE_FILE_MACHINE_*).
const PE_MACHINES: &[u16] = &[
    0x014c, 0x8664, 0xaa64, 0x01c0, 0x01c2, 0x01c4, 0x0200, 0x0ebc, 0x0166, 0x0169, 0x01a2, 0x01a6,
    0x01f0, 0x01f1, 0x5032, 0x5064, 0x5128, 0x6232, 0xa641, 0x0284, 0x9041,
];

/// True when `bytes` (at least 6) are `PE\0\0` followed by a known machine type.
pub(crate) fn is_pe_header(bytes: &[u8]) -> Option<u16> {
    let [b'P', b'E', 0, 0, m0, m1, ..] = *bytes else {
        return None;
    };
    let machine = u16::from_le_bytes([m0, m1]);
    PE_MACHINES.contains(&machine).then_some(machine)
}

/// What a header too short to check means: no executable when nothing follows, else wait.
fn short(complete: bool) -> Check {
    if complete {
        Check::No
    } else {
        Check::NeedMore
    }
}

/// `data` starts with `MZ`. `complete` means no more bytes will follow `data`.
pub(crate) fn check_pe(data: &[u8], complete: bool) -> Check {
    pe_fields(data).unwrap_or(short(complete))
}

/// [`check_pe`]; `None` when `data` ends before the bytes the check needs.
fn pe_fields(data: &[u8]) -> Option<Check> {
    let dos = data.first_chunk::<0x40>()?;
    let e_lfanew = u32_at(dos, 0x3c, false)?;
    if e_lfanew < 4 {
        return Some(Check::No);
    }
    if u64::from(e_lfanew) + 6 > WINDOW as u64 {
        return Some(Check::FarPe { e_lfanew });
    }
    // Within WINDOW, so the conversion is exact.
    let at = e_lfanew as usize;
    let pe = data.get(at..)?.get(..6)?;
    Some(match is_pe_header(pe) {
        Some(machine) => Check::Found(Exe::Pe { machine }),
        None => Check::No,
    })
}

/// `data` starts with `\x7fELF`.
pub(crate) fn check_elf(data: &[u8], complete: bool) -> Check {
    elf_fields(data).unwrap_or(short(complete))
}

/// [`check_elf`]; `None` when `data` ends before the bytes the check needs.
fn elf_fields(data: &[u8]) -> Option<Check> {
    let hdr = data.first_chunk::<0x18>()?;
    let [_, _, _, _, class, enc, ident_version, ..] = *hdr;
    if !(class == 1 || class == 2) || !(enc == 1 || enc == 2) || ident_version != 1 {
        return Some(Check::No);
    }
    let big = enc == 2;
    let e_type = u16_at(hdr, 0x10, big)?;
    let machine = u16_at(hdr, 0x12, big)?;
    let version = u32_at(hdr, 0x14, big)?;
    Some(
        if (1..=4).contains(&e_type) && machine != 0 && version == 1 {
            Check::Found(Exe::Elf {
                class64: class == 2,
                machine,
            })
        } else {
            Check::No
        },
    )
}

const MACHO_CPUS: &[u32] = &[
    7,           // x86
    0x0100_0007, // x86_64
    12,          // ARM
    0x0100_000c, // ARM64
    0x0200_000c, // ARM64_32
    18,          // PowerPC
    0x0100_0012, // PowerPC64
];

/// `data` starts with one of the four Mach-O magics.
pub(crate) fn check_macho(data: &[u8], complete: bool) -> Check {
    macho_fields(data).unwrap_or(short(complete))
}

/// [`check_macho`]; `None` when `data` ends before the bytes the check needs.
fn macho_fields(data: &[u8]) -> Option<Check> {
    let hdr = data.first_chunk::<28>()?;
    // FE ED FA CE / FE ED FA CF are big-endian headers; CE FA ED FE / CF FA ED FE little.
    let [magic0, ..] = *hdr;
    let big = magic0 == 0xfe;
    let cputype = u32_at(hdr, 4, big)?;
    let filetype = u32_at(hdr, 12, big)?;
    let ncmds = u32_at(hdr, 16, big)?;
    Some(
        if MACHO_CPUS.contains(&cputype)
            && (1..=12).contains(&filetype)
            && (1..10_000).contains(&ncmds)
        {
            Check::Found(Exe::MachO { cputype })
        } else {
            Check::No
        },
    )
}

/// Patterns searched for in element values. Index order matters (see [`check_at`]).
const EXE_PATTERNS: &[&[u8]] = &[
    b"MZ",
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
];

/// PDF names that make a document active.
pub(crate) const PDF_PATTERNS: &[&[u8]] = &[
    b"/JavaScript",
    b"/JS",
    b"/Launch",
    b"/EmbeddedFile",
    b"/RichMedia",
    b"/XFA",
];

/// Longest pattern minus one: how many bytes must be carried between chunks so a magic that
/// straddles two chunks is still seen.
pub(crate) const MAX_PATTERN: usize = 13;

fn build(patterns: &[&[u8]]) -> AhoCorasick {
    // The patterns are constants of this module, not input: building cannot fail.
    AhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostFirst)
        .build(patterns)
        .expect("constant patterns always build")
}

/// Automaton for executable magics only.
pub(crate) fn exe_automaton() -> &'static AhoCorasick {
    static A: OnceLock<AhoCorasick> = OnceLock::new();
    A.get_or_init(|| build(EXE_PATTERNS))
}

/// Automaton for executable magics plus active PDF names (pattern ids ≥ `EXE_PATTERNS.len()`).
pub(crate) fn exe_pdf_automaton() -> &'static AhoCorasick {
    static A: OnceLock<AhoCorasick> = OnceLock::new();
    A.get_or_init(|| {
        let all: Vec<&[u8]> = EXE_PATTERNS.iter().chain(PDF_PATTERNS).copied().collect();
        build(&all)
    })
}

/// What a pattern hit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hit {
    Exe(Check),
    Pdf(&'static [u8]),
}

/// Runs the structural check for pattern `pattern` on `data` (which starts at the match).
pub(crate) fn check_at(pattern: usize, data: &[u8], complete: bool) -> Hit {
    match pattern {
        0 => Hit::Exe(check_pe(data, complete)),
        1 => Hit::Exe(check_elf(data, complete)),
        2..=5 => Hit::Exe(check_macho(data, complete)),
        p => Hit::Pdf(
            PDF_PATTERNS
                .get(p - EXE_PATTERNS.len())
                .copied()
                .unwrap_or(b""),
        ),
    }
}

/// What the first bytes of a file (the preamble) hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreambleKind {
    Zero,
    /// DOS header; `e_lfanew` given.
    Mz {
        e_lfanew: u32,
    },
    Exe(Exe),
    /// An executable magic without a valid header behind it.
    BareMagic(&'static str),
    Script,
    Zip,
    Pdf,
    Tiff,
    Other,
}

pub(crate) fn classify_preamble(p: &[u8]) -> PreambleKind {
    if p.iter().all(|&b| b == 0) {
        return PreambleKind::Zero;
    }
    if p.starts_with(b"MZ") {
        // Present exactly when the 0x40-byte DOS header is whole.
        if let Some(e_lfanew) = u32_at(p, 0x3c, false) {
            return PreambleKind::Mz { e_lfanew };
        }
    }
    if p.starts_with(b"\x7fELF") {
        return match check_elf(p, true) {
            Check::Found(e) => PreambleKind::Exe(e),
            _ => PreambleKind::BareMagic("ELF"),
        };
    }
    // The Mach-O magics (patterns 2 to 5, all four bytes long).
    if EXE_PATTERNS.iter().skip(2).any(|m| p.starts_with(m)) {
        return match check_macho(p, true) {
            Check::Found(e) => PreambleKind::Exe(e),
            _ => PreambleKind::BareMagic("Mach-O"),
        };
    }
    if p.starts_with(b"#!") {
        return PreambleKind::Script;
    }
    if p.starts_with(b"PK\x03\x04") {
        return PreambleKind::Zip;
    }
    if p.starts_with(b"%PDF") {
        return PreambleKind::Pdf;
    }
    if p.starts_with(b"II*\0") || p.starts_with(b"MM\0*") {
        return PreambleKind::Tiff;
    }
    PreambleKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pe(e_lfanew: u32) -> Vec<u8> {
        let mut v = vec![0u8; e_lfanew as usize + 24];
        v[..2].copy_from_slice(b"MZ");
        v[0x3c..0x40].copy_from_slice(&e_lfanew.to_le_bytes());
        let i = e_lfanew as usize;
        v[i..i + 4].copy_from_slice(b"PE\0\0");
        v[i + 4..i + 6].copy_from_slice(&0x8664u16.to_le_bytes());
        v
    }

    #[test]
    fn pe_structural() {
        assert_eq!(
            check_pe(&pe(0x80), true),
            Check::Found(Exe::Pe { machine: 0x8664 })
        );
        assert_eq!(check_pe(&pe(0x80)[..0x50], false), Check::NeedMore);
        assert_eq!(check_pe(&pe(0x80)[..0x50], true), Check::No);
        let mut bad = pe(0x80);
        bad[0x80] = b'X';
        assert_eq!(check_pe(&bad, true), Check::No);
        assert!(matches!(
            check_pe(&pe(0x2000)[..0x40], false),
            Check::FarPe { .. }
        ));
    }

    #[test]
    fn elf_and_macho() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[6] = 1;
        elf[0x10] = 2;
        elf[0x12] = 0x3e;
        elf[0x14] = 1;
        assert!(matches!(
            check_elf(&elf, true),
            Check::Found(Exe::Elf { .. })
        ));
        elf[0x14] = 0;
        assert_eq!(check_elf(&elf, true), Check::No);

        let mut m = vec![0u8; 32];
        m[..4].copy_from_slice(b"\xcf\xfa\xed\xfe");
        m[4..8].copy_from_slice(&0x0100_000cu32.to_le_bytes());
        m[12..16].copy_from_slice(&2u32.to_le_bytes());
        m[16..20].copy_from_slice(&15u32.to_le_bytes());
        assert!(matches!(
            check_macho(&m, true),
            Check::Found(Exe::MachO { .. })
        ));
        m[12..16].copy_from_slice(&99u32.to_le_bytes());
        assert_eq!(check_macho(&m, true), Check::No);
    }

    #[test]
    fn preamble_kinds() {
        assert_eq!(classify_preamble(&[0u8; 128]), PreambleKind::Zero);
        let mut p = [0u8; 128];
        p[..4].copy_from_slice(b"II*\0");
        assert_eq!(classify_preamble(&p), PreambleKind::Tiff);
        p[..4].copy_from_slice(b"#!/b");
        assert_eq!(classify_preamble(&p), PreambleKind::Script);
    }
}
