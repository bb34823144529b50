//! The pages, embedded at build time from `assets/` (build.rs).

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The content type and bytes of an embedded file.
pub fn get(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, m, b)| (*m, *b))
}
