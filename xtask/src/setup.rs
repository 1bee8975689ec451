//! `cargo xtask setup`: everything a fresh Debian machine of this kind lacks, installed
//! idempotently, then checked. The recipe, and why it is not the usual one, is in docs/design.md.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{StatusOk, step};

/// Debian packages, each with the reason the project needs it.
const PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "the rustc that builds the XDP program (ships LLVM 22)",
    ),
    ("cargo-web", "its cargo"),
    (
        "rust-web-clippy",
        "clippy for that rustc: `cargo xtask lint` on the XDP program",
    ),
    (
        "libstd-rust-web-dev-bpf",
        "prebuilt core for bpfel-unknown-none",
    ),
    (
        "llvm-22-dev",
        "bpf-linker links against the same LLVM as rustc-web",
    ),
    (
        "libpolly-22-dev",
        "needed to link bpf-linker against LLVM 22",
    ),
    ("libzstd-dev", "needed to link bpf-linker against LLVM 22"),
    ("zlib1g-dev", "needed to link bpf-linker against LLVM 22"),
    ("iproute2", "the lab: network namespaces, veth, routes"),
    ("procps", "the lab: sysctl"),
    ("hping3", "traffic for the tests and the demo"),
    (
        "tcpdump",
        "reads `synguard dump`'s captures in the tests, as operators do",
    ),
    (
        "tshark",
        "reads the verdicts and comments of `synguard dump`'s captures in the tests",
    ),
    (
        "prometheus",
        "promtool, and a real Prometheus that scrapes synguard in the tests",
    ),
    (
        "systemd",
        "systemd-analyze, to verify deploy/synguard.service",
    ),
    ("nftables", "nft, for SYNPROXY in `cargo xtask bench flood`"),
    (
        "librsvg2-bin",
        "rsvg-convert, for the benchmark's PNG chart",
    ),
    (
        "dpkg-dev",
        "dpkg-shlibdeps, for the package's dependencies in `cargo xtask deb`",
    ),
    ("lintian", "checks the package `cargo xtask deb` builds"),
    ("man-db", "`man`, to check the package's manual pages"),
    (
        "util-linux",
        "setpriv, to run synguard with reduced capabilities in the tests",
    ),
];

const EBPF_RUSTC: &str = "/usr/bin/rustc";
const BPF_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs setup only if a check fails; silent when everything is in place.
pub fn ensure() -> Result<()> {
    if problems()?.is_empty() {
        return Ok(());
    }
    run()
}

/// Installs whatever is missing, then checks everything.
pub fn run() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !package_installed(name))
        .collect();
    if missing.is_empty() {
        step("Debian packages: all present");
    } else {
        require_root_for_install()?;
        for (name, why) in PACKAGES.iter().filter(|(n, _)| missing.contains(n)) {
            eprintln!("    {name}: {why}");
        }
        step(&format!("apt-get install {}", missing.join(" ")));
        apt().arg("update").status_ok()?;
        apt().args(["install", "-y"]).args(&missing).status_ok()?;
    }

    match bpf_linker_problem()? {
        None => step(&format!(
            "bpf-linker {BPF_LINKER_VERSION}: present, linked to LLVM {}",
            llvm_major()?
        )),
        Some(why) => {
            step(&format!(
                "building bpf-linker {BPF_LINKER_VERSION} ({why}); this takes a few minutes"
            ));
            install_bpf_linker()?;
        }
    }

    let problems = problems()?;
    if !problems.is_empty() {
        bail!("setup is incomplete:\n  {}", problems.join("\n  "));
    }
    step("setup complete");
    Ok(())
}

/// Everything that is not as it should be, in words; empty when the machine is ready.
fn problems() -> Result<Vec<String>> {
    let mut problems: Vec<String> = PACKAGES
        .iter()
        .filter(|(name, _)| !package_installed(name))
        .map(|(name, why)| format!("Debian package {name} is not installed ({why})"))
        .collect();
    if problems.is_empty() {
        if !has_bpf_core() {
            problems.push(format!("no prebuilt core in {BPF_CORE_DIR}"));
        }
        if let Some(why) = bpf_linker_problem()? {
            problems.push(format!("bpf-linker: {why}"));
        }
        for tool in [
            "ip",
            "sysctl",
            "tc",
            "hping3",
            "tcpdump",
            "tshark",
            "lintian",
            "promtool",
            "prometheus",
            "setpriv",
            "systemd-analyze",
        ] {
            if which(tool).is_none() {
                problems.push(format!("{tool} not found on PATH"));
            }
        }
    }
    Ok(problems)
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", name])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"installed")
}

fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "-o", "Dpkg::Use-Pty=0"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn require_root_for_install() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "installing Debian packages needs root: run `sudo cargo xtask setup` once"
    );
    Ok(())
}

fn has_bpf_core() -> bool {
    std::fs::read_dir(BPF_CORE_DIR).is_ok_and(|dir| {
        dir.filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}

/// The LLVM major version of Debian's rustc, which bpf-linker must match.
fn llvm_major() -> Result<u32> {
    let out = Command::new(EBPF_RUSTC)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {EBPF_RUSTC} -vV"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .with_context(|| format!("no LLVM version in `{EBPF_RUSTC} -vV`"))?;
    version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .with_context(|| format!("cannot read the LLVM version {version:?}"))
}

fn bpf_linker_path() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let path = cargo_home.join("bin/bpf-linker");
    path.exists()
        .then_some(path)
        .or_else(|| which("bpf-linker"))
}

/// Why the installed bpf-linker will not do, or `None` if it will.
fn bpf_linker_problem() -> Result<Option<String>> {
    if !Path::new(EBPF_RUSTC).exists() {
        return Ok(Some(format!("{EBPF_RUSTC} is missing")));
    }
    let Some(path) = bpf_linker_path() else {
        return Ok(Some("not installed".to_string()));
    };
    let version = Command::new(&path).arg("--version").output()?;
    if !String::from_utf8_lossy(&version.stdout).contains(BPF_LINKER_VERSION) {
        return Ok(Some(format!(
            "{} is not version {BPF_LINKER_VERSION}",
            path.display()
        )));
    }
    // It loads libLLVM dynamically: the library must exist and be the rustc's major.
    let ldd = Command::new("ldd").arg(&path).output()?;
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let want = format!("libLLVM.so.{}", llvm_major()?);
    match ldd.lines().find(|line| line.contains("libLLVM")) {
        Some(line) if line.contains(&want) && !line.contains("not found") => Ok(None),
        Some(line) => Ok(Some(format!("linked against {}, need {want}", line.trim()))),
        None => Ok(Some("not linked against libLLVM".to_string())),
    }
}

fn install_bpf_linker() -> Result<()> {
    let major = llvm_major()?;
    let prefix = format!("/usr/lib/llvm-{major}");
    ensure!(
        Path::new(&prefix).exists(),
        "{prefix} is missing: install llvm-{major}-dev"
    );
    // Without LLVM_PREFIX, bpf-linker's build script looks in /usr and fails with "unable to
    // find library -lLLVM"; llvm-sys reads LLVM_SYS_<major>1_PREFIX.
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env(format!("LLVM_SYS_{major}1_PREFIX"), &prefix)
        .status_ok()
}

/// Looks `tool` up on the PATH the tests and the demo will get.
fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&crate::path_with_sbin())
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}
