//! Places in a TOML document, for config errors reported as `FILE:LINE:COL: field `path``:
//! byte offsets to 1-based line and column, the key path at an offset, the byte range of a key
//! path, and the placed error itself ([`Placed`], listed one per line by [`PlacedErrors`]).
//! Every crate that validates a section of Radguard's config file (radguard-policy,
//! radguard-audit, radguard-ledger, ...) places and words its errors with these, so they read alike;
//! [`read_section`] is the reading of one section, for the crates whose checks name key paths.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a config file, with its place: `FILE:LINE:COL: field `path`: problem`
/// (the line and column, and the field, left out when there are none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed<P> {
    /// The file name (or other label) the config was read from.
    pub file: String,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the problem has a place in the file.
    pub col: Option<usize>,
    /// The byte range in the file the problem is about.
    pub span: Option<Range<usize>>,
    /// The key path, e.g. `audit.syslog[0].ca_file`; empty when none applies.
    pub field: String,
    /// What is wrong (never shortened: it is meant for the operator).
    pub problem: P,
}

impl<P> Placed<P> {
    /// A problem about `field` at `span` (a byte range into `src`, the text of `file`).
    pub fn new(
        src: &str,
        file: &str,
        span: Option<Range<usize>>,
        field: String,
        problem: P,
    ) -> Self {
        let (line, col) = match &span {
            Some(s) => {
                let (l, c) = line_col(src, s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Placed {
            file: file.to_string(),
            line,
            col,
            span,
            field,
            problem,
        }
    }

    /// A problem with the whole file (it cannot be read, say): no place, no field.
    pub fn unplaced(file: &str, problem: P) -> Self {
        Placed::new("", file, None, String::new(), problem)
    }

    /// A syntax error, an unknown key or a value of the wrong type, in the TOML parser's words
    /// (given to `problem`), placed where the parser stopped and naming the key found there.
    pub fn from_toml(
        src: &str,
        file: &str,
        err: &toml::de::Error,
        problem: impl FnOnce(String) -> P,
    ) -> Self {
        let span = err.span();
        let field = span
            .as_ref()
            .and_then(|s| path_at(src, s.start))
            .unwrap_or_default();
        let problem = problem(err.message().trim_end().to_string());
        Placed::new(src, file, span, field, problem)
    }
}

/// `FILE:LINE:COL: field `path`: problem`, the format of every config error.
impl<P: fmt::Display> fmt::Display for Placed<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        write!(f, "{}", self.problem)
    }
}

impl<P: fmt::Debug + fmt::Display> std::error::Error for Placed<P> {}

/// Every problem found in a config file (never empty when returned as an error), each placed
/// (a [`Placed`], or an enum of them when several sections are read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedErrors<E> {
    pub errors: Vec<E>,
}

impl<E> PlacedErrors<E> {
    pub fn errors(&self) -> &[E] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

/// One line per error.
impl<E: fmt::Display> fmt::Display for PlacedErrors<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for PlacedErrors<E> {}

/// Reads one section of a whole config file `src` (named `file` in errors): the document is
/// parsed as `D` (the file's shape as far as this section is concerned: its own table, every
/// other key ignored), `section` takes the section out of it (its defaults when absent) and
/// `problems` lists what is wrong with its values, each with its key path. A syntax error, an
/// unknown key or a wrong type stops the reading (worded by `toml_problem`); the value problems
/// are all placed and sorted by their position in the file.
pub fn read_section<D, T, P>(
    src: &str,
    file: &str,
    toml_problem: impl FnOnce(String) -> P,
    section: impl FnOnce(D) -> T,
    problems: impl FnOnce(&T) -> Vec<(Vec<Seg<'static>>, P)>,
) -> Result<T, PlacedErrors<Placed<P>>>
where
    D: serde::de::DeserializeOwned,
{
    let doc: D = toml::from_str(src).map_err(|e| PlacedErrors {
        errors: vec![Placed::from_toml(src, file, &e, toml_problem)],
    })?;
    let config = section(doc);
    let mut errors: Vec<Placed<P>> = problems(&config)
        .into_iter()
        .map(|(path, problem)| Placed::new(src, file, span_of(src, &path), render(&path), problem))
        .collect();
    if errors.is_empty() {
        Ok(config)
    } else {
        errors.sort_by_key(|e| e.span.as_ref().map(|s| s.start));
        Err(PlacedErrors { errors })
    }
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// 1-based line and column (in characters) of a byte offset, clamped to the nearest preceding
/// character boundary.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = src.get(..offset).unwrap_or_default();
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, col)
}

/// The path (`audit.syslog[1].address`) of the deepest key or value whose span holds `offset`.
pub fn path_at(src: &str, offset: usize) -> Option<String> {
    let doc = DeTable::parse(src).ok()?;
    let mut path = Vec::new();
    table_path(doc.get_ref(), offset, &mut path).then(|| render(&path))
}

/// The byte range of the value at `path` (`None` when the document does not hold it).
pub fn span_of(src: &str, path: &[Seg<'_>]) -> Option<Range<usize>> {
    let doc = DeTable::parse(src).ok()?;
    let (first, rest) = path.split_first()?;
    let Seg::Key(key) = first else {
        return None;
    };
    let mut value = doc.get_ref().get(*key)?;
    for seg in rest {
        value = match (seg, value.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => t.get(*k)?,
            (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(value.span())
}

/// `a.b[2].c`.
pub fn render(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn holds(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

fn table_path<'a>(table: &'a DeTable<'_>, offset: usize, path: &mut Vec<Seg<'a>>) -> bool {
    for (key, value) in table.iter() {
        path.push(Seg::Key(key.get_ref()));
        if holds(&key.span(), offset) || value_path(value, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn value_path<'a>(value: &'a Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Seg<'a>>) -> bool {
    match value.get_ref() {
        DeValue::Table(t) if table_path(t, offset, path) => return true,
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                if value_path(item, offset, path) {
                    return true;
                }
                path.pop();
            }
        }
        _ => {}
    }
    holds(&value.span(), offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Sec {
        #[serde(default)]
        a: u32,
        #[serde(default)]
        b: u32,
    }

    #[derive(serde::Deserialize)]
    struct Doc {
        sec: Option<Sec>,
    }

    fn read(src: &str) -> Result<Sec, PlacedErrors<Placed<String>>> {
        read_section(
            src,
            "f.toml",
            |m| format!("toml: {m}"),
            |d: Doc| d.sec.unwrap_or_default(),
            |s: &Sec| {
                let mut out = Vec::new();
                // Reported in reverse order of the file: the reading sorts them.
                if s.b > 9 {
                    out.push((
                        vec![Seg::Key("sec"), Seg::Key("b")],
                        "b too big".to_string(),
                    ));
                }
                if s.a > 9 {
                    out.push((
                        vec![Seg::Key("sec"), Seg::Key("a")],
                        "a too big".to_string(),
                    ));
                }
                out
            },
        )
    }

    #[test]
    fn read_section_places_sorts_and_stops_at_syntax() {
        assert_eq!(read("").map(|s| (s.a, s.b)).ok(), Some((0, 0)));
        assert_eq!(read("[sec]\na = 3\n").map(|s| s.a).ok(), Some(3));
        let e = read("[sec]\na = 10\nb = 11\n").err().unwrap();
        let lines: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            lines,
            [
                "f.toml:2:5: field `sec.a`: a too big",
                "f.toml:3:5: field `sec.b`: b too big"
            ]
        );
        let e = read("[sec]\nc = 1\n").err().unwrap();
        assert_eq!(e.len(), 1);
        assert!(e.errors[0].problem.starts_with("toml: "), "{}", e);
        assert_eq!(e.errors[0].line, Some(2));
    }

    #[test]
    fn line_col_counts_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        // 'é' is two bytes: the '=' after "bé " is byte 10, character column 4.
        assert_eq!(line_col(src, 10), (2, 4));
        assert_eq!(line_col(src, 8), (2, 2)); // inside 'é' -> clamped back to its start
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn placed_shapes() {
        let src = "[[peer]]\naddresses = [\"10.0.0.300/8\"]\n";
        let at = src.find("\"10.").unwrap();
        let e = Placed::new(
            src,
            "f.toml",
            Some(at..at + 14),
            "peer[0].addresses[0]".into(),
            "invalid CIDR \"10.0.0.300/8\"",
        );
        assert_eq!(
            e.to_string(),
            "f.toml:2:14: field `peer[0].addresses[0]`: invalid CIDR \"10.0.0.300/8\""
        );
        let e2 = Placed::unplaced("f.toml", "cannot read");
        assert_eq!(e2.to_string(), "f.toml: cannot read");
        let all = PlacedErrors {
            errors: vec![e, e2],
        };
        assert_eq!(all.to_string().lines().count(), 2);
        // A value of the wrong type: placed at the value, naming its key.
        let src = "a = 1\nb = \"x\"\n";
        let err = toml::from_str::<std::collections::BTreeMap<String, u32>>(src).unwrap_err();
        let e3 = Placed::from_toml(src, "f.toml", &err, |m| m);
        assert_eq!(
            (e3.line, e3.col, e3.field.as_str()),
            (Some(2), Some(5), "b")
        );
        assert!(
            e3.to_string().starts_with("f.toml:2:5: field `b`: "),
            "{e3}"
        );
    }

    #[test]
    fn field_paths() {
        let src = "[server]\nlisten = [\"a\", \"b\"]\n\n[[peer]]\nname = \"x\"\n\n[[peer]]\nname = \"y\"\naddresses = [\"1\", \"2\"]\n";
        let off = |needle: &str| src.find(needle).unwrap_or(usize::MAX);
        assert_eq!(
            path_at(src, off("\"b\"")).as_deref(),
            Some("server.listen[1]")
        );
        assert_eq!(path_at(src, off("\"y\"")).as_deref(), Some("peer[1].name"));
        assert_eq!(
            path_at(src, off("\"2\"")).as_deref(),
            Some("peer[1].addresses[1]")
        );
        assert_eq!(
            path_at(src, off("addresses")).as_deref(),
            Some("peer[1].addresses")
        );
        assert_eq!(path_at(src, off("[server]")).as_deref(), Some("server"));
    }

    #[test]
    fn paths_and_spans() {
        let src = "[audit]\nnode = \"gw\"\n[[audit.syslog]]\naddress = \"a:1\"\n[[audit.syslog]]\naddress = \"b:2\"\n";
        let at = src.find("b:2").unwrap();
        assert_eq!(path_at(src, at).as_deref(), Some("audit.syslog[1].address"));
        let span = span_of(
            src,
            &[
                Seg::Key("audit"),
                Seg::Key("syslog"),
                Seg::Index(1),
                Seg::Key("address"),
            ],
        )
        .unwrap();
        assert_eq!(&src[span], "\"b:2\"");
        assert_eq!(span_of(src, &[Seg::Key("ledger")]), None);
        assert_eq!(
            render(&[Seg::Key("a"), Seg::Index(2), Seg::Key("c")]),
            "a[2].c"
        );
    }
}
