//! `cargo xtask man --out DIR`: pvkexec's man pages and shell completions, generated from the
//! CLI's clap definition (`loader::cli::command()`), so they never disagree with `--help`.
//! Writes `pvkexec.8`, one page per subcommand (`pvkexec-load.8`, ...; hidden ones left out,
//! as clap_mangen does), and `pvkexec.bash`, `_pvkexec` (zsh) and `pvkexec.fish`.

use anyhow::{Context, Result};
use clap_complete::aot::{generate_to, Shell};
use clap_mangen::Man;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Section 8: pvkexec is a system administration command.
const SECTION: &str = "8";

/// Writes every page and completion file into `out` (created if missing); the files written.
pub fn run(out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    let mut cmd = loader::cli::command().disable_help_subcommand(true);
    cmd.build();
    written.push(main_page(&cmd, out)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = Man::new(sub.clone()).section(SECTION);
        let path = page
            .generate_to(out)
            .with_context(|| format!("writing {}", out.join(page.get_filename()).display()))?;
        written.push(path);
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = generate_to(shell, &mut cmd, "pvkexec", out)
            .with_context(|| format!("writing the {shell} completions into {}", out.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// `pvkexec.8`: clap_mangen's sections, then EXIT STATUS, the kexec-tools spelling, FILES,
/// ENVIRONMENT and SEE ALSO as a man page has them (instead of `--help`'s closing text, which
/// says the same).
fn main_page(cmd: &clap::Command, out: &Path) -> Result<PathBuf> {
    let page = Man::new(cmd.clone().after_long_help(None::<&str>)).section(SECTION);
    let path = out.join(page.get_filename());
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    roff.extend_from_slice(extra_sections().as_bytes());
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&roff))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Text for a roff line: backslashes and hyphens escaped, a leading `.` or `'` made literal.
fn roff_text(s: &str) -> String {
    let escaped = s.replace('\\', "\\e").replace('-', "\\-");
    match escaped.starts_with(['.', '\'']) {
        true => format!("\\&{escaped}"),
        false => escaped,
    }
}

fn tagged(title: &str, items: &[(&str, &str)]) -> String {
    let mut s = format!(".SH \"{title}\"\n");
    for (tag, text) in items {
        s += &format!(".TP\n\\fB{}\\fR\n{}\n", roff_text(tag), roff_text(text));
    }
    s
}

fn extra_sections() -> String {
    use loader::cli::{ENVIRONMENT, EXIT_STATUS, FILES, KEXEC_SPELLING};
    let mut s = tagged("EXIT STATUS", &EXIT_STATUS);
    s += &format!(
        ".SH \"KEXEC\\-TOOLS SPELLING\"\n{}\n.PP\n.nf\n{}\n.fi\n",
        roff_text(KEXEC_SPELLING),
        loader::cli_kexec_tools::KEXEC_USAGE
            .lines()
            .map(roff_text)
            .collect::<Vec<_>>()
            .join("\n")
    );
    s += &tagged("FILES", &FILES);
    s += &tagged("ENVIRONMENT", &ENVIRONMENT);
    s += ".SH \"SEE ALSO\"\n\\fBkexec\\fR(8), \\fBkdump\\-config\\fR(8), \\fBmakedumpfile\\fR(8), \
          \\fBcrash\\fR(8), \\fBsystemd\\-shutdown\\fR(8)\n";
    s
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
        assert!(!names.iter().any(|n| n.contains("test-fault")), "{names:?}");
        let main = std::fs::read_to_string(out.join("pvkexec.8")).unwrap();
        for want in [
            ".TH pvkexec 8",
            ".SH \"EXIT STATUS\"",
            "\\fB4\\fR",
            ".SH \"FILES\"",
        ] {
            assert!(main.contains(want), "no {want:?} in pvkexec.8");
        }
        let load = std::fs::read_to_string(out.join("pvkexec-load.8")).unwrap();
        assert!(load.contains("reuse\\-cmdline"), "{load}");
        let bash = std::fs::read_to_string(out.join("pvkexec.bash")).unwrap();
        assert!(bash.contains("--reuse-cmdline"), "{bash}");
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn roff_lines_are_escaped() {
        assert_eq!(roff_text("-p"), "\\-p");
        assert_eq!(roff_text(".hidden"), "\\&.hidden");
        assert_eq!(roff_text("a\\b"), "a\\eb");
    }
}
