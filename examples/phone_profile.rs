//! Profiling aid: `cargo run --release --example phone_profile` (or under valgrind --tool=callgrind).
use customer_unify::normalize::phone::{normalize_phone, parse_region};
use std::time::Instant;

fn main() {
    let inputs = [
        "+49 30 12345678",
        "0049 (0)30 1234567",
        "030/12345678",
        "(0171) 12 34 567",
        "0171-1234567",
        "+4917612345678",
    ];
    let de = parse_region("DE").unwrap();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let t = Instant::now();
    let mut ok = 0;
    for i in 0..n {
        ok += normalize_phone(inputs[i % inputs.len()], de).is_some() as usize;
    }
    let s = t.elapsed().as_secs_f64();
    println!("{n} numbers, {ok} valid, {:.0}/s", n as f64 / s);
}
