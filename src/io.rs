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
