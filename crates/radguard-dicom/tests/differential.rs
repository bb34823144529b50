//! Differential tests of the one data-set grammar (`radguard_dicom::part10::read_head`,
//! `inflate::DataSetReader`, `tokens`) against two independent readers of the same bytes:
//! dicom-rs (dicom-parser's token stream) and pydicom (`tests/py/dump_tree.py`).
//!
//! A parser differential is a bypass: if the gateway's grammar sees one element tree and the
//! archive behind it another, an attacker hides elements from the inspector. So for every file
//! of the corpus (`scripts/make-grammar-corpus.sh`: the project's generated data, pydicom's
//! sample files, DCMTK re-encodings in every transfer syntax the project handles) the element
//! trees — tags, nesting, value lengths, fragment lengths, and VRs where the syntax is explicit —
//! must agree. Where they do not, the test prints the file and the first difference.
//!
//! Some differences are known and justified (a reader that repairs or guesses where the grammar
//! refuses, a reader's data model that cannot represent what the file says). Each is an explicit
//! rule in [`rules`], narrow (it names the parser, the condition in the file that triggers it,
//! and what it lets differ), and the test prints how often each rule was used.
//!
//! Prerequisite: `scripts/setup-test-env.sh` (DCMTK in /usr/bin, the Python venv). A missing tool
//! makes the test fail, never skip.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dicom_core::header::{
    DataElementHeader, HasLength, Header, Length as RsLength, SequenceItemHeader,
};
use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_parser::dataset::read::{DataSetReaderOptions, ValueReadStrategy};
use dicom_parser::dataset::DataToken;
use dicom_parser::stateful::decode::Result as DecodeResult;
use dicom_parser::StatefulDecode;
use proptest::prelude::*;
use radguard_dicom::inflate::DataSetReader;
use radguard_dicom::limits::Limits;
use radguard_dicom::part10::{read_head, MetaError, MetaIssue};
use radguard_dicom::tokens::{
    AnomalyKind, ElementKind, ErrorKind, GrammarError, Length, OwnedToken, Token, Tokenizer,
};
use radguard_dicom::ts::{Encoding, TransferSyntax};
use serde_json::Value;

const SETUP_HINT: &str = "run `bash scripts/setup-test-env.sh` (as root) first";
const DCMTK: &str = "/usr/bin";

// ------------------------------------------------------------------------------- the corpus

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("RADGUARD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let p = root().join(".venv/bin/python");
    assert!(p.is_file(), "{} is missing: {SETUP_HINT}", p.display());
    p
}

struct Corpus {
    dir: PathBuf,
    files: Vec<String>,
}

impl Corpus {
    fn bytes(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }
}

/// Builds the corpus once per test binary into `target/grammar-corpus` (the script is
/// idempotent and serialises concurrent runs).
fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        for tool in ["dcmconv", "dcmcrle", "dcmcjpeg", "dcmcjpls", "dcmdump"] {
            let p = Path::new(DCMTK).join(tool);
            assert!(p.is_file(), "{} is missing: {SETUP_HINT}", p.display());
        }
        let py = python();
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .to_path_buf();
        let dir = target.join("grammar-corpus");
        let out = Command::new("bash")
            .arg(root().join("scripts/make-grammar-corpus.sh"))
            .arg(&dir)
            .env("RADGUARD_TEST_PYTHON", &py)
            .output()
            .expect("run scripts/make-grammar-corpus.sh");
        assert!(
            out.status.success(),
            "scripts/make-grammar-corpus.sh failed ({SETUP_HINT}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        let list = std::fs::read_to_string(dir.join("FILES.txt")).expect("FILES.txt");
        let files: Vec<String> = list.lines().map(str::to_string).collect();
        assert!(files.len() > 100, "corpus too small: {} files", files.len());
        Corpus { dir, files }
    })
}

// ---------------------------------------------------------------------- the element tree

/// A value length: defined, undefined, or not known to a reader (pydicom keeps no item lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Len {
    Defined(u32),
    Undefined,
    Unknown,
}

impl Len {
    fn matches(self, other: Len) -> bool {
        self == Len::Unknown || other == Len::Unknown || self == other
    }
}

impl std::fmt::Display for Len {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Len::Defined(n) => write!(f, "{n}"),
            Len::Undefined => f.write_str("undefined"),
            Len::Unknown => f.write_str("?"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Value,
    Items(Vec<Item>),
    Fragments(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    tag: Tag,
    /// `None`: not known (implicit VR, or the reader does not say).
    vr: Option<VR>,
    len: Len,
    body: Body,
    /// Set by the grammar's reading: the element is UN of undefined length in explicit VR, its
    /// items encoded in Implicit VR Little Endian (PS3.5 §6.2.2).
    un_implicit: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    len: Len,
    nodes: Vec<Node>,
}

fn tag_str(t: Tag) -> String {
    format!("({:04X},{:04X})", t.group(), t.element())
}

fn node_str(n: &Node) -> String {
    let vr = n.vr.map(|v| v.to_string()).unwrap_or("--");
    let body = match &n.body {
        Body::Value => String::new(),
        Body::Items(i) => format!(" {} item(s)", i.len()),
        Body::Fragments(f) => format!(" fragments {f:?}"),
    };
    format!("{} {vr} len {}{body}", tag_str(n.tag), n.len)
}

/// Builds a tree from a token stream (ours or dicom-rs's); tolerant of a stream cut short.
#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Vec<Node>,
    broken: Option<String>,
}

enum Open {
    Seq(Node, Vec<Item>),
    Item(Len, Vec<Node>),
    Frags(Node, Vec<u32>),
}

impl Builder {
    fn nodes(&mut self) -> Option<&mut Vec<Node>> {
        match self.stack.last_mut() {
            None => Some(&mut self.root),
            Some(Open::Item(_, n)) => Some(n),
            Some(_) => None,
        }
    }
    fn fail(&mut self, what: &str) {
        if self.broken.is_none() {
            self.broken = Some(what.to_string());
        }
    }
    fn value(&mut self, n: Node) {
        match self.nodes() {
            Some(v) => v.push(n),
            None => self.fail("element outside a data set"),
        }
    }
    fn open_seq(&mut self, n: Node) {
        self.stack.push(Open::Seq(n, Vec::new()));
    }
    fn open_frags(&mut self, n: Node) {
        self.stack.push(Open::Frags(n, Vec::new()));
    }
    fn item_start(&mut self, len: Len) {
        match self.stack.last() {
            Some(Open::Seq(..)) => self.stack.push(Open::Item(len, Vec::new())),
            _ => self.fail("item outside a sequence"),
        }
    }
    fn item_end(&mut self) {
        match self.stack.pop() {
            Some(Open::Item(len, nodes)) => match self.stack.last_mut() {
                Some(Open::Seq(_, items)) => items.push(Item { len, nodes }),
                _ => self.fail("item end outside a sequence"),
            },
            _ => self.fail("item end outside an item"),
        }
    }
    fn fragment(&mut self, len: u32) {
        match self.stack.last_mut() {
            Some(Open::Frags(_, f)) => f.push(len),
            _ => self.fail("fragment outside pixel data"),
        }
    }
    fn seq_end(&mut self) {
        let node = match self.stack.pop() {
            Some(Open::Seq(mut n, items)) => {
                n.body = Body::Items(items);
                n
            }
            Some(Open::Frags(mut n, f)) => {
                n.body = Body::Fragments(f);
                n
            }
            _ => return self.fail("sequence end outside a sequence"),
        };
        self.value(node);
    }
    /// Closes whatever is still open (a reading cut short).
    fn finish(mut self) -> (Vec<Node>, Option<String>) {
        while let Some(top) = self.stack.last() {
            match top {
                Open::Item(..) => self.item_end(),
                _ => self.seq_end(),
            }
        }
        (self.root, self.broken)
    }
}

// ----------------------------------------------------------------------- the three readers

/// What a reader made of a file.
#[derive(Debug, Clone, Default)]
struct Reading {
    meta: Vec<Node>,
    tree: Vec<Node>,
    /// Why the reading stopped early (`None`: read to the end cleanly).
    error: Option<String>,
}

/// The grammar's reading, with what the rules need to know about it.
#[derive(Debug, Clone, Default)]
struct Ours {
    reading: Reading,
    /// The structural error (or the truncation `finish()` reports).
    error: Option<GrammarError>,
    head: Option<Result<HeadFacts, MetaError>>,
    anomalies: Vec<AnomalyKind>,
    /// Explicit VR: VRs are compared.
    explicit: bool,
    /// The encoding the data set was read in, and where it starts in the file.
    encoding: Option<Encoding>,
    deflated: bool,
    /// Where the data set starts in the file.
    start: usize,
}

#[derive(Debug, Clone)]
struct HeadFacts {
    data_start: usize,
    meta_start: usize,
    issues: Vec<MetaIssue>,
    ts: Option<String>,
}

fn node_of(h: &radguard_dicom::tokens::Header) -> Node {
    Node {
        tag: h.tag,
        vr: h.encoding.explicit().then_some(h.vr),
        len: match h.length {
            Length::Defined(n) => Len::Defined(n),
            Length::Undefined => Len::Undefined,
        },
        body: Body::Value,
        un_implicit: h.kind == ElementKind::Sequence
            && h.encoding.explicit()
            && h.item_encoding == Encoding::ImplicitLittle,
    }
}

/// Tokens (value chunks merged) of a data set read through the one entry point, fed in
/// `chunk`-byte pieces, and `finish()`.
fn read_tokens(
    ts: &TransferSyntax,
    data: &[u8],
    chunk: usize,
) -> (Vec<OwnedToken>, Result<(), GrammarError>) {
    let mut r = DataSetReader::new(ts, Limits::OFFLINE);
    let mut out: Vec<OwnedToken> = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        r.feed(piece, |t| match (t, out.last_mut()) {
            (Token::Value(b), Some(OwnedToken::Value(v))) => v.extend_from_slice(b),
            (Token::Raw(b), Some(OwnedToken::Raw(v))) => v.extend_from_slice(b),
            (t, _) => out.push(t.into()),
        });
    }
    let end = r.finish();
    (out, end)
}

/// The tree of a token stream, the first error, the anomalies.
fn tree_of(tokens: &[OwnedToken], end: &Result<(), GrammarError>) -> Ours {
    let mut b = Builder::default();
    let mut ours = Ours::default();
    for t in tokens {
        match t {
            OwnedToken::Element(h) => {
                let n = node_of(h);
                match h.kind {
                    ElementKind::Value => b.value(n),
                    ElementKind::Sequence => b.open_seq(n),
                    ElementKind::Encapsulated => b.open_frags(n),
                }
            }
            OwnedToken::ItemStart { length, .. } => b.item_start(match length {
                Length::Defined(n) => Len::Defined(*n),
                Length::Undefined => Len::Undefined,
            }),
            OwnedToken::ItemEnd { .. } => b.item_end(),
            OwnedToken::SequenceEnd { .. } => b.seq_end(),
            OwnedToken::Fragment { length, .. } => b.fragment(*length),
            OwnedToken::Anomaly(a) => ours.anomalies.push(a.kind),
            OwnedToken::Error(e) => {
                ours.error.get_or_insert(*e);
            }
            OwnedToken::Value(_) | OwnedToken::ValueEnd | OwnedToken::Raw(_) => {}
        }
    }
    if let Err(e) = end {
        ours.error.get_or_insert(*e);
    }
    let (tree, broken) = b.finish();
    assert!(
        broken.is_none(),
        "the grammar's token stream is malformed: {broken:?}"
    );
    ours.reading.tree = tree;
    ours.reading.error = ours.error.map(|e| e.to_string());
    ours
}

/// The meta group's elements as the grammar reads them (explicit VR little endian, PS3.10 §7.1).
fn meta_tree(meta: &[u8]) -> Vec<Node> {
    let tz = Tokenizer::new(Encoding::ExplicitLittle, Limits::OFFLINE);
    let (tokens, end) = radguard_dicom::tokens::tokenize_chunks(tz, [meta]);
    tree_of(&tokens, &end).reading.tree
}

/// Inflates a deflated data set (RFC 1951, no zlib header: PS3.5 §A.5) for the other readers.
fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| format!("inflate: {e}"))?;
    Ok(out)
}

/// The grammar's reading of a file: `read_head`, then the data set through `DataSetReader`.
/// `fallback`: the encoding to read a file without a usable transfer syntax in (the one pydicom
/// guessed; see rule `NO_PART10_HEAD`).
fn ours(file: &[u8], fallback: Option<(Encoding, usize)>) -> Ours {
    let head = read_head(file);
    let (ts, start) = match &head {
        Ok(h) => {
            let ts = h
                .meta
                .transfer_syntax_uid
                .as_deref()
                .and_then(|u| TransferSyntax::from_uid(u).ok());
            (ts, h.data_start)
        }
        Err(_) => (None, 0),
    };
    let (ts, start) = match (ts, fallback) {
        (Some(ts), _) => (ts, start),
        (None, Some((enc, at))) => {
            let uid = match enc {
                Encoding::ImplicitLittle => "1.2.840.10008.1.2",
                Encoding::ExplicitLittle => "1.2.840.10008.1.2.1",
                Encoding::ExplicitBig => "1.2.840.10008.1.2.2",
            };
            (TransferSyntax::from_uid(uid).expect("standard UID"), at)
        }
        (None, None) => {
            let mut o = Ours {
                head: Some(head.clone().map(|h| facts(&h))),
                ..Ours::default()
            };
            o.reading.error = Some(match &head {
                Ok(_) => "no usable transfer syntax".to_string(),
                Err(e) => format!("head: {e}"),
            });
            if let Ok(h) = &head {
                o.reading.meta = meta_tree(file.get(h.meta_start..h.data_start).unwrap_or(&[]));
            }
            return o;
        }
    };
    let data = file.get(start..).unwrap_or(&[]);
    let (tokens, end) = read_tokens(&ts, data, data.len().max(1));
    let mut o = tree_of(&tokens, &end);
    o.explicit = ts.encoding.explicit();
    o.encoding = Some(ts.encoding);
    o.deflated = ts.deflated;
    o.start = start;
    if let Ok(h) = &head {
        o.reading.meta = meta_tree(file.get(h.meta_start..h.data_start).unwrap_or(&[]));
    }
    o.head = Some(head.map(|h| facts(&h)));
    o
}

fn facts(h: &radguard_dicom::part10::Part10Head) -> HeadFacts {
    HeadFacts {
        data_start: h.data_start,
        meta_start: h.meta_start,
        issues: h.issues.clone(),
        ts: h.meta.transfer_syntax_uid.clone(),
    }
}

/// dicom-rs's reading of the same data set: dicom-parser's token stream over the bytes from
/// the same data start, in the same transfer syntax (inflated first when deflated: dicom-rs's
/// parser has no deflate adapter of its own).
fn dicom_rs(file: &[u8], o: &Ours) -> Reading {
    let mut r = Reading::default();
    let Some(enc) = o.encoding else {
        r.error = Some("not read (no transfer syntax)".into());
        return r;
    };
    let raw = file.get(o.start..).unwrap_or(&[]);
    let inflated;
    let data = if o.deflated {
        match inflate(raw) {
            Ok(d) => {
                inflated = d;
                &inflated[..]
            }
            Err(e) => {
                r.error = Some(e);
                return r;
            }
        }
    } else {
        raw
    };
    use dicom_transfer_syntax_registry::entries;
    let ts = match enc {
        Encoding::ImplicitLittle => entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        Encoding::ExplicitLittle => entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        Encoding::ExplicitBig => entries::EXPLICIT_VR_BIG_ENDIAN.erased(),
    };
    let options = DataSetReaderOptions::default().value_read(ValueReadStrategy::Raw);
    let decoder = match dicom_parser::DynStatefulDecoder::new_with_ts(data, &ts, 0) {
        Ok(d) => d,
        Err(e) => {
            r.error = Some(format!("dicom-rs: {e}"));
            return r;
        }
    };
    let reader = dicom_parser::DataSetReader::new(BulkValues(decoder), options);
    let explicit = enc.explicit();
    let mut b = Builder::default();
    let mut in_fragment: Option<u32> = None;
    for t in reader {
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                r.error = Some(format!("dicom-rs: {e}"));
                break;
            }
        };
        match t {
            DataToken::ElementHeader(h) => b.value(Node {
                tag: h.tag(),
                vr: explicit.then_some(h.vr()),
                len: rs_len(h.length()),
                body: Body::Value,
                un_implicit: false,
            }),
            DataToken::SequenceStart { tag, len } => {
                // The parser drops the VR of sequences (SQ, UN or an implicit element).
                b.open_seq(Node {
                    tag,
                    vr: None,
                    len: rs_len(len),
                    body: Body::Value,
                    un_implicit: false,
                });
            }
            DataToken::PixelSequenceStart => {
                b.open_frags(Node {
                    tag: Tag(0x7FE0, 0x0010),
                    vr: None,
                    len: Len::Undefined,
                    body: Body::Value,
                    un_implicit: false,
                });
            }
            DataToken::ItemStart { len } => {
                if pixel_header_open(&b) {
                    in_fragment = Some(len.get().unwrap_or(u32::MAX));
                } else {
                    b.item_start(rs_len(len));
                }
            }
            DataToken::ItemValue(_) | DataToken::OffsetTable(_) => {}
            DataToken::ItemEnd => match in_fragment.take() {
                Some(len) => b.fragment(len),
                None => b.item_end(),
            },
            DataToken::SequenceEnd => b.seq_end(),
            DataToken::PrimitiveValue(_) => {}
        }
    }
    if let Some(len) = in_fragment {
        b.fragment(len);
    }
    let (tree, broken) = b.finish();
    if let Some(why) = broken {
        r.error
            .get_or_insert(format!("dicom-rs token stream: {why}"));
    }
    r.tree = tree;
    r
}

/// dicom-rs's stateful decoder with one change: a large value is read through `read_to_vec`
/// (a `Vec`, moved into the `SmallVec`) instead of `SmallVec::resize` + `read_exact`, which
/// costs a second per megabyte in a debug build. A value cut short still fails as dicom-rs's
/// own `read_exact` does (the decoder is asked for one byte more at the end of the input).
/// Structure (headers, items, delimiters) is parsed by dicom-rs unchanged.
struct BulkValues<S>(S);

impl<S: StatefulDecode> StatefulDecode for BulkValues<S> {
    type Reader = S::Reader;
    fn decode_header(&mut self) -> DecodeResult<DataElementHeader> {
        self.0.decode_header()
    }
    fn decode_item_header(&mut self) -> DecodeResult<SequenceItemHeader> {
        self.0.decode_item_header()
    }
    fn read_value(&mut self, h: &DataElementHeader) -> DecodeResult<PrimitiveValue> {
        self.0.read_value(h)
    }
    fn read_value_preserved(&mut self, h: &DataElementHeader) -> DecodeResult<PrimitiveValue> {
        self.0.read_value_preserved(h)
    }
    fn read_value_bytes(&mut self, h: &DataElementHeader) -> DecodeResult<PrimitiveValue> {
        match h.length().get() {
            Some(len) if len > 1024 && h.vr() != VR::SQ => {
                let mut v = Vec::new();
                self.0.read_to_vec(len, &mut v)?;
                if v.len() < len as usize {
                    // Short: let dicom-rs's own reader fail on the missing bytes.
                    let one = DataElementHeader::new(h.tag(), VR::OB, RsLength(1));
                    self.0.read_value_bytes(&one)?;
                }
                Ok(PrimitiveValue::U8(
                    dicom_core::smallvec::SmallVec::from_vec(v),
                ))
            }
            _ => self.0.read_value_bytes(h),
        }
    }
    fn read_to_vec(&mut self, length: u32, vec: &mut Vec<u8>) -> DecodeResult<()> {
        self.0.read_to_vec(length, vec)
    }
    fn read_u32_to_vec(&mut self, length: u32, vec: &mut Vec<u32>) -> DecodeResult<()> {
        self.0.read_u32_to_vec(length, vec)
    }
    fn read_to<W: std::io::Write>(&mut self, length: u32, out: W) -> DecodeResult<()> {
        self.0.read_to(length, out)
    }
    fn skip_bytes(&mut self, length: u32) -> DecodeResult<()> {
        self.0.skip_bytes(length)
    }
    fn seek(&mut self, position: u64) -> DecodeResult<()>
    where
        Self::Reader: std::io::Seek,
    {
        self.0.seek(position)
    }
    fn position(&self) -> u64 {
        self.0.position()
    }
}

fn pixel_header_open(b: &Builder) -> bool {
    matches!(b.stack.last(), Some(Open::Frags(..)))
}

fn rs_len(l: RsLength) -> Len {
    match l.get() {
        Some(n) => Len::Defined(n),
        None => Len::Undefined,
    }
}

/// Where dicom-rs's File Meta reader ends the meta group (it reads exactly the File Meta
/// Information Group Length's bytes), or why it refuses the head.
fn dicom_rs_data_start(file: &[u8], meta_start: usize) -> Result<(usize, String), String> {
    struct Counting<'a> {
        data: &'a [u8],
        read: usize,
    }
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (&self.data[self.read.min(self.data.len())..]).read(buf)?;
            self.read += n;
            Ok(n)
        }
    }
    let from = meta_start - 4;
    let mut c = Counting {
        data: &file[from..],
        read: 0,
    };
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut c).map_err(|e| e.to_string())?;
    Ok((from + c.read, meta.transfer_syntax().to_string()))
}

/// pydicom's readings of all files, one Python process (tests/py/dump_tree.py).
fn pydicom_all(c: &Corpus) -> BTreeMap<String, PyReading> {
    let all: Vec<&str> = c.files.iter().map(String::as_str).collect();
    pydicom_all_of(c, &all)
}

fn pydicom_all_of(c: &Corpus, files: &[&str]) -> BTreeMap<String, PyReading> {
    let paths: Vec<PathBuf> = files.iter().map(|f| c.dir.join(f)).collect();
    let out = Command::new(python())
        .arg(root().join("tests/py/dump_tree.py"))
        .args(&paths)
        .output()
        .expect("run tests/py/dump_tree.py");
    assert!(
        out.status.success(),
        "dump_tree.py failed ({SETUP_HINT}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("dump_tree.py prints UTF-8");
    let mut m = BTreeMap::new();
    for (line, rel) in text.lines().zip(files) {
        let v: Value = serde_json::from_str(line).expect("dump_tree.py prints JSON lines");
        assert_eq!(
            v["file"].as_str(),
            c.dir.join(rel).to_str(),
            "dump_tree.py answered out of order"
        );
        m.insert(rel.to_string(), PyReading::from_json(&v));
    }
    assert_eq!(m.len(), files.len(), "dump_tree.py skipped files");
    m
}

#[derive(Debug, Clone)]
struct PyReading {
    reading: Reading,
    /// The encoding pydicom read the data set in.
    encoding: Option<Encoding>,
    warnings: Vec<String>,
}

impl PyReading {
    fn from_json(v: &Value) -> PyReading {
        let encoding = v["encoding"].as_object().map(|e| {
            match (e["implicit_vr"].as_bool(), e["little_endian"].as_bool()) {
                (Some(true), _) => Encoding::ImplicitLittle,
                (_, Some(false)) => Encoding::ExplicitBig,
                _ => Encoding::ExplicitLittle,
            }
        });
        PyReading {
            reading: Reading {
                meta: py_nodes(&v["meta"]),
                tree: py_nodes(&v["tree"]),
                error: v["error"].as_str().map(str::to_string),
            },
            encoding,
            warnings: v["warnings"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn py_nodes(v: &Value) -> Vec<Node> {
    v.as_array()
        .map(|a| a.iter().map(py_node).collect())
        .unwrap_or_default()
}

fn py_node(v: &Value) -> Node {
    let tag = u32::from_str_radix(v["tag"].as_str().unwrap_or("FFFFFFFF"), 16).unwrap_or(0);
    let vr = v["vr"]
        .as_str()
        .and_then(|s| s.as_bytes().try_into().ok())
        .and_then(VR::from_binary);
    let len = match v["len"].as_u64() {
        _ if v["len_unknown"].as_bool() == Some(true) => Len::Unknown,
        Some(n) => Len::Defined(n as u32),
        None => Len::Undefined,
    };
    let body = if let Some(items) = v["items"].as_array() {
        Body::Items(
            items
                .iter()
                .map(|i| Item {
                    len: Len::Unknown,
                    nodes: py_nodes(i),
                })
                .collect(),
        )
    } else if let Some(f) = v["fragments"].as_array() {
        Body::Fragments(f.iter().map(|n| n.as_u64().unwrap_or(0) as u32).collect())
    } else {
        Body::Value
    };
    Node {
        tag: Tag((tag >> 16) as u16, tag as u16),
        vr,
        len,
        body,
        un_implicit: false,
    }
}

// ----------------------------------------------------------------------------- comparison

/// How two trees are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Same nodes, same count.
    Exact,
    /// The grammar stopped at an error: its tree must be the start of the other's (the last
    /// open container may hold fewer children); the other reader may have read on.
    OursIsPrefix,
    /// The other reader stopped early: its tree must be the start of ours.
    TheirsIsPrefix,
}

/// Per-comparison switches set by the rules.
#[derive(Debug, Clone, Copy, Default)]
struct Lenience {
    /// Ignore VRs (the other reader substitutes them).
    vr: bool,
    /// pydicom: UN (explicit) or an unknown private element (implicit) of defined length may be
    /// parsed as a sequence by pydicom where the grammar reads a value.
    un_as_sequence: bool,
    /// dicom-rs: the items of UN of undefined length are read in the outer encoding.
    skip_un_implicit_items: bool,
    /// pydicom: an undefined-length UN is SQ.
    un_undefined_is_sq: bool,
}

/// The first difference between two node lists, as "path: ours vs theirs".
fn diff(a: &[Node], b: &[Node], mode: Mode, len: &Lenience, path: &str) -> Option<String> {
    let n = a.len().min(b.len());
    for i in 0..n {
        let last = i + 1 == n;
        let sub = match (mode, last) {
            (Mode::OursIsPrefix, true) if a.len() == n => Mode::OursIsPrefix,
            (Mode::TheirsIsPrefix, true) if b.len() == n => Mode::TheirsIsPrefix,
            _ => Mode::Exact,
        };
        if let Some(d) = diff_node(&a[i], &b[i], sub, len, path) {
            return Some(d);
        }
    }
    match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Less if mode == Mode::OursIsPrefix => None,
        std::cmp::Ordering::Greater if mode == Mode::TheirsIsPrefix => None,
        std::cmp::Ordering::Less => Some(format!(
            "{path}: grammar ends here; the other reader has {} more, first {}",
            b.len() - n,
            node_str(&b[n])
        )),
        std::cmp::Ordering::Greater => Some(format!(
            "{path}: the other reader ends here; the grammar has {} more, first {}",
            a.len() - n,
            node_str(&a[n])
        )),
    }
}

fn diff_node(a: &Node, b: &Node, mode: Mode, l: &Lenience, path: &str) -> Option<String> {
    let here = format!("{path}/{}", tag_str(a.tag));
    let mismatch = |what: &str| {
        Some(format!(
            "{here}: {what}: grammar {} vs {}",
            node_str(a),
            node_str(b)
        ))
    };
    if a.tag != b.tag {
        return mismatch("tag");
    }
    let vr_ok = match (a.vr, b.vr) {
        (Some(x), Some(y)) => {
            x == y
                || l.vr
                || (l.un_undefined_is_sq && x == VR::UN && y == VR::SQ && a.len == Len::Undefined)
                || (l.un_as_sequence && x == VR::UN && y == VR::SQ)
        }
        _ => true,
    };
    if !vr_ok {
        return mismatch("VR");
    }
    if !a.len.matches(b.len) {
        return mismatch("length");
    }
    match (&a.body, &b.body) {
        (Body::Value, Body::Value) => None,
        // Only UN (explicit) or a private element (implicit: no VR in the file).
        (Body::Value, Body::Items(_))
            if l.un_as_sequence
                && (a.vr == Some(VR::UN) || (a.vr.is_none() && a.tag.group() % 2 == 1)) =>
        {
            None
        }
        (Body::Items(_), Body::Items(_)) if l.skip_un_implicit_items && a.un_implicit => None,
        (Body::Items(x), Body::Items(y)) => {
            let n = x.len().min(y.len());
            for i in 0..n {
                let ipath = format!("{here}[{}]", i + 1);
                if !x[i].len.matches(y[i].len) {
                    return Some(format!(
                        "{ipath}: item length: grammar {} vs {}",
                        x[i].len, y[i].len
                    ));
                }
                let last = i + 1 == n;
                let sub = match (mode, last) {
                    (Mode::OursIsPrefix, true) if x.len() == n => Mode::OursIsPrefix,
                    (Mode::TheirsIsPrefix, true) if y.len() == n => Mode::TheirsIsPrefix,
                    _ => Mode::Exact,
                };
                if let Some(d) = diff(&x[i].nodes, &y[i].nodes, sub, l, &ipath) {
                    return Some(d);
                }
            }
            let ok = x.len() == y.len()
                || (mode == Mode::OursIsPrefix && x.len() < y.len())
                || (mode == Mode::TheirsIsPrefix && x.len() > y.len());
            (!ok).then(|| format!("{here}: items: grammar {} vs {}", x.len(), y.len()))
        }
        (Body::Fragments(x), Body::Fragments(y)) => {
            let ok = x == y
                || (mode == Mode::OursIsPrefix && y.starts_with(x))
                || (mode == Mode::TheirsIsPrefix && x.starts_with(y));
            (!ok).then(|| match x.iter().zip(y).position(|(p, q)| p != q) {
                Some(i) => format!(
                    "{here}: fragment {}: length {} for the grammar, {} for the other",
                    i + 1,
                    x[i],
                    y[i]
                ),
                None => format!(
                    "{here}: fragments: {} for the grammar, {} for the other",
                    x.len(),
                    y.len()
                ),
            })
        }
        _ => mismatch("kind"),
    }
}

// ---------------------------------------------------------------------------------- rules

/// The known, justified differences. Each is named, says which reader it is for, and applies
/// only when its condition holds in the file (most only when the grammar reported the
/// irregularity that triggers it).
mod rules {
    /// pydicom keeps a data set as a dict keyed by tag: of an element repeated in one data set
    /// it keeps one (the last value, at the first one's place). The grammar reports the repeat
    /// as an anomaly (the consumers refuse or flag it); it is compared with pydicom's view of it.
    pub const PYDICOM_DICT: &str = "pydicom: repeated element collapsed (dict)";
    /// pydicom replaces VR UN by the dictionary's VR (`replace_un_with_known_vr`) and then
    /// parses a defined-length UN whose dictionary VR is SQ as a sequence (and a private
    /// implicit element its private dictionary calls SQ). The grammar reads UN of defined
    /// length as a value, as PS3.5 §6.2.2 says (only UN of undefined length holds items).
    pub const PYDICOM_UN_VR: &str = "pydicom: UN read as the dictionary VR";
    /// dicom-rs reads the items of UN of undefined length in the data set's explicit VR, not in
    /// Implicit VR Little Endian as PS3.5 §6.2.2 requires; the element itself must agree, its
    /// items are not compared.
    pub const DICOM_RS_UN_ITEMS: &str = "dicom-rs: items of UN (undefined length) not implicit";
    /// The file has no usable Part 10 head (no DICM prefix, or no transfer syntax): the grammar
    /// does not guess an encoding (consumers refuse such a file); pydicom guesses one. The data
    /// set is then tokenized in the encoding pydicom chose, from where pydicom's data set
    /// starts, and compared (pydicom's meta elements and data set together).
    pub const NO_PART10_HEAD: &str = "no Part 10 head: read in pydicom's guessed encoding";
    /// The grammar stopped at a structural error; pydicom, which repairs or reads on, may have
    /// more. Everything before the error must agree. Errors pydicom reads past (as the
    /// consumers of the grammar do not): a value or item running past the end of the file or
    /// of its container (pydicom reads short values without complaint, and reads items by
    /// count of bytes, not by their boundary), and a delimiter where an element belongs
    /// (pydicom ends the data set there, silently).
    pub const PYDICOM_READS_ON: &str = "pydicom reads past a structural error";
    /// The same for dicom-rs: it ends a data set silently at end of input in a header position
    /// even inside open sequences/items, skips an Item Delimitation Item outside a sequence,
    /// and reads the items of a defined-length sequence until their byte count is reached or
    /// passed (an item overrunning its sequence is not an error for it).
    pub const DICOM_RS_READS_ON: &str = "dicom-rs reads past a structural error";
    /// dicom-rs follows the File Meta Information Group Length; the grammar ends the meta group
    /// where group 0002 ends (part10.rs) and reports the mismatch as an issue. Where they
    /// disagree, the grammar's issue must be there.
    pub const DICOM_RS_GROUP_LENGTH: &str = "dicom-rs: data set starts where the group length says";
    /// dicom-rs's File Meta reader requires (0002,0000) first; the grammar reads a meta group
    /// without it (and reports `GroupLengthMissing`).
    pub const DICOM_RS_NEEDS_GROUP_LENGTH: &str =
        "dicom-rs: refuses a meta group without group length";
    /// dicom-rs's File Meta reader refuses a meta group without (0002,0010) Transfer Syntax
    /// UID; the grammar reads it (`transfer_syntax_uid: None`), and its consumers refuse the
    /// file for having no transfer syntax.
    pub const DICOM_RS_NEEDS_TS: &str = "dicom-rs: refuses a meta group without transfer syntax";
    /// pydicom switches to implicit VR when the first element of an explicit VR data set does
    /// not look explicit (a heuristic for mislabelled files); the grammar follows the transfer
    /// syntax and stops at the first element that is not explicit VR.
    pub const PYDICOM_SWITCHES_VR: &str = "pydicom: implicit VR under an explicit transfer syntax";
}

#[derive(Debug, Clone)]
enum Verdict {
    Agree,
    AgreeBy(Vec<&'static str>),
    Disagree(String),
}

/// pydicom's view of the grammar's tree: one element per tag per data set (the last value at
/// the first place).
fn as_dict(nodes: &[Node]) -> (Vec<Node>, bool) {
    let mut out: Vec<Node> = Vec::new();
    let mut changed = false;
    for n in nodes {
        let mut n = n.clone();
        if let Body::Items(items) = &mut n.body {
            for it in items.iter_mut() {
                let (v, c) = as_dict(&it.nodes);
                it.nodes = v;
                changed |= c;
            }
        }
        match out.iter_mut().find(|m| m.tag == n.tag) {
            Some(m) => {
                *m = n;
                changed = true;
            }
            None => out.push(n),
        }
    }
    (out, changed)
}

fn any_node(nodes: &[Node], f: &dyn Fn(&Node) -> bool) -> bool {
    nodes.iter().any(|n| {
        f(n) || match &n.body {
            Body::Items(items) => items.iter().any(|i| any_node(&i.nodes, f)),
            _ => false,
        }
    })
}

/// `guessed`: the data set was read in pydicom's guessed encoding (rule `NO_PART10_HEAD`);
/// `no_prefix`: the file has no DICM prefix either, so pydicom's meta elements (group 0002 it
/// found at the start) belong to what the grammar read as the data set.
fn compare_pydicom(o: &Ours, py: &PyReading, guessed: bool, no_prefix: bool) -> Verdict {
    let mut used = Vec::new();
    let mut l = Lenience::default();
    let (mine, collapsed) = as_dict(&o.reading.tree);
    if collapsed {
        assert!(
            o.anomalies
                .iter()
                .any(|a| matches!(a, AnomalyKind::Duplicate { .. })),
            "a repeated element the grammar did not report"
        );
        used.push(rules::PYDICOM_DICT);
    }
    if guessed {
        used.push(rules::NO_PART10_HEAD);
    }
    let theirs: Vec<Node> = if no_prefix {
        py.reading
            .meta
            .iter()
            .chain(&py.reading.tree)
            .cloned()
            .collect()
    } else {
        py.reading.tree.clone()
    };
    if o.explicit && any_node(&mine, &|n| n.vr == Some(VR::UN)) {
        l.un_as_sequence = true;
        l.un_undefined_is_sq = true;
    }
    if !o.explicit && any_node(&mine, &|n| n.tag.group() % 2 == 1 && n.body == Body::Value) {
        // Private elements of defined length in implicit VR: the grammar has no private
        // dictionary, pydicom has one.
        l.un_as_sequence = true;
    }
    if o.explicit && py.encoding == Some(Encoding::ImplicitLittle) {
        // pydicom read the whole data set as implicit VR although the syntax is explicit.
        used.push(rules::PYDICOM_SWITCHES_VR);
        return match o.error {
            Some(GrammarError {
                kind: ErrorKind::UnknownVr { .. },
                ..
            }) if o.reading.tree.is_empty() => Verdict::AgreeBy(used),
            _ => Verdict::Disagree(format!(
                "pydicom read implicit VR, the grammar {:?}",
                o.error
            )),
        };
    }
    let mode = match o.error {
        None => Mode::Exact,
        Some(_) => Mode::OursIsPrefix,
    };
    let lenient_used = |d: &Option<String>, l: &Lenience| -> Option<Option<String>> {
        // Was a lenience needed? Compare strictly once more.
        let strict = diff(&mine, &theirs, mode, &Lenience::default(), "");
        match (d, strict) {
            (None, Some(_)) if l.un_as_sequence || l.un_undefined_is_sq => Some(None),
            _ => None,
        }
    };
    let d = diff(&mine, &theirs, mode, &l, "");
    if lenient_used(&d, &l).is_some() {
        used.push(rules::PYDICOM_UN_VR);
    }
    match (d, o.error) {
        (Some(d), _) => Verdict::Disagree(d),
        (None, None) => {
            if py.reading.error.is_some() {
                Verdict::Disagree(format!(
                    "the grammar read the file, pydicom failed: {:?}",
                    py.reading.error
                ))
            } else if used.is_empty() {
                Verdict::Agree
            } else {
                Verdict::AgreeBy(used)
            }
        }
        (None, Some(e)) => {
            // pydicom read at least as far; did it read past what the grammar refused?
            let same = diff(&mine, &theirs, Mode::Exact, &l, "").is_none();
            if same && py.reading.error.is_some() {
                // Both stopped at the same place.
                return if used.is_empty() {
                    Verdict::Agree
                } else {
                    Verdict::AgreeBy(used)
                };
            }
            let reads_on = matches!(
                e.kind,
                ErrorKind::PastEnd { .. }
                    | ErrorKind::Truncated(_)
                    | ErrorKind::Overrun { .. }
                    | ErrorKind::DelimiterInDataSet { .. }
            );
            if reads_on {
                used.push(rules::PYDICOM_READS_ON);
                Verdict::AgreeBy(used)
            } else {
                Verdict::Disagree(format!(
                    "the grammar stopped ({e}); pydicom read on without error"
                ))
            }
        }
    }
}

/// True when the other reader's last element is (inside) an element the grammar read as UN of
/// undefined length with implicit VR items.
fn ends_inside_un(ours: &[Node], theirs: &[Node]) -> bool {
    let Some(i) = theirs.len().checked_sub(1) else {
        return false;
    };
    let Some(a) = ours.get(i) else {
        return false;
    };
    if a.un_implicit {
        return true;
    }
    match (&a.body, &theirs[i].body) {
        (Body::Items(x), Body::Items(y)) => match y.len().checked_sub(1) {
            Some(j) => x
                .get(j)
                .is_some_and(|xi| ends_inside_un(&xi.nodes, &y[j].nodes)),
            None => false,
        },
        _ => false,
    }
}

fn compare_dicom_rs(o: &Ours, rs: &Reading) -> Verdict {
    let mut used = Vec::new();
    let mut l = Lenience::default();
    if any_node(&o.reading.tree, &|n| n.un_implicit) {
        l.skip_un_implicit_items = true;
        used.push(rules::DICOM_RS_UN_ITEMS);
    }
    let mode = match (o.error, &rs.error) {
        (None, None) => Mode::Exact,
        (Some(_), _) => Mode::OursIsPrefix,
        (None, Some(_)) => Mode::TheirsIsPrefix,
    };
    if let Some(d) = diff(&o.reading.tree, &rs.tree, mode, &l, "") {
        return Verdict::Disagree(d);
    }
    match (o.error, &rs.error) {
        (None, None) | (Some(_), Some(_)) => {}
        (None, Some(_))
            if l.skip_un_implicit_items && ends_inside_un(&o.reading.tree, &rs.tree) =>
        {
            // dicom-rs failed on the implicit VR items it read as explicit VR.
        }
        (None, Some(e)) => {
            return Verdict::Disagree(format!("the grammar read the file, dicom-rs failed: {e}"))
        }
        (Some(e), None) => {
            let reads_on = matches!(
                e.kind,
                ErrorKind::Truncated(_)
                    | ErrorKind::DelimiterInDataSet { .. }
                    | ErrorKind::Overrun { .. }
            );
            if !reads_on {
                return Verdict::Disagree(format!(
                    "the grammar stopped ({e}); dicom-rs read on without error"
                ));
            }
            used.push(rules::DICOM_RS_READS_ON);
        }
    }
    if used.is_empty() {
        Verdict::Agree
    } else {
        Verdict::AgreeBy(used)
    }
}

/// The meta group: the grammar's elements against pydicom's, and the data start against
/// dicom-rs's File Meta reader.
fn compare_meta(file: &[u8], o: &Ours, py: &PyReading) -> Verdict {
    let Some(Ok(h)) = &o.head else {
        return Verdict::Agree;
    };
    let mut used = Vec::new();
    if let Some(d) = diff(
        &o.reading.meta,
        &py.reading.meta,
        Mode::Exact,
        &Lenience::default(),
        "meta",
    ) {
        return Verdict::Disagree(d);
    }
    match dicom_rs_data_start(file, h.meta_start) {
        Ok((start, ts)) => {
            if start != h.data_start {
                let mismatch = h
                    .issues
                    .iter()
                    .any(|i| matches!(i, MetaIssue::GroupLengthMismatch { .. }));
                if !mismatch {
                    return Verdict::Disagree(format!(
                        "data set starts at {} for the grammar, {start} for dicom-rs",
                        h.data_start
                    ));
                }
                used.push(rules::DICOM_RS_GROUP_LENGTH);
            } else if Some(ts.as_str()) != h.ts.as_deref().map(|t| t.trim_end_matches(['\0', ' ']))
            {
                return Verdict::Disagree(format!(
                    "transfer syntax {:?} for the grammar, {ts:?} for dicom-rs",
                    h.ts
                ));
            }
        }
        Err(e) if h.ts.is_none() => {
            // The grammar reads the head; its consumers refuse a file without a transfer
            // syntax (there is no encoding to read the data set in).
            let _ = e;
            used.push(rules::DICOM_RS_NEEDS_TS);
        }
        Err(e) => {
            let no_gl = h.issues.iter().any(|i| {
                matches!(
                    i,
                    MetaIssue::GroupLengthMissing | MetaIssue::GroupLengthMisplaced { .. }
                )
            });
            if !no_gl {
                return Verdict::Disagree(format!("dicom-rs refuses the meta group: {e}"));
            }
            used.push(rules::DICOM_RS_NEEDS_GROUP_LENGTH);
        }
    }
    if used.is_empty() {
        Verdict::Agree
    } else {
        Verdict::AgreeBy(used)
    }
}

// ---------------------------------------------------------------------------------- tests

#[test]
fn the_grammar_agrees_with_dicom_rs_and_pydicom_on_every_corpus_file() {
    let c = corpus();
    let t0 = std::time::Instant::now();
    let py = pydicom_all(c);
    let t_py = t0.elapsed();
    let mut t_ours = std::time::Duration::ZERO;
    let mut t_rs = std::time::Duration::ZERO;
    let mut rule_use: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut failures = String::new();
    let mut agreed = 0usize;
    for rel in &c.files {
        let bytes = c.bytes(rel);
        let p = &py[rel];
        let t0 = std::time::Instant::now();
        let mut o = ours(&bytes, None);
        let (mut guessed, mut no_prefix) = (false, false);
        if o.encoding.is_none() {
            // No usable head: read in pydicom's guess, from where pydicom's reading starts
            // (its meta elements, when it found group 0002 without a prefix, come first).
            if let Some(enc) = p.encoding {
                let start = match &o.head {
                    Some(Ok(h)) => h.data_start,
                    _ => 0,
                };
                no_prefix = !matches!(o.head, Some(Ok(_)));
                guessed = true;
                o = ours(&bytes, Some((enc, start)));
            }
        }
        t_ours += t0.elapsed();
        let t1 = std::time::Instant::now();
        let rs = dicom_rs(&bytes, &o);
        t_rs += t1.elapsed();
        let mut verdicts = vec![
            ("pydicom", compare_pydicom(&o, p, guessed, no_prefix)),
            ("dicom-rs", compare_dicom_rs(&o, &rs)),
        ];
        verdicts.push(("meta", compare_meta(&bytes, &o, p)));
        let mut ok = true;
        for (who, v) in verdicts {
            match v {
                Verdict::Agree => {}
                Verdict::AgreeBy(rules) => {
                    for r in rules {
                        let entry = match &o.reading.error {
                            Some(e) => format!("{rel} (grammar: {e})"),
                            None => rel.clone(),
                        };
                        rule_use.entry(r).or_default().push(entry);
                    }
                }
                Verdict::Disagree(d) => {
                    ok = false;
                    let _ = writeln!(
                        failures,
                        "{rel}: grammar vs {who}: {d}\n    grammar: {}\n    pydicom: {}{}",
                        o.reading.error.as_deref().unwrap_or("read to the end"),
                        p.reading.error.as_deref().unwrap_or("read to the end"),
                        p.warnings
                            .first()
                            .map(|w| format!(" (warned: {w})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        agreed += usize::from(ok);
    }
    eprintln!("read by the grammar in {t_ours:?}, dicom-rs {t_rs:?}, pydicom {t_py:?}");
    eprintln!("{agreed} of {} files agree; rules used:", c.files.len());
    for (rule, files) in &rule_use {
        eprintln!("  {rule}: {} file(s):", files.len());
        for f in files {
            eprintln!("    {f}");
        }
    }
    assert!(failures.is_empty(), "disagreements:\n{failures}");
}

/// The comparison is not vacuous: a tree that differs from the file in one length, one VR, one
/// item or one fragment is reported against both readers.
#[test]
fn the_comparison_reports_a_changed_tree() {
    let c = corpus();
    let py = pydicom_all_of(
        c,
        &[
            "dcmtk/rtplan.explicit-le-undef.dcm",
            "dcmtk/CT_0001.rle-frag1k.dcm",
        ],
    );
    type Change = fn(&mut Vec<Node>) -> bool;
    let mutate: [(&str, &str, Change); 4] = [
        ("dcmtk/rtplan.explicit-le-undef.dcm", "a length", |t| {
            t[3].len = Len::Defined(2);
            true
        }),
        ("dcmtk/rtplan.explicit-le-undef.dcm", "a VR", |t| {
            t[3].vr = Some(VR::LO);
            true
        }),
        ("dcmtk/rtplan.explicit-le-undef.dcm", "an item", |t| {
            for n in t.iter_mut() {
                if let Body::Items(items) = &mut n.body {
                    if let Some(it) = items.first_mut() {
                        it.nodes.pop();
                        return true;
                    }
                }
            }
            false
        }),
        (
            "dcmtk/CT_0001.rle-frag1k.dcm",
            "a fragment",
            |t| match &mut t.last_mut().expect("nodes").body {
                Body::Fragments(f) => {
                    f[2] += 2;
                    true
                }
                _ => false,
            },
        ),
    ];
    for (rel, what, change) in mutate {
        let bytes = c.bytes(rel);
        let o = ours(&bytes, None);
        let rs = dicom_rs(&bytes, &o);
        assert!(
            matches!(compare_pydicom(&o, &py[rel], false, false), Verdict::Agree),
            "{rel}"
        );
        assert!(matches!(compare_dicom_rs(&o, &rs), Verdict::Agree), "{rel}");
        let mut changed = o.clone();
        assert!(change(&mut changed.reading.tree), "{rel}: {what} not found");
        for (who, v) in [
            ("pydicom", compare_pydicom(&changed, &py[rel], false, false)),
            ("dicom-rs", compare_dicom_rs(&changed, &rs)),
        ] {
            match v {
                Verdict::Disagree(d) => eprintln!("{rel}, {what} changed, {who}: {d}"),
                other => panic!("{rel}: {what} changed, {who} says {other:?}"),
            }
        }
    }
}

// ------------------------------------------------------------ mutated corpus files (proptest)

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte (`near`: within the first 8 KiB, where the structure is).
    Flip {
        at: prop::sample::Index,
        near: bool,
        xor: u8,
    },
    /// Overwrite 4 bytes with a length-like value.
    Length {
        at: prop::sample::Index,
        near: bool,
        value: u32,
    },
    Insert {
        at: prop::sample::Index,
        near: bool,
        bytes: Vec<u8>,
    },
    Truncate {
        at: prop::sample::Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let near = prop::bool::weighted(0.8);
    prop_oneof![
        4 => (any::<prop::sample::Index>(), near, 1..=255u8)
            .prop_map(|(at, near, xor)| Mutation::Flip { at, near, xor }),
        2 => (
            any::<prop::sample::Index>(),
            near,
            prop_oneof![Just(0u32), Just(1), Just(0xFFFF_FFFF), Just(0xFFFF_FFFE), 0..4096u32]
        )
            .prop_map(|(at, near, value)| Mutation::Length { at, near, value }),
        1 => (any::<prop::sample::Index>(), near, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, near, bytes)| Mutation::Insert { at, near, bytes }),
        1 => any::<prop::sample::Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let pos = |at: &prop::sample::Index, near: bool, len: usize| {
        let span = if near { len.min(8192) } else { len };
        if span == 0 {
            0
        } else {
            at.index(span)
        }
    };
    match m {
        Mutation::Flip { at, near, xor } => {
            if !data.is_empty() {
                let i = pos(at, *near, data.len());
                data[i] ^= xor;
            }
        }
        Mutation::Length { at, near, value } => {
            if data.len() >= 4 {
                let i = pos(at, *near, data.len() - 3);
                data[i..i + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
        Mutation::Insert { at, near, bytes } => {
            let i = pos(at, *near, data.len() + 1);
            data.splice(i..i, bytes.iter().copied());
        }
        Mutation::Truncate { at } => {
            let i = pos(at, false, data.len() + 1);
            data.truncate(i);
        }
    }
}

/// Small corpus files only (at most 64 KiB), so that a case costs milliseconds.
fn small_files() -> &'static [String] {
    static SMALL: OnceLock<Vec<String>> = OnceLock::new();
    SMALL.get_or_init(|| {
        let c = corpus();
        c.files
            .iter()
            .filter(|f| std::fs::metadata(c.dir.join(f)).is_ok_and(|m| m.len() <= 64 * 1024))
            .cloned()
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Mutated corpus files (byte flips, length fields overwritten, insertions, truncations)
    /// give the same tokens and the same `finish()` whole and split at random points, never
    /// panic, and report offsets inside the data set.
    #[test]
    fn mutated_corpus_files_read_the_same_whole_and_split(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 1..8),
        fallback in 0..4usize,
    ) {
        let files = small_files();
        prop_assert!(!files.is_empty());
        let rel = &files[pick.index(files.len())];
        let mut data = corpus().bytes(rel);
        for m in &mutations {
            apply(&mut data, m);
        }
        // The head as the grammar reads it; without a usable one, the bytes after it (or the
        // whole file) in an encoding the case chooses.
        let (ts, start) = match read_head(&data) {
            Ok(h) => match h.meta.transfer_syntax_uid.as_deref().map(TransferSyntax::from_uid) {
                Some(Ok(ts)) => (ts, h.data_start),
                _ => (fallback_ts(fallback), h.data_start),
            },
            Err(_) => (fallback_ts(fallback), 0),
        };
        let body = &data[start.min(data.len())..];
        let whole = read_tokens(&ts, body, body.len().max(1));
        let mut cuts: Vec<usize> = splits.iter().map(|s| s.index(body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for c in cuts {
            pieces.push(&body[from..c]);
            from = c;
        }
        pieces.push(&body[from..]);
        let split = read_split(&ts, &pieces);
        prop_assert_eq!(&whole, &split, "{} ({}), split", rel, ts);
        if !ts.deflated {
            // Offsets are positions in the data set, strictly increasing for headers.
            let mut last = None;
            for t in &whole.0 {
                let off = match t {
                    OwnedToken::Element(h) => Some(h.offset),
                    OwnedToken::ItemStart { offset, .. } | OwnedToken::Fragment { offset, .. } => {
                        Some(*offset)
                    }
                    OwnedToken::Error(e) => {
                        prop_assert!(e.offset <= body.len() as u64, "{}: {:?}", rel, e);
                        None
                    }
                    _ => None,
                };
                if let Some(o) = off {
                    prop_assert!(o < body.len() as u64, "{}: offset {} past the data", rel, o);
                    prop_assert!(last.is_none_or(|l| o > l), "{}: offset {} not after {:?}", rel, o, last);
                    last = Some(o);
                }
            }
            if let Err(e) = &whole.1 {
                prop_assert!(e.offset <= body.len() as u64, "{}: {:?}", rel, e);
            }
        }
        // The tree builder accepts the stream (items and sequences nest properly).
        let _ = tree_of(&whole.0, &whole.1);
    }
}

fn fallback_ts(i: usize) -> TransferSyntax {
    let uid = [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
    ][i % 4];
    TransferSyntax::from_uid(uid).expect("standard UID")
}

fn read_split(
    ts: &TransferSyntax,
    pieces: &[&[u8]],
) -> (Vec<OwnedToken>, Result<(), GrammarError>) {
    let mut r = DataSetReader::new(ts, Limits::OFFLINE);
    let mut out: Vec<OwnedToken> = Vec::new();
    for piece in pieces {
        r.feed(piece, |t| match (t, out.last_mut()) {
            (Token::Value(b), Some(OwnedToken::Value(v))) => v.extend_from_slice(b),
            (Token::Raw(b), Some(OwnedToken::Raw(v))) => v.extend_from_slice(b),
            (t, _) => out.push(t.into()),
        });
    }
    let end = r.finish();
    (out, end)
}
