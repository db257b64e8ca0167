//! A patched Xen hypervisor for the rig: Xen's release tarball, Debian's hypervisor `.config`
//! and pvkexec's patch series (`xen-patches/<4.17|4.20>/*.patch`), built once per set of inputs
//! and cached. Only the hypervisor changes; the domU rig's dom0 keeps Debian's toolstack, which
//! drives a hypervisor built from the tag (same domctl/sysctl interface versions).
//!
//! Sources come from `$PVKEXEC_XEN_SRC` when it is set, else `<workspace>/../shared/xen-src/`:
//! `xen-<release>.tar.xz` and `debian-<release>+N.config`. There is no fallback to Debian's
//! binary: a "patched" run on stock Xen would prove nothing.
//!
//! Debian's own patches to `xen/` (`debian-patches-4.17/`) are not applied, none is needed to
//! build: 0003 only changes the version banner, 0023 (objdump under `LC_ALL=C`) is covered by
//! running the whole build with `LC_ALL=C`, and 0025 fixes an Intel PMU path seen under ESX
//! that QEMU's TCG CPU never takes.

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::provision::{self, XenVersion};

/// The variable naming the directory with Xen's tarballs and Debian's configs.
pub const XEN_SRC_ENV: &str = "PVKEXEC_XEN_SRC";

/// Bumped when the build recipe changes, so older cached builds are not reused.
const RECIPE: &str = "pvkexec-xen-build-2: tar, patch -p1, olddefconfig, make -C xen, LC_ALL=C, \
                      XEN_WHOAMI=pvkexec XEN_DOMAIN=patched";

/// Lines of the build log shown in a failure.
const LOG_TAIL: usize = 40;

/// Builds take minutes: one at a time per process (the cache dir's rename keeps processes
/// apart).
static XEN_BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The Xen release tag the rig builds for `v`: the one Debian's packages of the rig are based
/// on (4.17.7+13, 4.20.4+63).
pub fn release(v: XenVersion) -> &'static str {
    match v {
        XenVersion::V4_17 => "4.17.7",
        XenVersion::V4_20 => "4.20.4",
    }
}

/// `<workspace>/../shared/xen-src`.
pub fn default_source_dir() -> PathBuf {
    let root = crate::workspace_root();
    match root.parent() {
        Some(parent) => parent.join("shared").join("xen-src"),
        None => root.join("..").join("shared").join("xen-src"),
    }
}

/// The variable naming another directory of series (with `4.17/` and `4.20/`), e.g. to try a
/// series before it is committed.
pub const XEN_PATCHES_ENV: &str = "PVKEXEC_XEN_PATCHES";

/// The patch series for `v`: `<4.17|4.20>/` in `$PVKEXEC_XEN_PATCHES` when set, else in
/// `<workspace>/xen-patches/`.
pub fn series_dir(v: XenVersion) -> PathBuf {
    let root = std::env::var_os(XEN_PATCHES_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("xen-patches"));
    root.join(v.name())
}

/// Everything a build depends on.
#[derive(Clone, Debug)]
pub struct XenInputs {
    pub version: XenVersion,
    pub tarball: PathBuf,
    pub config: PathBuf,
    /// In the order they are applied (sorted file names).
    pub patches: Vec<PathBuf>,
}

impl XenInputs {
    /// The inputs for `v` from `$PVKEXEC_XEN_SRC` (or the default source directory) and
    /// [`series_dir`].
    pub fn find(v: XenVersion) -> Result<Self> {
        let env = std::env::var_os(XEN_SRC_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let (tarball, config) = locate_sources(v, env.as_deref(), &default_source_dir())?;
        let patches = patch_series(&series_dir(v))?;
        Ok(XenInputs {
            version: v,
            tarball,
            config,
            patches,
        })
    }
}

/// The tarball and Debian config for `v` in `env` (when set) or else `default`. The error
/// names both places, whichever was looked in.
fn locate_sources(v: XenVersion, env: Option<&Path>, default: &Path) -> Result<(PathBuf, PathBuf)> {
    let tar_name = format!("xen-{}.tar.xz", release(v));
    let dir = env.unwrap_or(default);
    let tarball = dir.join(&tar_name);
    if !tarball.is_file() {
        let why = match env {
            Some(e) => format!(
                "no {tar_name} in ${XEN_SRC_ENV}={} (the default {} is not looked in while \
                 ${XEN_SRC_ENV} is set)",
                e.display(),
                default.display()
            ),
            None => format!(
                "no {tar_name} in the default {} and ${XEN_SRC_ENV} is not set (set it to a \
                 directory holding {tar_name} and Debian's debian-{}+N.config)",
                default.display(),
                release(v)
            ),
        };
        bail!("cannot build a patched Xen {}: {why}", release(v));
    }
    let config = debian_config(v, dir)?;
    Ok((tarball, config))
}

/// The one `debian-<release>+N.config` in `dir` (N is Debian's revision, not fixed here).
fn debian_config(v: XenVersion, dir: &Path) -> Result<PathBuf> {
    let prefix = format!("debian-{}+", release(v));
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".config") && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no Debian hypervisor config {prefix}N.config in {} (Xen {} needs Debian's .config)",
            dir.display(),
            release(v)
        ),
        _ => bail!(
            "several Debian configs for Xen {} in {}: {}; keep one",
            release(v),
            dir.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The `*.patch` files of `dir`, sorted by file name. A missing or empty series is an error:
/// a "patched" Xen without patches is stock Xen.
pub fn patch_series(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!(
            "no Xen patch series: {} does not exist (a patched Xen needs at least one patch)",
            dir.display()
        );
    }
    let mut patches = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "patch") && path.is_file() {
            patches.push(path);
        }
    }
    if patches.is_empty() {
        bail!(
            "no Xen patch series: {} holds no *.patch files (a patched Xen needs at least one \
             patch)",
            dir.display()
        );
    }
    patches.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(patches)
}

/// SHA-256 (hex) over the recipe, the version, the tarball, the config and every patch's name
/// and bytes; each field length-prefixed so no two input sets hash alike by concatenation.
pub fn cache_key(inputs: &XenInputs) -> Result<String> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(RECIPE.as_bytes());
    field(release(inputs.version).as_bytes());
    for path in [&inputs.tarball, &inputs.config] {
        field(&fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    }
    for p in &inputs.patches {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        field(name.as_bytes());
        field(&fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Returns the uncompressed image (Xen's multiboot `xen`, the form [`provision::ensure_xen`]
/// returns for Debian's binary) of Xen `v` with pvkexec's patch series, building it when no
/// build of the same inputs is cached.
pub fn ensure_patched_xen(v: XenVersion) -> Result<PathBuf> {
    let _guard = XEN_BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let inputs = XenInputs::find(v)?;
    let key = cache_key(&inputs)?;
    let cache = crate::cache_dir();
    let name = format!("xen-patched-{}-{}", v.name(), &key[..16]);
    let done = cache.join(&name);
    let image = done.join("xen");
    if image.is_file() {
        return Ok(image);
    }
    ensure_build_tools()?;
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    remove_stale_partials(&cache, &name);
    let partial = cache.join(format!("{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    eprintln!(
        "xen-build: building Xen {} with {} patch(es) from {} into {} (minutes; log {})",
        release(v),
        inputs.patches.len(),
        series_dir(v).display(),
        done.display(),
        partial.join("build.log").display()
    );
    let start = Instant::now();
    if let Err(e) = build(&inputs, &key, &partial) {
        // Keep the failed tree and its log under a stable name for a look; only the latest
        // failure per version (each tree is a few hundred MiB).
        remove_failed(&cache, v);
        let failed = cache.join(format!("{name}.failed"));
        let kept = if fs::rename(&partial, &failed).is_ok() {
            failed
        } else {
            partial
        };
        let log = kept.join("build.log");
        return Err(anyhow!(
            "building patched Xen {} failed: {e:#}\nbuild log: {}\n--- its last {LOG_TAIL} \
             lines ---\n{}",
            release(v),
            log.display(),
            log_tail(&log, LOG_TAIL)
        ));
    }
    if let Err(e) = fs::rename(&partial, &done) {
        // Another process finished the same build first: use its result.
        let _ = fs::remove_dir_all(&partial);
        if !image.is_file() {
            return Err(e)
                .with_context(|| format!("moving {} to {}", partial.display(), done.display()));
        }
    }
    eprintln!(
        "xen-build: patched Xen {} built in {:.0} s: {}",
        release(v),
        start.elapsed().as_secs_f64(),
        image.display()
    );
    Ok(image)
}

/// Installs Debian's build-essential, python3, flex and bison when a tool is missing.
fn ensure_build_tools() -> Result<()> {
    let _guard = provision::PROVISION_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let tools = [
        "gcc", "make", "patch", "tar", "xz", "python3", "flex", "bison",
    ];
    let missing: Vec<_> = tools.iter().filter(|t| !provision::have(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("provision: installing build-essential python3 flex bison with apt-get (missing: {missing:?})");
    provision::apt_install(&["build-essential", "python3", "flex", "bison", "xz-utils"]).context(
        "apt-get install build-essential python3 flex bison xz-utils failed; install them by \
         hand to build Xen",
    )
}

/// Removes `<name>.partial-<pid>` directories whose process is gone (interrupted builds).
fn remove_stale_partials(cache: &Path, name: &str) {
    let prefix = format!("{name}.partial-");
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Removes the kept failed builds (`xen-patched-<ver>-*.failed`) of `v`.
fn remove_failed(cache: &Path, v: XenVersion) {
    let prefix = format!("xen-patched-{}-", v.name());
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".failed") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Unpacks, patches, configures and builds in `dir`; leaves `xen`, `xen-syms` and `inputs.txt`
/// there and removes the source tree.
fn build(inputs: &XenInputs, key: &str, dir: &Path) -> Result<()> {
    let log = dir.join("build.log");
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    logged(
        Command::new("tar")
            .arg("-xJf")
            .arg(&inputs.tarball)
            .arg("-C")
            .arg(&src)
            .arg("--strip-components=1"),
        &log,
    )
    .with_context(|| format!("unpacking {}", inputs.tarball.display()))?;
    for p in &inputs.patches {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        logged(
            Command::new("patch")
                .args(["-p1", "--batch", "--forward", "-i"])
                .arg(p)
                .current_dir(&src),
            &log,
        )
        .with_context(|| {
            format!(
                "patch {name} ({}) does not apply to Xen {}",
                p.display(),
                release(inputs.version)
            )
        })?;
    }
    let xen = src.join("xen");
    fs::copy(&inputs.config, xen.join(".config")).with_context(|| {
        format!(
            "copying {} to {}",
            inputs.config.display(),
            xen.join(".config").display()
        )
    })?;
    logged(make(&src).args(["-C", "xen", "olddefconfig"]), &log)
        .context("make -C xen olddefconfig")?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    logged(make(&src).args(["-C", "xen", &format!("-j{jobs}")]), &log).context("make -C xen")?;

    let image = dir.join("xen");
    if xen.join("xen").is_file() {
        fs::copy(xen.join("xen"), &image)?;
    } else if xen.join("xen.gz").is_file() {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(xen.join("xen.gz"))?)
            .read_to_end(&mut bytes)
            .context("gunzip xen/xen.gz")?;
        fs::write(&image, bytes)?;
    } else {
        bail!("make -C xen left neither xen/xen nor xen/xen.gz");
    }
    // Symbols for reading a crash of the patched hypervisor.
    if xen.join("xen-syms").is_file() {
        fs::copy(xen.join("xen-syms"), dir.join("xen-syms"))?;
    }
    let mut record = format!(
        "key {key}\nrecipe {RECIPE}\ntarball {}\nconfig {}\n",
        inputs.tarball.display(),
        inputs.config.display()
    );
    for p in &inputs.patches {
        record.push_str(&format!("patch {}\n", p.display()));
    }
    fs::write(dir.join("inputs.txt"), record)?;
    // The tree with its objects is a few hundred MiB and no later build can reuse it.
    fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
    Ok(())
}

/// `make` without an outer make's or cargo's jobserver settings.
fn make(src: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.current_dir(src);
    for var in ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CARGO_MAKEFLAGS"] {
        cmd.env_remove(var);
    }
    // Xen's banner then reads "Xen version 4.x.y (pvkexec@patched)": the serial log says which
    // hypervisor ran.
    cmd.env("XEN_WHOAMI", "pvkexec")
        .env("XEN_DOMAIN", "patched");
    cmd
}

/// Runs `cmd` with stdout and stderr appended to `log` (after a `$ command` line).
fn logged(cmd: &mut Command, log: &Path) -> Result<()> {
    cmd.env("LC_ALL", "C");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(file, "$ {cmd:?}")?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", cmd.get_program());
    }
    Ok(())
}

/// The last `n` lines of `path` (or why there are none).
fn log_tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory under the system's temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pvkexec-xen-build-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_source_names_both_locations() {
        let tmp = temp_dir("nosrc");
        // The only test that touches the variable.
        std::env::set_var(XEN_SRC_ENV, &tmp);
        let err = XenInputs::find(XenVersion::V4_17).unwrap_err();
        std::env::remove_var(XEN_SRC_ENV);
        let msg = format!("{err:#}");
        assert!(msg.contains(&tmp.display().to_string()), "{msg}");
        assert!(
            msg.contains(&default_source_dir().display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("xen-4.17.7.tar.xz"), "{msg}");

        // Without the variable: the default and the variable's name.
        let default = tmp.join("nowhere");
        let msg = format!(
            "{:#}",
            locate_sources(XenVersion::V4_20, None, &default).unwrap_err()
        );
        assert!(msg.contains(&default.display().to_string()), "{msg}");
        assert!(msg.contains(XEN_SRC_ENV), "{msg}");
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn config_found_by_revision_glob() {
        let tmp = temp_dir("config");
        fs::write(tmp.join("xen-4.20.4.tar.xz"), b"t").unwrap();
        let msg = format!(
            "{:#}",
            locate_sources(XenVersion::V4_20, Some(&tmp), Path::new("/nonexistent")).unwrap_err()
        );
        assert!(msg.contains("debian-4.20.4+"), "{msg}");
        fs::write(tmp.join("debian-4.20.4+99.config"), b"c").unwrap();
        fs::write(tmp.join("debian-4.17.7+1.config"), b"c").unwrap();
        let (tar, config) =
            locate_sources(XenVersion::V4_20, Some(&tmp), Path::new("/nonexistent")).unwrap();
        assert_eq!(tar, tmp.join("xen-4.20.4.tar.xz"));
        assert_eq!(config, tmp.join("debian-4.20.4+99.config"));
        fs::write(tmp.join("debian-4.20.4+100.config"), b"c").unwrap();
        assert!(locate_sources(XenVersion::V4_20, Some(&tmp), Path::new("/x")).is_err());
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn missing_or_empty_series_names_the_dir() {
        let tmp = temp_dir("series");
        let missing = tmp.join("4.17");
        let msg = format!("{:#}", patch_series(&missing).unwrap_err());
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        fs::create_dir_all(&missing).unwrap();
        fs::write(missing.join("README"), b"not a patch").unwrap();
        let msg = format!("{:#}", patch_series(&missing).unwrap_err());
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        fs::write(missing.join("0002-b.patch"), b"b").unwrap();
        fs::write(missing.join("0001-a.patch"), b"a").unwrap();
        let names: Vec<_> = patch_series(&missing)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["0001-a.patch", "0002-b.patch"]);
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn cache_key_follows_every_input() {
        let tmp = temp_dir("key");
        fs::write(tmp.join("xen.tar.xz"), b"tarball").unwrap();
        fs::write(tmp.join("debian.config"), b"CONFIG_X=y\n").unwrap();
        fs::write(tmp.join("0001-a.patch"), b"--- a\n+++ b\n").unwrap();
        let inputs = XenInputs {
            version: XenVersion::V4_17,
            tarball: tmp.join("xen.tar.xz"),
            config: tmp.join("debian.config"),
            patches: vec![tmp.join("0001-a.patch")],
        };
        let base = cache_key(&inputs).unwrap();
        assert_eq!(base.len(), 64);
        assert_eq!(base, cache_key(&inputs).unwrap());

        // One patch byte.
        fs::write(tmp.join("0001-a.patch"), b"--- a\n+++ c\n").unwrap();
        let patched = cache_key(&inputs).unwrap();
        assert_ne!(base, patched);
        fs::write(tmp.join("0001-a.patch"), b"--- a\n+++ b\n").unwrap();
        assert_eq!(base, cache_key(&inputs).unwrap());

        // The patch's name, the config, the version.
        fs::copy(tmp.join("0001-a.patch"), tmp.join("0001-b.patch")).unwrap();
        let renamed = XenInputs {
            patches: vec![tmp.join("0001-b.patch")],
            ..inputs.clone()
        };
        assert_ne!(base, cache_key(&renamed).unwrap());
        let v420 = XenInputs {
            version: XenVersion::V4_20,
            ..inputs.clone()
        };
        assert_ne!(base, cache_key(&v420).unwrap());
        fs::write(tmp.join("debian.config"), b"CONFIG_X=n\n").unwrap();
        assert_ne!(base, cache_key(&inputs).unwrap());

        // A missing input is an error naming it, not a panic.
        let gone = XenInputs {
            patches: vec![tmp.join("0009-gone.patch")],
            ..inputs
        };
        let msg = format!("{:#}", cache_key(&gone).unwrap_err());
        assert!(msg.contains("0009-gone.patch"), "{msg}");
        let _ = fs::remove_dir_all(&tmp);
    }
}
