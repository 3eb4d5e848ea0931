//! File I/O for the CLI: the only module of the library that touches the file system.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

/// The real file system, for the data module's [`crate::data::Fs`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl crate::data::Fs for RealFs {
    fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| e.to_string())
    }

    fn exists(&self, path: &Path) -> bool {
        path.is_file()
    }
}

/// What the data module needs from the environment for a spec at `spec`: its directory
/// (relative dataset paths resolve against it) and `VIC_DATA` (where `"mnist"` lives).
pub fn data_env(spec: &Path) -> crate::data::DataEnv {
    crate::data::DataEnv {
        spec_dir: spec.parent().map(Path::to_path_buf).unwrap_or_default(),
        vic_data: std::env::var_os("VIC_DATA")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from),
    }
}

/// Read a spec file as UTF-8, with an error message naming the file.
pub fn read_source(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Write a file atomically (write a sibling temporary file, then rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("vic-tmp");
    std::fs::write(&tmp, contents).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A run directory (LANGUAGE.md section 12). The resumable state lives in
/// `checkpoint/`, replaced as a whole: the new set is written to `checkpoint.tmp/`,
/// the old one moved to `checkpoint.old/`, the new one moved into place, the old one
/// removed. A run killed at any point (even with SIGKILL) leaves either `checkpoint/`
/// or `checkpoint.old/` complete, and `load_checkpoint` takes whichever is.
pub struct RunDir {
    pub path: std::path::PathBuf,
    /// `RUN/.lock`, held locked while a `vic train` writes the run (see
    /// [`RunDir::create`]); released when the process ends, however it ends.
    _lock: Option<std::fs::File>,
}

impl RunDir {
    /// The run directory `path` for writing, created if need be and locked: a second
    /// `vic train` into the same directory is refused while this one runs.
    pub fn create(path: &Path) -> Result<RunDir, String> {
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let lock_path = path.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another `vic train` is writing to {}: wait for it to end, or pass --out DIR for a run of its own",
                    path.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", lock_path.display()))
            }
        }
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// An existing run directory (for `vic eval`, `sample`, `encode`).
    pub fn open(path: &Path) -> Result<RunDir, String> {
        if !path.join("ir.ron").is_file() {
            return Err(format!(
                "{} is not a run directory (it has no ir.ron); pass the --out directory of `vic train`",
                path.display()
            ));
        }
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: None,
        })
    }

    pub fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        let p = self.path.join(name);
        std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    }

    fn read_dir_files(dir: &Path) -> Result<std::collections::HashMap<String, Vec<u8>>, String> {
        let mut out = std::collections::HashMap::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_file() {
                if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                    let bytes = std::fs::read(&p)
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                    out.insert(name.to_string(), bytes);
                }
            }
        }
        Ok(out)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut f =
        std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl crate::train::RunStore for RunDir {
    fn save_checkpoint(&mut self, files: Vec<(String, Vec<u8>)>) -> Result<(), String> {
        let tmp = self.path.join("checkpoint.tmp");
        let cur = self.path.join("checkpoint");
        let old = self.path.join("checkpoint.old");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(|e| format!("cannot clear {}: {e}", tmp.display()))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        for (name, bytes) in &files {
            write_synced(&tmp.join(name), bytes)?;
        }
        if cur.is_dir() {
            if old.exists() {
                std::fs::remove_dir_all(&old)
                    .map_err(|e| format!("cannot clear {}: {e}", old.display()))?;
            }
            std::fs::rename(&cur, &old)
                .map_err(|e| format!("cannot move {}: {e}", cur.display()))?;
        }
        std::fs::rename(&tmp, &cur).map_err(|e| format!("cannot move {}: {e}", tmp.display()))?;
        if old.exists() {
            let _ = std::fs::remove_dir_all(&old);
        }
        if let Ok(dir) = std::fs::File::open(&self.path) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn load_checkpoint(
        &self,
    ) -> Result<Option<std::collections::HashMap<String, Vec<u8>>>, String> {
        for name in ["checkpoint", "checkpoint.old"] {
            let dir = self.path.join(name);
            if dir.join("state.json").is_file() {
                return RunDir::read_dir_files(&dir).map(Some);
            }
        }
        Ok(None)
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        write_atomic(&self.path.join(name), bytes)
    }
}

/// Write named tensors as a .npz archive (uncompressed), atomically.
pub fn write_npz(path: &Path, arrays: &[(String, candle_core::Tensor)]) -> Result<(), String> {
    let tmp = path.with_extension("vic-tmp.npz");
    let named: Vec<(&str, &candle_core::Tensor)> =
        arrays.iter().map(|(n, t)| (n.as_str(), t)).collect();
    candle_core::Tensor::write_npz(&named, &tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Write a tensor as a .npy file.
pub fn write_npy(path: &Path, t: &candle_core::Tensor) -> Result<(), String> {
    t.write_npy(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Runs candle's elementwise kernels on the calling thread: sets `CANDLE_NUM_THREADS=1`
/// unless the user set it. Call first thing in `main`, before any thread or candle op.
///
/// Why: candle 0.11 splits elementwise ops of 64Ki values or more over a barrier pool of
/// its own threads, which spin (up to 25 000 pause instructions) after each op, while the
/// matmul (`gemm`), vic's fused layers (`lower::nets::fused`, `lower::dist::fused`) and its
/// optimizer run on rayon's pool. On a machine with few cores the spinning threads take
/// the cores the next matmul needs: on 2 cores the VAE of LANGUAGE.md section 1 trains
/// about twice as fast with the barrier pool off (`bench/step_time.rs`). Its threads also
/// do not flush denormals (`train::fpu` reaches rayon's threads only). The matmul keeps
/// all of rayon's threads (`RAYON_NUM_THREADS`), which candle sizes independently.
pub fn keep_candle_elementwise_on_caller() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Edition 2021: safe to call; here no other thread exists yet.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Runs `f` on a worker thread of rayon's global pool (built here as
/// [`crate::train::fpu::pool_builder`] says, unless it exists already) and returns its
/// result. For the commands that run models: train, eval, sample, encode.
///
/// Why: the matrix products (`gemm`, `lower::nets::fused`) and the optimizer split their
/// work with `rayon::join` and parallel iterators. Called from a thread outside the pool,
/// each such call is queued to the pool while the caller sleeps until it is done, two
/// context switches per product (about 580 a step for the VAE of LANGUAGE.md section 1);
/// from a worker, the caller does its own share and only the other worker is woken (about
/// 50 a step). `bench/step_time.rs` (NO_POOL=1 for the other way) measured 5-10% a step.
pub fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // An error means the pool exists already (a library caller built it): use it as is.
    let _ = crate::train::fpu::pool_builder().build_global();
    rayon::scope(|_| f())
}

/// Exemplars for `vic sample --given FILE`: the values of a `.npy` array (any shape,
/// example axis first; values above 1 are read as 0..255 and scaled), or of a `.png`
/// image (one exemplar, its gray levels scaled to [0, 1]), row-major.
pub fn read_exemplars(path: &Path) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let values = match ext.as_str() {
        "npy" => {
            crate::data::parse_npy(&bytes, &name, "exemplars")
                .map_err(|e| e.to_string())?
                .data
        }
        "png" => {
            let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
            let mut reader = decoder
                .read_info()
                .map_err(|e| format!("{name} is not a readable PNG: {e}"))?;
            let mut buf = vec![0u8; reader.output_buffer_size().unwrap_or(0)];
            let info = reader
                .next_frame(&mut buf)
                .map_err(|e| format!("{name} is not a readable PNG: {e}"))?;
            if info.bit_depth != png::BitDepth::Eight {
                return Err(format!("{name}: only 8-bit PNG images are read"));
            }
            let channels = info.color_type.samples();
            let pixels = &buf[..info.buffer_size()];
            pixels
                .chunks(channels)
                .map(|px| {
                    // Gray, or the mean of the colour channels (alpha ignored).
                    let colour = if channels >= 3 { 3 } else { 1 };
                    px[..colour].iter().map(|&v| v as f32).sum::<f32>() / colour as f32 / 255.0
                })
                .collect()
        }
        _ => {
            return Err(format!(
                "{name}: exemplars are read from a .npy or .png file"
            ))
        }
    };
    let scale = if values.iter().any(|&v| v > 1.0) {
        1.0 / 255.0
    } else {
        1.0
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err(format!("{name} holds a value that is not finite"));
    }
    Ok(values.into_iter().map(|v| v * scale).collect())
}
