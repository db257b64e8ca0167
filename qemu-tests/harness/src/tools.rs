//! Host tools and inputs the QEMU tests share: the `pvkexec` CLI and deterministic test files.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds (once per process) and returns the `pvkexec` binary of this workspace.
pub fn pvkexec() -> Result<PathBuf> {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    let root = crate::workspace_root();
    let status = crate::cargo_command(&root)
        .args(["build", "--quiet", "-p", "loader", "--bin", "pvkexec"])
        .status()
        .context("running cargo build for pvkexec")?;
    if !status.success() {
        bail!("building pvkexec failed");
    }
    // cargo_command drops CARGO_TARGET_DIR, so the binary is in the workspace's target/.
    let path = root.join("target/debug/pvkexec");
    *built = Some(path.clone());
    Ok(path)
}

/// A deterministic file of `len` bytes under the cache (an initrd stand-in).
pub fn test_file(len: usize) -> Result<PathBuf> {
    let path = crate::cache_dir().join(format!("test-initrd-{len}.bin"));
    if std::fs::metadata(&path).map(|m| m.len() as usize).ok() != Some(len) {
        std::fs::create_dir_all(crate::cache_dir())?;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 131 + i / 4096) as u8).collect();
        std::fs::write(&path, bytes)?;
    }
    Ok(path)
}

/// The layout `pvkexec build --mode` plans for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BuildMode {
    /// Xen's initial-domain builder.
    #[default]
    Dom0,
    /// The toolstack's builder (libxenguest).
    Domu,
}

impl BuildMode {
    fn arg(self) -> &'static str {
        match self {
            BuildMode::Dom0 => "dom0",
            BuildMode::Domu => "domu",
        }
    }
}

/// One `pvkexec build` command line, typed: the one place the xtask and the QEMU tests
/// assemble it. An option left `None` (or `false`) is not passed, so the CLI's default holds.
#[derive(Clone, Debug, Default)]
pub struct PvkexecBuild {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    pub mem_mib: u64,
    pub mode: BuildMode,
    /// `--toolstack` ("4.17", "4.20").
    pub toolstack: Option<String>,
    pub old_vcpus: Option<u32>,
    pub old_vcpu_info: bool,
    /// `--xen-vcpu-reset`: for a hypervisor that resets VCPUs (pvkexec's Xen patches).
    pub xen_vcpu_reset: bool,
    pub grant_reserve: Option<u64>,
    pub out: PathBuf,
}

/// What a successful `pvkexec build` printed.
#[derive(Clone, Debug)]
pub struct BuildOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Why `pvkexec build` gave no image.
#[derive(Debug)]
pub enum BuildError {
    /// The CLI itself could not be built.
    Cli(anyhow::Error),
    /// The CLI could not be started.
    Spawn(PathBuf, std::io::Error),
    /// It ran and refused, with its exit status and error output.
    Failed {
        out: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Cli(e) => write!(f, "building the pvkexec CLI: {e:#}"),
            BuildError::Spawn(bin, e) => write!(f, "running {}: {e}", bin.display()),
            BuildError::Failed {
                out,
                status,
                stderr,
            } => write!(
                f,
                "pvkexec build -o {} failed ({status}):\n{stderr}",
                out.display()
            ),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Spawn(_, e) => Some(e),
            _ => None,
        }
    }
}

impl PvkexecBuild {
    /// A build of `kernel` for a `mem_mib` MiB domain of `mode` into `out`, every other option
    /// at the CLI's default.
    pub fn new(kernel: &Path, mem_mib: u64, mode: BuildMode, out: &Path) -> Self {
        PvkexecBuild {
            kernel: kernel.to_path_buf(),
            mem_mib,
            mode,
            out: out.to_path_buf(),
            ..Default::default()
        }
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["build".into(), "--kernel".into(), (&self.kernel).into()];
        if let Some(i) = &self.initrd {
            a.extend(["--initrd".into(), i.into()]);
        }
        a.extend(["--mem-mib".into(), self.mem_mib.to_string().into()]);
        a.extend(["--mode".into(), self.mode.arg().into()]);
        if let Some(t) = &self.toolstack {
            a.extend(["--toolstack".into(), t.into()]);
        }
        if let Some(n) = self.old_vcpus {
            a.extend(["--old-vcpus".into(), n.to_string().into()]);
        }
        if self.old_vcpu_info {
            a.push("--old-vcpu-info".into());
        }
        if self.xen_vcpu_reset {
            a.push("--xen-vcpu-reset".into());
        }
        if let Some(n) = self.grant_reserve {
            a.extend(["--grant-reserve".into(), n.to_string().into()]);
        }
        if let Some(s) = &self.append {
            a.extend(["--append".into(), s.into()]);
        }
        a.extend(["-o".into(), (&self.out).into()]);
        a
    }

    /// Runs it with this workspace's CLI ([`pvkexec`]); its output when it succeeds.
    pub fn run(&self) -> Result<BuildOutput, BuildError> {
        let bin = pvkexec().map_err(BuildError::Cli)?;
        let o = Command::new(&bin)
            .args(self.args())
            .output()
            .map_err(|e| BuildError::Spawn(bin, e))?;
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() {
            return Err(BuildError::Failed {
                out: self.out.clone(),
                status: o.status,
                stderr,
            });
        }
        Ok(BuildOutput {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_pass_only_what_is_set() {
        let mut b = PvkexecBuild::new(Path::new("k"), 64, BuildMode::Domu, Path::new("o"));
        let args = |b: &PvkexecBuild| {
            b.args()
                .iter()
                .map(|a| a.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(args(&b), "build --kernel k --mem-mib 64 --mode domu -o o");
        b.initrd = Some("i".into());
        b.toolstack = Some("4.20".into());
        b.old_vcpus = Some(2);
        b.old_vcpu_info = true;
        b.grant_reserve = Some(3);
        b.append = Some(String::new());
        assert_eq!(
            args(&b),
            "build --kernel k --initrd i --mem-mib 64 --mode domu --toolstack 4.20 \
             --old-vcpus 2 --old-vcpu-info --grant-reserve 3 --append  -o o"
        );
    }
}
