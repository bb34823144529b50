//! Decodes one JPEG-LS stream ROUNDS times with radguard-jpegls and with CharLS, checks that both
//! give the same samples, and prints the best time of each and the ratio.
//!   jpegls-bench FILE.jls [ROUNDS]
use std::time::{Duration, Instant};

fn best<F: FnMut()>(rounds: usize, mut f: F) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: jpegls-bench FILE.jls [ROUNDS]");
    let rounds: usize = args.next().map_or(20, |r| r.parse().expect("ROUNDS"));
    let data = std::fs::read(&path).expect("read");
    let limits = radguard_jpegls::Limits::default();
    let ours = radguard_jpegls::decode(&data, &limits).expect("radguard-jpegls");
    let theirs = charls::CharLS::default().decode(&data).expect("CharLS");
    let ours_bytes: Vec<u8> = if ours.header.precision > 8 {
        ours.samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    } else {
        ours.samples.iter().map(|s| *s as u8).collect()
    };
    assert_eq!(ours_bytes, theirs, "radguard-jpegls and CharLS disagree");
    let h = &ours.header;
    let t_ours = best(rounds, || {
        std::hint::black_box(radguard_jpegls::decode(&data, &limits).expect("decode"));
    });
    let t_charls = best(rounds, || {
        std::hint::black_box(charls::CharLS::default().decode(&data).expect("decode"));
    });
    let mpix = f64::from(h.width * h.height) / 1e6;
    println!(
        "{path}: {}x{} x{} {}-bit, {} bytes; best of {rounds}",
        h.width,
        h.height,
        h.components.len(),
        h.precision,
        data.len()
    );
    println!(
        "radguard-jpegls {:8.3} ms ({:.1} Mpixel/s)",
        t_ours.as_secs_f64() * 1e3,
        mpix / t_ours.as_secs_f64()
    );
    println!(
        "CharLS          {:8.3} ms ({:.1} Mpixel/s)",
        t_charls.as_secs_f64() * 1e3,
        mpix / t_charls.as_secs_f64()
    );
    println!(
        "ratio radguard-jpegls / CharLS: {:.2}",
        t_ours.as_secs_f64() / t_charls.as_secs_f64()
    );
}
