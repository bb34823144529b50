//! Config errors with their place in the file: `FILE:LINE:COL: field `path`: message`.

use std::ops::Range;

use radguard_toml::{Placed, PlacedErrors};

/// One problem in a config file; its problem is a message (never shortened: it is meant for
/// the operator).
pub type ConfigError = Placed<String>;

/// Every problem found in a config file (never empty when returned as an error).
pub type ConfigErrors = PlacedErrors<ConfigError>;

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
        self.errors.push(Placed::new(
            self.src,
            self.origin,
            span,
            field.into(),
            message.into(),
        ));
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
