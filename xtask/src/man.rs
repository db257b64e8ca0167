//! `cargo xtask man --out DIR`: pvkexec's man pages and shell completions, generated from the
//! CLI's clap definition (`loader::cli::command()`), so they never disagree with `--help`:
//! `pvkexec.8` (ending with EXIT STATUS, the kexec-tools spelling, FILES, ENVIRONMENT), one page
//! per subcommand (`pvkexec-load.8`, ...; hidden ones left out, as clap_mangen does), and
//! `pvkexec.bash`, `_pvkexec` (zsh) and `pvkexec.fish`. The same files go into the Debian
//! package (`packaging::generate_docs`, `cargo xtask deb`).

use anyhow::Result;
use std::path::{Path, PathBuf};

/// Writes every page and completion file into `out` (created if missing); the files written.
pub fn run(out: &Path) -> Result<Vec<PathBuf>> {
    packaging::generate_docs(loader::cli::command(), &loader::cli::man_extra_roff(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_are_written() {
        let out = std::env::temp_dir().join(format!("pvkexec-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let files = run(&out).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "pvkexec.8",
            "pvkexec-load.8",
            "pvkexec-exec.8",
            "pvkexec-status.8",
            "pvkexec-vmcore.8",
            "pvkexec.bash",
            "_pvkexec",
            "pvkexec.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("test-fault") || n.contains("help")),
            "{names:?}"
        );
        let main = std::fs::read_to_string(out.join("pvkexec.8")).unwrap();
        for want in [
            ".TH pvkexec 8",
            ".SH \"EXIT STATUS\"",
            "\\fB4\\fR",
            ".SH \"FILES\"",
        ] {
            assert!(main.contains(want), "no {want:?} in pvkexec.8");
        }
        // The after-help is the roff sections, not clap_mangen's EXTRA.
        assert!(!main.contains(".SH EXTRA"), "{main}");
        let load = std::fs::read_to_string(out.join("pvkexec-load.8")).unwrap();
        assert!(load.contains("reuse\\-cmdline"), "{load}");
        let bash = std::fs::read_to_string(out.join("pvkexec.bash")).unwrap();
        assert!(bash.contains("--reuse-cmdline"), "{bash}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
