//! Benchmark: parse and check a generated, valid spec of about 1,000 lines (many consts,
//! networks and latents, a long model and guide), as `vic check` would.

// A benchmark reads the clock itself; the no-I/O rule is for the compiler core.
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::Criterion;
use vic::check::CheckOptions;
use vic::driver;

/// A valid spec with `n` latents; eight lines per latent plus a short header.
fn generate(n: usize) -> String {
    let mut s = String::new();
    s.push_str("# Generated for the check benchmark: a VAE with many small latent groups.\n");
    s.push_str("const D = 784\nconst H = 64\ndata x : Binary[D]\n");
    for i in 0..n {
        let _ = writeln!(s, "const Z{i} = {}", 2 + i % 7);
        let _ = writeln!(s, "latent z{i} : Real[Z{i}]");
        let _ = writeln!(
            s,
            "net enc{i}(x: Binary[D]) -> (loc: Real[Z{i}], scale: Positive[Z{i}]) = mlp(hidden = [H], act = relu)"
        );
        let _ = writeln!(s, "net dec{i}(z: Real[Z{i}]) -> Real[D] = linear()");
    }
    s.push_str("model {\n");
    for i in 0..n {
        let _ = writeln!(s, "  z{i} ~ Normal(0, 1)");
        if i == 0 {
            let _ = writeln!(s, "  let a0 = dec0(z0)");
        } else {
            let _ = writeln!(s, "  let a{i} = a{} + dec{i}(z{i})", i - 1);
        }
    }
    let _ = writeln!(s, "  x ~ Bernoulli(logits = a{})", n - 1);
    s.push_str("}\nguide {\n");
    for i in 0..n {
        let _ = writeln!(s, "  let (m{i}, s{i}) = enc{i}(x)");
        let _ = writeln!(s, "  z{i} ~ Normal(m{i}, s{i})");
    }
    s.push_str("}\ntrain {\n  dataset = \"fashion-mnist\"\n  epochs = 1\n}\n");
    s
}

fn main() {
    let src = generate(124);
    let lines = src.lines().count();
    let front = driver::front_end(&src, &CheckOptions::default());
    if !front.diagnostics.is_empty() {
        let text = vic::render::human("generated.vi", &src, &front.diagnostics);
        eprintln!("the generated spec does not check cleanly:\n{text}");
        std::process::exit(1);
    }

    let mut c = Criterion::default().sample_size(20).configure_from_args();
    c.bench_function(&format!("check {lines}-line spec"), |b| {
        b.iter(|| driver::front_end(black_box(&src), &CheckOptions::default()))
    });
    c.final_summary();

    // Criterion prints its estimate above; this is the plain mean for a log line.
    let runs = 20u32;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        black_box(driver::front_end(black_box(&src), &CheckOptions::default()));
    }
    let mean = started.elapsed() / runs;
    println!("check: {lines} lines, mean {mean:?} per check ({runs} runs)");
}
