//! Embeds whatever files `assets/` holds (the pages: index.html, app.js, app.css, ...) as a
//! table the server looks names up in; without an index.html, a placeholder page.

use std::fmt::Write as _;
use std::path::Path;

fn mime(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let assets = dir.join("assets");
    println!("cargo:rerun-if-changed={}", assets.display());
    let mut files: Vec<(String, String)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&assets) {
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            // Plain names only: they are URL path segments.
            let plain = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
                && !name.starts_with('.');
            if p.is_file() && plain {
                println!("cargo:rerun-if-changed={}", p.display());
                files.push((name, p.display().to_string()));
            }
        }
    }
    if !files.iter().any(|(n, _)| n == "index.html") {
        let p = dir.join("src/placeholder.html");
        println!("cargo:rerun-if-changed={}", p.display());
        files.push(("index.html".into(), p.display().to_string()));
    }
    files.sort();
    let mut out = String::from("/// (name, content type, bytes) of every embedded page file.\npub static ASSETS: &[(&str, &str, &[u8])] = &[\n");
    for (name, path) in &files {
        let _ = writeln!(
            out,
            "    ({name:?}, {:?}, include_bytes!({path:?})),",
            mime(name)
        );
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("assets.rs");
    std::fs::write(dest, out).expect("writing assets.rs");
}
