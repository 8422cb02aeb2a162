//! `sealfs man` and `sealfs completions`: the manual pages and shell
//! completions, generated from the command-line definition itself (clap's
//! own generators), so they never drift from what the command accepts.

use anyhow::Context;
use clap::CommandFactory;
use std::path::Path;

/// The manual page of `cmd` (roff), titled `name` (`sealfs-cache-status`),
/// its synopsis the command as typed (`sealfs cache status`).
fn page(cmd: clap::Command, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let typed = name.replace('-', " ");
    clap_mangen::Man::new(cmd.display_name(name.to_string()).bin_name(typed))
        .section("1")
        .manual("sealfs")
        .render(&mut out)?;
    Ok(out)
}

/// Every page: `sealfs.1`, then `sealfs-SUBCOMMAND.1` for each visible
/// subcommand (and theirs, `sealfs-cache-status.1`).
pub fn pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let root = super::Cli::command();
    let mut out = vec![("sealfs.1".to_string(), page(root.clone(), "sealfs")?)];
    let mut todo: Vec<(String, clap::Command)> = root
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| (format!("sealfs-{}", c.get_name()), c.clone()))
        .collect();
    while let Some((name, cmd)) = todo.pop() {
        todo.extend(
            cmd.get_subcommands()
                .filter(|c| !c.is_hide_set() && c.get_name() != "help")
                .map(|c| (format!("{name}-{}", c.get_name()), c.clone())),
        );
        out.push((format!("{name}.1"), page(cmd, &name)?));
    }
    out.sort();
    Ok(out)
}

/// `sealfs man`: the main page on stdout, or every page into `dir`.
pub fn run(dir: Option<&Path>) -> anyhow::Result<()> {
    let all = pages()?;
    match dir {
        None => {
            let main = all.iter().find(|(n, _)| n == "sealfs.1");
            write_stdout(&main.context("no sealfs.1")?.1)?
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, body) in &all {
                let path = dir.join(name);
                std::fs::write(&path, body)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            eprintln!("{} manual pages written to {}", all.len(), dir.display());
        }
    }
    Ok(())
}

/// `sealfs completions SHELL`: the completion script on stdout (a reader
/// that stops early, `| head`, is no error).
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut super::Cli::command(), "sealfs", &mut out);
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_has_a_page() {
        let all = pages().unwrap();
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        for n in [
            "sealfs.1",
            "sealfs-mount.1",
            "sealfs-share.1",
            "sealfs-audit.1",
            "sealfs-cache-status.1",
        ] {
            assert!(names.contains(&n), "{n} not in {names:?}");
        }
        let main = String::from_utf8(all.iter().find(|(n, _)| n == "sealfs.1").unwrap().1.clone())
            .unwrap();
        assert!(
            main.contains("sealfs\\-audit(1)"),
            "the main page lists the commands: {main}"
        );
        // Hidden commands (the benchmark's raw backend) get none.
        assert!(!names.iter().any(|n| n.contains("raw")), "{names:?}");
        let mount = String::from_utf8(
            all.iter()
                .find(|(n, _)| n == "sealfs-mount.1")
                .unwrap()
                .1
                .clone(),
        )
        .unwrap();
        assert!(mount.starts_with(".ie") || mount.contains(".TH"), "{mount}");
        assert!(mount.contains("write\\-back"), "the flags are listed");
        assert!(
            mount.contains("sealfs mount"),
            "the synopsis is the command as typed"
        );
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut super::super::Cli::command(),
            "sealfs",
            &mut out,
        );
        let bash = String::from_utf8(out).unwrap();
        for sub in ["mount", "audit", "shares", "grantee"] {
            assert!(bash.contains(sub), "{sub}");
        }
    }
}
