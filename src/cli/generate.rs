//! `lqagent generate DIR` (hidden): the man pages and shell completions, generated from the clap
//! definition so they can never disagree with the binary. The Debian package build runs it
//! (tests/netns/deb_package.rs, docs/install.md) and ships what it writes.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

/// Write into `dir`: `lqagent.8` and `lqagent-SUB.8` for each subcommand, and completions
/// `lqagent.bash`, `_lqagent` (zsh), `lqagent.fish`.
pub(crate) fn run<C: CommandFactory>(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let cmd = C::command();
    write_man(dir, "lqagent", cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("lqagent-{}", sub.get_name());
        write_man(
            dir,
            &name,
            sub.clone()
                .display_name(name.clone())
                .bin_name(format!("lqagent {}", sub.get_name())),
        )?;
    }
    for (shell, file) in [
        (Shell::Bash, "lqagent.bash"),
        (Shell::Zsh, "_lqagent"),
        (Shell::Fish, "lqagent.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut C::command(), "lqagent", &mut out);
        let path = dir.join(file);
        std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn write_man(dir: &Path, name: &str, cmd: clap::Command) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(name.to_uppercase())
        .section("8")
        .render(&mut out)?;
    let path = dir.join(format!("{name}.8"));
    std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))
}
