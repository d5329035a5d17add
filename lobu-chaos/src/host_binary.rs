//! Finding the real example host binary: `LOBU_HOST_BIN`, or a release build of
//! `example-axum-host` made here with the cargo that runs the harness.

use std::path::PathBuf;
use std::process::Command;

/// The path of the `example-axum-host` binary to run.
pub(crate) fn host_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("LOBU_HOST_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("LOBU_HOST_BIN={} is not a file", path.display()))
        };
    }
    // `cargo run` sets CARGO to the cargo running us; otherwise the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("chaos: building the example host (cargo build --release -p example-axum-host)");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "example-axum-host"])
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of example-axum-host failed: {status}"));
    }
    let binary = target_dir(&cargo)?
        .join("release")
        .join(format!("example-axum-host{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!("no binary at {} after the build", binary.display()))
    }
}

/// `CARGO_TARGET_DIR`, or the workspace's target directory as `cargo metadata` reports it.
fn target_dir(cargo: &std::ffi::OsStr) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("reading cargo metadata: {e}"))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata has no target_directory".to_owned())
}
