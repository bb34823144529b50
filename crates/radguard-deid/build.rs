//! Generates one test per row of Table E.1-1 (at top level and inside a sequence) for
//! `tests/rows.rs`, from the same data file the library embeds.

use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=data/table_e1_1.tsv");
    println!("cargo:rerun-if-changed=build.rs");
    let text = std::fs::read_to_string("data/table_e1_1.tsv").expect("data/table_e1_1.tsv");
    let mut out = String::new();
    let mut index = 0usize;
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with("tag\t") || line.trim().is_empty() {
            continue;
        }
        let tag = line.split('\t').next().unwrap_or("").to_ascii_lowercase();
        for place in ["top", "nested"] {
            let _ = writeln!(
                out,
                "#[test]\nfn row_{index:03}_{tag}_{place}() {{ check_row({index}, Place::{}); }}",
                if place == "top" { "Top" } else { "Nested" }
            );
        }
        index += 1;
    }
    let _ = writeln!(out, "const GENERATED_ROWS: usize = {index};");
    let dest =
        std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("row_tests.rs");
    std::fs::write(dest, out).expect("write row_tests.rs");
}
