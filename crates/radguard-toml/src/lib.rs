//! Places in a TOML document, for config errors reported as `FILE:LINE:COL: field `path``:
//! byte offsets to 1-based line and column, the key path at an offset, the byte range of a key
//! path. Every crate that validates a section of Radguard's config file (radguard-policy,
//! radguard-audit, radguard-ledger) places its errors with these, so they are placed alike.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

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
