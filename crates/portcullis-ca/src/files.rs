//! Atomic file writes with explicit permissions.

use crate::CaError;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader (a reloading TLS listener) never sees half a file. `mode` is the
/// Unix permission of the new file (0600 for keys and state).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| CaError::corrupt(path, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(&tmp).map_err(CaError::io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(CaError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(CaError::io(path))
}

/// The lock file that serializes changes to a CA directory across
/// processes (`portcullis ca revoke` beside a running `serve-crl`).
const LOCK_FILE: &str = ".ca.lock";

/// Takes the exclusive lock of the CA in `dir`, waiting for another process
/// that holds it; released when the returned file is dropped.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File, CaError> {
    let path = dir.join(LOCK_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path).map_err(CaError::io(&path))?;
    file.lock().map_err(CaError::io(&path))?;
    Ok(file)
}

/// Creates `dir` (and parents) readable by its owner only.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(CaError::io(dir))
}

/// Reads a UTF-8 file.
pub(crate) fn read_string(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(CaError::io(path))
}
