//! Where a training step's time goes: batch assembly, the objective's forward pass,
//! backward, and the optimizer step, averaged over 100 steps of a spec's model on its
//! dataset, at the spec's batch size, sample count and gradient clipping. `cargo run --release --example step_time -- specs/vae.vi` (set FLUSH=1 to
//! flush denormals first; BARRIER_POOL=1 to leave candle's elementwise thread pool on, see
//! `vic::io::keep_candle_elementwise_on_caller`; NO_POOL=1 to run off rayon's pool, see
//! `vic::io::run_on_pool`; STEPS=N for N timed steps instead of 100; DEVICE=cuda or cuda:N
//! to run on a GPU of a `--features cuda` build, each phase's time then taken after the
//! device has finished its queued work). Prints mean and median timings; asserts nothing.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;
use vic::lower::objective::Settings;
fn main() {
    // As `vic` does (src/io.rs); BARRIER_POOL=1 keeps candle's own default instead.
    if std::env::var_os("BARRIER_POOL").is_none() {
        vic::io::keep_candle_elementwise_on_caller();
    }
    let src = std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap();
    let front = vic::driver::front_end(&src, &Default::default());
    let program = front.program.unwrap();
    let flush = std::env::var("FLUSH").is_ok();
    if flush {
        vic::train::fpu::flush_denormals_everywhere();
    }
    let env = vic::data::DataEnv {
        spec_dir: ".".into(),
        vic_data: None,
    };
    let data =
        vic::data::load(&program, &program.train.dataset, &env, &vic::io::RealFs, 0).unwrap();
    let dev = match std::env::var("DEVICE").as_deref() {
        Err(_) | Ok("cpu") => candle_core::Device::Cpu,
        Ok(d) => {
            let n = d
                .strip_prefix("cuda")
                .map(|r| r.trim_start_matches(':').parse().unwrap_or(0))
                .expect("DEVICE is cpu, cuda or cuda:N");
            candle_core::Device::new_cuda(n).unwrap()
        }
    };
    let store = vic::lower::params::ParamStore::seeded(0, &dev);
    let model = vic::lower::LoweredModel::new(program.clone(), store).unwrap();
    let mut opt = vic::train::optim::Optimizer::new(
        &program.train.optimizer,
        program.train.clip,
        model.store.named(),
    )
    .unwrap();
    // The spec's batch and sample count.
    let batch = program.train.batch;
    let samples = match program.train.objective {
        vic::ir::Objective::Elbo { samples } | vic::ir::Objective::Iwae { samples } => samples,
    };
    let mut rng = vic::rng::Rng::seed(1);
    let s = Settings {
        samples,
        iwae: false,
        train: true,
        kl_weight: 1.0,
        free_bits: 0.0,
        dataset_size: data.train.n,
    };
    let (mut tb, mut tf, mut tbw, mut to) = (0.0, 0.0, 0.0, 0.0);
    // Per-step times of each phase, for medians (robust to other load on the machine).
    let mut per_step: [Vec<f64>; 4] = Default::default();
    let body = || {
        let steps: usize = std::env::var("STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100);
        // The trainer's own batching: every part of a step (a `meta` family's members,
        // the labelled and unlabelled pools of `partial` data), its losses added.
        let mut batcher = vic::train::batches::for_data(&data, batch);
        let mut examples = 0usize;
        for i in 0..steps + 10 {
            let parts = match batcher.next_step(&mut rng) {
                Some(p) => p,
                None => {
                    batcher.start_epoch(&mut rng);
                    batcher.next_step(&mut rng).unwrap()
                }
            };
            let t0 = Instant::now();
            let batches: Vec<_> = parts
                .iter()
                .map(|p| vic::train::part_batch(&model.program, &data, p, &dev, &mut rng).unwrap())
                .collect();
            let t1 = Instant::now();
            let mut loss: Option<candle_core::Tensor> = None;
            for b in &batches {
                let out = model.objective(b, &s, &mut rng).unwrap();
                loss = Some(match loss {
                    Some(l) => (l + out.loss).unwrap(),
                    None => out.loss,
                });
            }
            let loss = loss.unwrap();
            let _ = loss.to_scalar::<f32>().unwrap();
            let t2 = Instant::now();
            let g = loss.backward().unwrap();
            // A GPU's kernels run after their launch returns: wait for them (a no-op on
            // the CPU).
            dev.synchronize().unwrap();
            let t3 = Instant::now();
            opt.step(&g, None).unwrap();
            dev.synchronize().unwrap();
            let t4 = Instant::now();
            if i >= 10 {
                examples += parts
                    .iter()
                    .filter(|p| p.counted)
                    .map(|p| p.indices.len())
                    .sum::<usize>();
                tb += (t1 - t0).as_secs_f64();
                tf += (t2 - t1).as_secs_f64();
                tbw += (t3 - t2).as_secs_f64();
                to += (t4 - t3).as_secs_f64();
                for (v, (a, b)) in per_step
                    .iter_mut()
                    .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
                {
                    v.push((b - a).as_secs_f64());
                }
            }
        }
        let ms = |x: f64| x * 1000.0 / steps as f64;
        println!(
            "per step ms: batch {:.2} fwd {:.2} bwd {:.2} opt {:.2} total {:.2} -> {:.0} ex/s",
            ms(tb),
            ms(tf),
            ms(tbw),
            ms(to),
            ms(tb + tf + tbw + to),
            examples as f64 / (tb + tf + tbw + to)
        );
        let med = per_step.map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        });
        let total: f64 = med.iter().sum();
        println!(
            "median ms:    batch {:.2} fwd {:.2} bwd {:.2} opt {:.2} total {:.2} -> {:.0} ex/s",
            med[0] * 1e3,
            med[1] * 1e3,
            med[2] * 1e3,
            med[3] * 1e3,
            total * 1e3,
            examples as f64 / steps as f64 / total
        );
    };
    // As `vic` runs its commands (`vic::io::run_on_pool`); NO_POOL=1 runs on the main
    // thread instead.
    if std::env::var_os("NO_POOL").is_some() {
        body()
    } else {
        vic::io::run_on_pool(body)
    }
}
