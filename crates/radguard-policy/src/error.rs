//! Config errors with their place in the file: `FILE:LINE:COL: field `path`: message`.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file name (or other origin label) given to the parser.
    pub origin: String,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the problem has a place in the file.
    pub col: Option<usize>,
    /// The path of the offending field, e.g. `peer[1].addresses[0]`; empty when none applies.
    pub field: String,
    /// What is wrong (never shortened: it is meant for the operator).
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut out = self.origin.clone();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
            if let Some(col) = self.col {
                out.push_str(&format!(":{col}"));
            }
        }
        out.push_str(": ");
        if !self.field.is_empty() {
            out.push_str(&format!("field `{}`: ", self.field));
        }
        out.push_str(&self.message);
        out
    }
}

/// Every problem found in a config file (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn errors(&self) -> &[ConfigError] {
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
impl fmt::Display for ConfigErrors {
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

impl std::error::Error for ConfigErrors {}

/// Collects errors while a config is validated, turning byte spans into lines and columns.
pub(crate) struct Collector<'a> {
    src: &'a str,
    origin: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(src: &'a str, origin: &'a str) -> Self {
        Collector {
            src,
            origin,
            errors: Vec::new(),
        }
    }

    /// Records an error at `span` (a byte range into the source) about `field`.
    pub(crate) fn at(
        &mut self,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, col) = match span {
            Some(span) => {
                let (l, c) = line_col(self.src, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        self.errors.push(ConfigError {
            origin: self.origin.to_string(),
            line,
            col,
            field: field.into(),
            message: message.into(),
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors, in file order (errors without a place last).
    pub(crate) fn finish(mut self) -> ConfigErrors {
        self.errors
            .sort_by_key(|e| (e.line.is_none(), e.line, e.col));
        ConfigErrors {
            errors: self.errors,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset. Offsets past the end or inside a
/// multi-byte character are clamped to the nearest preceding character boundary.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Turns a toml/serde error (a syntax error, an unknown key, a wrong type, ...) into a
/// [`ConfigError`], naming the field by walking the document's spans.
pub(crate) fn from_toml_error(src: &str, origin: &str, err: &toml::de::Error) -> ConfigError {
    let span = err.span();
    let field = span
        .as_ref()
        .and_then(|span| field_at(src, span.start))
        .unwrap_or_default();
    let (line, col) = match &span {
        Some(span) => {
            let (l, c) = line_col(src, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    ConfigError {
        origin: origin.to_string(),
        line,
        col,
        field,
        message: err.message().trim_end().to_string(),
    }
}

/// The path (`peer[1].addresses[0]`) of the deepest key or value whose span holds `offset`.
pub(crate) fn field_at(src: &str, offset: usize) -> Option<String> {
    let doc = DeTable::parse(src).ok()?;
    let mut path = Vec::new();
    if table_path(doc.get_ref(), offset, &mut path) {
        Some(render_path(&path))
    } else {
        None
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

fn render_path(path: &[Seg]) -> String {
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

fn table_path(table: &DeTable<'_>, offset: usize, path: &mut Vec<Seg>) -> bool {
    for (key, value) in table.iter() {
        path.push(Seg::Key(key.get_ref().to_string()));
        if holds(&key.span(), offset) || value_path(value, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn value_path(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Seg>) -> bool {
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
            field_at(src, off("\"b\"")).as_deref(),
            Some("server.listen[1]")
        );
        assert_eq!(field_at(src, off("\"y\"")).as_deref(), Some("peer[1].name"));
        assert_eq!(
            field_at(src, off("\"2\"")).as_deref(),
            Some("peer[1].addresses[1]")
        );
        assert_eq!(
            field_at(src, off("addresses")).as_deref(),
            Some("peer[1].addresses")
        );
        assert_eq!(field_at(src, off("[server]")).as_deref(), Some("server"));
    }

    #[test]
    fn display_shapes() {
        let e = ConfigError {
            origin: "f.toml".into(),
            line: Some(3),
            col: Some(7),
            field: "peer[1].addresses[0]".into(),
            message: "invalid CIDR \"10.0.0.300/8\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "f.toml:3:7: field `peer[1].addresses[0]`: invalid CIDR \"10.0.0.300/8\""
        );
        let e2 = ConfigError {
            origin: "f.toml".into(),
            line: None,
            col: None,
            field: String::new(),
            message: "cannot read".into(),
        };
        assert_eq!(e2.to_string(), "f.toml: cannot read");
        let all = ConfigErrors {
            errors: vec![e, e2],
        };
        assert_eq!(all.to_string().lines().count(), 2);
    }
}
