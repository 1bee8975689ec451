//! The Debian package, as an operator meets it: `cargo xtask deb` builds it and lintian finds no
//! error; on this machine it installs, systemd accepts the installed unit, `man` renders its
//! pages, the shells find their completions, the packaged (stripped) binary protects an
//! interface, and removal leaves nothing of it behind.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use nix::sys::signal::Signal;
use synguard_lab::{Lab, Synguard, run_bounded, synguard_bin};
use synguard_tests::succeeded;

const CONFIG: &str = "/etc/synguard/synguard.toml";

/// The xtask binary: `$SYNGUARD_XTASK` (set by `cargo xtask test`), else the one `cargo xtask`
/// builds.
fn xtask() -> PathBuf {
    let path = std::env::var_os("SYNGUARD_XTASK").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/xtask"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} missing: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    run_bounded(&mut cmd, Duration::from_secs(120)).unwrap()
}

/// Purges the package however the test ends, and puts back a config file that was there
/// before (`cargo xtask install` leaves one).
struct Installed {
    saved_config: Option<Vec<u8>>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "synguard"]);
        if let Some(text) = &self.saved_config {
            let _ = std::fs::create_dir_all("/etc/synguard");
            let _ = std::fs::write(CONFIG, text);
        }
    }
}

fn installed_status() -> Option<String> {
    let out = run("dpkg-query", &["-W", "-f=${db:Status-Status}", "synguard"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        .filter(|s| s != "not-installed" && !s.is_empty())
}

#[test]
fn the_package_installs_verifies_and_removes_cleanly() {
    assert_eq!(
        installed_status(),
        None,
        "synguard is installed as a Debian package here; this test installs and purges it"
    );
    let out = std::env::temp_dir().join(format!("synguard-deb-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let bin = synguard_bin().unwrap();
    let built = run(
        xtask().to_str().unwrap(),
        &[
            "deb",
            "--binary",
            bin.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let stdout = succeeded(&built);
    let deb = PathBuf::from(stdout.lines().last().unwrap().trim());
    assert!(deb.ends_with(format!("synguard_{}_amd64.deb", env!("CARGO_PKG_VERSION"))));
    let contents = succeeded(&run("dpkg-deb", &["-c", deb.to_str().unwrap()]));
    let files: Vec<String> = contents
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|f| f.trim_start_matches('.').to_string())
        .collect();
    for wanted in [
        "/usr/sbin/synguard",
        "/lib/systemd/system/synguard.service",
        CONFIG,
        "/usr/share/man/man8/synguard.8.gz",
        "/usr/share/man/man8/synguard-run.8.gz",
        "/usr/share/bash-completion/completions/synguard",
        "/usr/share/zsh/vendor-completions/_synguard",
        "/usr/share/fish/vendor_completions.d/synguard.fish",
        "/usr/share/doc/synguard/copyright",
    ] {
        assert!(
            files.iter().any(|f| f == wanted),
            "{wanted} not in {files:?}"
        );
    }
    let control = succeeded(&run("dpkg-deb", &["-f", deb.to_str().unwrap()]));
    assert!(control.contains("Depends: libc6"), "{control}");

    // Install.
    let _installed = Installed {
        saved_config: std::fs::read(CONFIG).ok(),
    };
    succeeded(&run(
        "dpkg",
        &["--force-confold", "-i", deb.to_str().unwrap()],
    ));
    assert_eq!(installed_status().as_deref(), Some("installed"));
    let listed = succeeded(&run("dpkg-query", &["-W", "-f=${Conffiles}", "synguard"]));
    assert!(
        listed.contains(CONFIG),
        "the config is a conffile: {listed}"
    );
    let version = succeeded(&run("/usr/sbin/synguard", &["--version"]));
    assert_eq!(
        version.trim(),
        format!("synguard {}", env!("CARGO_PKG_VERSION"))
    );

    // systemd accepts the installed unit as it is (its ExecStart, its man pages).
    let verify = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/synguard.service"],
    );
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );

    // The manual, through man-db.
    for (page, wanted) in [
        ("synguard", "synguard-run(8)"),
        ("synguard-run", "--syn-rate-per-source"),
    ] {
        let mut man = Command::new("man");
        man.arg(page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .env_remove("MAN_KEEP_FORMATTING");
        let text = succeeded(&run_bounded(&mut man, Duration::from_secs(30)).unwrap());
        assert!(
            text.contains("SYNOPSIS") && text.contains(wanted),
            "man {page}: {text}"
        );
    }
    // bash finds the completion and offers the verbs.
    let bash = run(
        "bash",
        &[
            "-c",
            ". /usr/share/bash-completion/completions/synguard && \
             COMP_WORDS=(synguard st); COMP_CWORD=1; _synguard synguard st synguard; \
             echo \"${COMPREPLY[*]}\"",
        ],
    );
    assert!(succeeded(&bash).contains("status"), "{bash:?}");

    // The packaged binary, stripped, loads its program and protects an interface.
    protects_an_interface(Path::new("/usr/sbin/synguard"));

    // Removal stops nothing here (no systemd), and purge leaves none of the package's files.
    succeeded(&run("dpkg", &["--purge", "synguard"]));
    assert_eq!(installed_status(), None);
    for file in &files {
        assert!(!Path::new(file).exists(), "{file} left behind");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Runs `bin` in the lab through a shell that puts it in place of the binary under test.
fn protects_an_interface(bin: &Path) {
    let lab = Lab::new().unwrap();
    let exec = format!("shift; exec {} \"$@\"", bin.display());
    let sg = Synguard::start_with(
        &lab.server,
        &["sh", "-c", &exec, "sh"],
        &["--mode", "cookie"],
    )
    .unwrap();
    assert!(lab.server.xdp_attached().unwrap());
    let m = sg.metrics().unwrap();
    assert_eq!(
        m.sum("synguard_mode", &[("mode", "cookie")]),
        1.0,
        "{}",
        sg.log()
    );
    let out = sg.stop(Signal::SIGTERM).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!lab.server.xdp_attached().unwrap());
}
