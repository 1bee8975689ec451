//! The manual pages and shell completions, generated from the command line's own definition,
//! so that they can never disagree with `--help`.

use std::{io::Write, path::Path};

use clap::CommandFactory;

use crate::{Error, cli::Cli};

/// The section of the manual for system administration commands.
const SECTION: &str = "8";

/// Prints `shell`'s completion script for synguard on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Error> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "synguard", &mut out);
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| Error::Other(format!("writing the completions failed: {e}")))
}

/// Writes synguard.8 and one page per verb (synguard-run.8, ...) into `dir`, dated `date`.
pub fn manpages(dir: &Path, date: &str) -> Result<(), Error> {
    // Built, so that clap's own `help` verb (which the main page lists) is there too, and the
    // verbs carry the global flags.
    let mut command = Cli::command();
    command.build();
    let mut pages = vec![("synguard".to_string(), command.clone())];
    for verb in command.get_subcommands().filter(|v| !v.is_hide_set()) {
        let name = format!("synguard-{}", verb.get_name());
        // The verb's page is titled with its full name, as `man synguard-run` finds it.
        let verb = verb
            .clone()
            .name(name.clone())
            .bin_name(format!("synguard {}", verb.get_name()));
        pages.push((name, verb));
    }
    for (name, command) in pages {
        let path = dir.join(format!("{name}.{SECTION}"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .section(SECTION)
            .date(date)
            .manual("System Administration")
            .source(concat!("synguard ", env!("CARGO_PKG_VERSION")))
            .render(&mut page)
            .and_then(|()| std::fs::write(&path, page))
            .map_err(|e| Error::Other(format!("writing {} failed: {e}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_verb_has_a_page_that_names_its_flags() {
        let dir = std::env::temp_dir().join(format!("synguard-man-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        manpages(&dir, "2026-12-02").unwrap();
        let run = std::fs::read_to_string(dir.join("synguard-run.8")).unwrap();
        assert!(
            run.contains(".TH synguard-run 8 2026-12-02 \"synguard "),
            "{}",
            &run[..200]
        );
        assert!(
            run.contains("synguard run"),
            "the synopsis is the command typed"
        );
        assert!(run.contains("syn\\-rate\\-per\\-source"));
        let main = std::fs::read_to_string(dir.join("synguard.8")).unwrap();
        assert!(
            main.contains("synguard\\-check\\-config(8)"),
            "the verbs are listed"
        );
        assert!(
            !dir.join("synguard-manpages.8").exists(),
            "hidden verbs have no page"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
