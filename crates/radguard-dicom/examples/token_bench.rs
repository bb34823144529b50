//! Throughput of the one data-set grammar against the physical limit of reading the same bytes.
//!
//! For each set of files (a file, or a directory of `.dcm` files), all read into memory first:
//! - `tokens`: `part10::read_head`, then the data set through `inflate::DataSetReader` fed in
//!   256 KiB chunks (the gateway's batch size), every token consumed;
//! - `tokens+memchr`: the same, with every value chunk scanned by memchr as it comes out (a
//!   consumer that looks at every byte, as the media scanner does);
//! - `memchr`: `memchr::memchr_iter` counting one byte value over the same bytes in the same
//!   chunks (SIMD scanning: what touching every byte once costs);
//! - `sum`: a plain sum of the bytes as little-endian u64 words.
//!
//! The tokenizer does not read value bytes (they come out as borrowed chunks), so on pixel data
//! it runs far faster than anything that touches every byte; what it costs is per element
//! header. `tokens+memchr` against `memchr` is the tokenizer's overhead over the physical limit
//! for a consumer that needs every byte. Each measurement is repeated; the best and the median
//! are reported, in GB/s (10^9 bytes of file per second).
//!
//! `cargo run --release -p radguard-dicom --example token_bench -- [--reps N] LABEL=PATH...`
//! Prints one tab-separated line per set (see the header line). `bench/tokens.sh` runs it.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use radguard_dicom::inflate::DataSetReader;
use radguard_dicom::limits::Limits;
use radguard_dicom::part10::read_head;
use radguard_dicom::tokens::Token;
use radguard_dicom::ts::TransferSyntax;

const CHUNK: usize = 256 * 1024;

fn files_of(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    }
}

/// Tokenizes one Part 10 file; returns a checksum of what was seen (so nothing is optimised
/// away) and panics on a file the grammar refuses (the bench data is well-formed).
fn tokenize(file: &[u8]) -> u64 {
    let head = read_head(file).expect("a Part 10 file");
    let uid = head
        .meta
        .transfer_syntax_uid
        .as_deref()
        .expect("a transfer syntax");
    let ts = TransferSyntax::from_uid(uid).expect("a valid transfer syntax");
    let mut r = DataSetReader::new(&ts, Limits::GATEWAY);
    let mut seen = 0u64;
    for chunk in file[head.data_start..].chunks(CHUNK) {
        r.feed(chunk, |t| {
            seen = seen.wrapping_add(match t {
                Token::Element(h) => u64::from(h.tag.element()),
                Token::Value(v) => v.len() as u64,
                Token::Error(e) => panic!("the grammar refuses a bench file: {e}"),
                _ => 1,
            })
        });
    }
    r.finish().expect("a complete data set");
    seen
}

/// As [`tokenize`], scanning every value chunk with memchr.
fn tokenize_scan(file: &[u8]) -> u64 {
    let head = read_head(file).expect("a Part 10 file");
    let uid = head
        .meta
        .transfer_syntax_uid
        .as_deref()
        .expect("a transfer syntax");
    let ts = TransferSyntax::from_uid(uid).expect("a valid transfer syntax");
    let mut r = DataSetReader::new(&ts, Limits::GATEWAY);
    let mut seen = memchr::memchr_iter(0xFE, &file[..head.data_start]).count() as u64;
    for chunk in file[head.data_start..].chunks(CHUNK) {
        r.feed(chunk, |t| {
            seen = seen.wrapping_add(match t {
                Token::Value(v) => memchr::memchr_iter(0xFE, v).count() as u64,
                Token::Error(e) => panic!("the grammar refuses a bench file: {e}"),
                _ => 0,
            })
        });
    }
    r.finish().expect("a complete data set");
    seen
}

/// Element headers in a file (for the elements/s figure).
fn elements(file: &[u8]) -> u64 {
    let head = read_head(file).expect("a Part 10 file");
    let uid = head
        .meta
        .transfer_syntax_uid
        .as_deref()
        .expect("a transfer syntax");
    let ts = TransferSyntax::from_uid(uid).expect("a valid transfer syntax");
    let mut r = DataSetReader::new(&ts, Limits::GATEWAY);
    let mut n = 0u64;
    r.feed(&file[head.data_start..], |t| {
        n += u64::from(matches!(t, Token::Element(_)));
    });
    n
}

fn memchr_count(file: &[u8]) -> u64 {
    file.chunks(CHUNK)
        .map(|c| memchr::memchr_iter(0xFE, c).count() as u64)
        .sum()
}

fn sum(file: &[u8]) -> u64 {
    let mut s = 0u64;
    for c in file.chunks(CHUNK) {
        let mut words = c.chunks_exact(8);
        for w in &mut words {
            s = s.wrapping_add(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        for &b in words.remainder() {
            s = s.wrapping_add(u64::from(b));
        }
    }
    s
}

/// Best and median seconds of `reps` passes of `f` over every file.
fn time(files: &[Vec<u8>], reps: usize, f: fn(&[u8]) -> u64) -> (Duration, Duration) {
    let mut runs: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for file in files {
                black_box(f(black_box(file)));
            }
            t.elapsed()
        })
        .collect();
    runs.sort();
    (runs[0], runs[runs.len() / 2])
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut reps = 5usize;
    if let Some(i) = args.iter().position(|a| a == "--reps") {
        reps = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--reps N");
        args.drain(i..i + 2);
    }
    assert!(
        !args.is_empty(),
        "usage: token_bench [--reps N] LABEL=PATH..."
    );
    println!(
        "set\tfiles\tbytes\telements\ttokens_best\ttokens_median\ttokens_memchr_best\t\
         tokens_memchr_median\tmemchr_best\tmemchr_median\tsum_best\tsum_median\t\
         tokens_per_memchr\ttokens_memchr_per_memchr\telements_per_s_median"
    );
    for arg in &args {
        let (label, path) = arg.split_once('=').expect("LABEL=PATH");
        let files: Vec<Vec<u8>> = files_of(Path::new(path))
            .iter()
            .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
            .collect();
        assert!(!files.is_empty(), "no .dcm files in {path}");
        let bytes: usize = files.iter().map(Vec::len).sum();
        // Warm up (page faults of the copies, caches), and check every file reads.
        for f in &files {
            black_box(tokenize(f));
        }
        let n: u64 = files.iter().map(|f| elements(f)).sum();
        let gbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
        let (tb, tm) = time(&files, reps, tokenize);
        let (xb, xm) = time(&files, reps, tokenize_scan);
        let (mb, mm) = time(&files, reps, memchr_count);
        let (sb, sm) = time(&files, reps, sum);
        println!(
            "{label}\t{}\t{bytes}\t{n}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t\
             {:.2}\t{:.3}\t{:.0}",
            files.len(),
            gbps(tb),
            gbps(tm),
            gbps(xb),
            gbps(xm),
            gbps(mb),
            gbps(mm),
            gbps(sb),
            gbps(sm),
            gbps(tm) / gbps(mm),
            gbps(xm) / gbps(mm),
            n as f64 / tm.as_secs_f64()
        );
    }
}
