//! Config errors with their place in the file: `FILE:LINE:COL: field `path`: message`.

use std::fmt;
use std::ops::Range;

use radguard_toml::{line_col, path_at};

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

/// Turns a toml/serde error (a syntax error, an unknown key, a wrong type, ...) into a
/// [`ConfigError`], naming the field by walking the document's spans.
pub(crate) fn from_toml_error(src: &str, origin: &str, err: &toml::de::Error) -> ConfigError {
    let span = err.span();
    let field = span
        .as_ref()
        .and_then(|span| path_at(src, span.start))
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

#[cfg(test)]
mod tests {
    use super::*;

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
