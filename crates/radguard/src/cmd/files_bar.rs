//! The progress bar of the batch commands (`deid`, `scan`, `sanitize`) over the libraries'
//! progress callbacks: drawn on stderr only when it is a terminal, created once the number of
//! files is known, advanced from the worker threads.

use std::io::IsTerminal;
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressStyle};

/// What a batch reports: how many files, then one tick per file done.
#[derive(Debug, Clone, Copy)]
pub enum Tick {
    Started(usize),
    FileDone,
}

impl From<radguard_deid::batch::Progress> for Tick {
    fn from(p: radguard_deid::batch::Progress) -> Self {
        match p {
            radguard_deid::batch::Progress::Started { files } => Tick::Started(files),
            radguard_deid::batch::Progress::FileDone => Tick::FileDone,
        }
    }
}

impl From<radguard_media::batch::Progress> for Tick {
    fn from(p: radguard_media::batch::Progress) -> Self {
        match p {
            radguard_media::batch::Progress::Started { files } => Tick::Started(files),
            radguard_media::batch::Progress::FileDone => Tick::FileDone,
        }
    }
}

pub struct FilesBar {
    bar: OnceLock<ProgressBar>,
    hide: bool,
    /// Fewer files than this: no bar.
    min_files: usize,
    template: &'static str,
    chars: Option<&'static str>,
}

impl FilesBar {
    pub fn new(
        hide: bool,
        min_files: usize,
        template: &'static str,
        chars: Option<&'static str>,
    ) -> Self {
        FilesBar {
            bar: OnceLock::new(),
            hide,
            min_files,
            template,
            chars,
        }
    }

    pub fn update(&self, t: Tick) {
        match t {
            Tick::Started(n) => {
                let _ = self.bar.set(self.make(n));
            }
            Tick::FileDone => {
                if let Some(b) = self.bar.get() {
                    b.inc(1);
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = self.bar.get() {
            b.finish_and_clear();
        }
    }

    fn make(&self, n: usize) -> ProgressBar {
        if self.hide || n < self.min_files || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(n as u64);
        if let Ok(style) = ProgressStyle::with_template(self.template) {
            bar.set_style(match self.chars {
                Some(c) => style.progress_chars(c),
                None => style,
            });
        }
        bar
    }
}
