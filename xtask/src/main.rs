//! synguard's automation: `cargo xtask <command>`.
//!
//! This crate uses only the standard library, clap and anyhow, so it builds on a fresh machine
//! before `setup` has installed the eBPF toolchain that the rest of the workspace needs.

mod deb;
mod setup;

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Set-up, build, demo and tests for synguard."
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks (Debian packages, bpf-linker), then check the result.
    /// Idempotent: with everything in place it only checks.
    Setup,
    /// Build the release `synguard` binary, with the XDP program embedded.
    Build,
    /// Run synguard in a self-made lab: an HTTP server, a bounded SYN flood, legit requests.
    Demo,
    /// Run every test: host unit tests, BPF_PROG_TEST_RUN, and end to end in the lab. Needs root.
    Test {
        /// Extra arguments for `cargo test` after `--`, e.g. a test name filter.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// The project's own checks: rustfmt and clippy with warnings as errors.
    Lint,
    /// Draw docs/attack.svg: the Grafana dashboard's panels over a lab run with a SYN flood,
    /// from a real Prometheus's data. Needs root.
    Picture,
    /// Install synguard on this machine: the binary in /usr/local/sbin, the systemd unit, and
    /// a default /etc/synguard/synguard.toml (an existing one is kept). Needs root.
    Install {
        /// Install under this directory instead of / (for packaging).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Build the Debian package, target/deb/synguard_VERSION_amd64.deb (binary, systemd unit,
    /// default config as a conffile, man pages, shell completions), and check it with lintian.
    Deb {
        /// Package this synguard binary instead of building one.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Where the package goes.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The differential run at length: generated frames through the XDP program in the kernel
    /// (BPF_PROG_TEST_RUN) and through the reference model, in every mode; prints frames per
    /// mode and per second, and exits non-zero on any mismatch (shown shrunk, with its seed).
    /// Needs root.
    Fuzz {
        /// Frames in all, split evenly over the modes.
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// The generator's seed (default: a new one, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The soak: floods alternating with calm, legit requests throughout, and every 10 to 30 s
    /// a run-time change (mode, threshold, lists, SIGHUP, handover and takeover, kill -9,
    /// detach). Fails on a failed request, growing memory or descriptors, or anything left
    /// behind. Needs root.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Benchmarks. `prog`: ns per packet for each path through the XDP program, in the
    /// kernel (BPF_PROG_TEST_RUN), against a floor program, in one run. `limiter`: the
    /// per-source limiter's cost with one source against many, and against a bucket per
    /// source. `flood`: the same SYN flood against kernel cookies, SYNPROXY, synguard and
    /// XDP floors, side by side; writes docs/bench-flood.md and .png. `dump`: a flood's cost
    /// per SYN with a `synguard dump` running against without, alternated. Needs root.
    Bench {
        #[arg(value_parser = ["prog", "limiter", "flood", "dump"])]
        which: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::ensure()?;
            build_synguard().map(|_| ())
        }
        Task::Demo => run_lab_binary("the demo", "synguard-demo", &[]),
        Task::Soak { minutes } => run_lab_binary(
            "the soak (network namespaces)",
            "synguard-soak",
            &["--minutes", &minutes.to_string()],
        ),
        Task::Fuzz { frames, seed } => {
            let mut args = vec!["--frames".to_string(), frames.to_string()];
            if let Some(seed) = seed {
                args.extend(["--seed".to_string(), seed.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_binary(
                "the differential run (XDP in the kernel, network namespaces)",
                "synguard-tests",
                "synguard-fuzz",
                &args,
            )
        }
        Task::Test { cargo_test_args } => {
            setup::ensure()?;
            // The privileged tests fail rather than skip; say why once, up front.
            require_root("the tests (XDP in the kernel, network namespaces)")?;
            let synguard = build_synguard()?;
            step("running the tests");
            cargo()
                .args(["test", "--release", "--workspace", "--"])
                .args(cargo_test_args)
                .env("SYNGUARD_BIN", &synguard)
                // tests/tests/deb.rs builds the package with this very xtask.
                .env("SYNGUARD_XTASK", env::current_exe()?)
                .status_ok()
        }
        Task::Bench { which } => {
            // `flood` writes its table and chart into docs/.
            let docs = workspace_root().join("docs");
            let docs = docs.to_str().context("non-UTF-8 path")?;
            let args: Vec<&str> = match which.as_str() {
                "flood" => vec!["flood", docs],
                other => vec![other],
            };
            run_lab_binary(
                "benchmarks (XDP in the kernel, network namespaces)",
                "synguard-bench",
                &args,
            )
        }
        Task::Install { root } => install(&root),
        Task::Deb { binary, out } => {
            setup::ensure()?;
            let bin = match binary {
                Some(bin) => bin,
                None => build_synguard()?,
            };
            let out = out.unwrap_or_else(|| target_dir().join("deb"));
            std::fs::create_dir_all(&out)?;
            let deb = deb::build(&bin, &out)?;
            println!("{}", deb.display());
            Ok(())
        }
        Task::Picture => {
            let out = workspace_root().join("docs/attack.svg");
            run_lab_binary(
                "the dashboard picture (a lab run)",
                "synguard-picture",
                &[out.to_str().context("non-UTF-8 path")?],
            )
        }
        Task::Lint => {
            setup::ensure()?;
            step("cargo fmt --check");
            cargo()
                .args(["fmt", "--all", "--", "--check"])
                .status_ok()?;
            // The eBPF crate is its own workspace, outside `--all`.
            cargo()
                .args([
                    "fmt",
                    "--manifest-path",
                    "xdp-ebpf/Cargo.toml",
                    "--",
                    "--check",
                ])
                .status_ok()?;
            step("cargo clippy -D warnings");
            cargo()
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])
                .status_ok()?;
            // The XDP program, with Debian's toolchain for the BPF target (as xdp-user/build.rs
            // builds it) and the clippy that matches that rustc.
            step("cargo clippy -D warnings (xdp-ebpf, bpfel-unknown-none)");
            let mut clippy = Command::new("/usr/bin/cargo");
            for (key, _) in env::vars_os() {
                let key = key.to_string_lossy();
                if (key.starts_with("CARGO_") && key != "CARGO_HOME")
                    || key.starts_with("RUSTC")
                    || key.starts_with("RUSTUP")
                {
                    clippy.env_remove(key.as_ref());
                }
            }
            // /usr/bin first: cargo runs the `cargo-clippy` it finds on PATH, and rustup's (in
            // ~/.cargo/bin) belongs to a rustc without a BPF `core`.
            let path = env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![PathBuf::from("/usr/bin")];
            dirs.extend(env::split_paths(&path));
            clippy
                .current_dir(workspace_root().join("xdp-ebpf"))
                .env("PATH", env::join_paths(dirs)?)
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_DIR", target_dir().join("ebpf-clippy"))
                .args([
                    "clippy",
                    "--release",
                    "--locked",
                    "--target",
                    "bpfel-unknown-none",
                    "--",
                    "-D",
                    "warnings",
                ])
                .status_ok()
        }
    }
}

/// Runs one of the lab crate's binaries (the demo, the benchmarks) as root, after setup and
/// with the release `synguard` built.
fn run_lab_binary(what: &str, bin: &str, args: &[&str]) -> Result<()> {
    run_binary(what, "synguard-lab", bin, args)
}

/// Builds synguard, then runs `bin` of `package` as root with it.
fn run_binary(what: &str, package: &str, bin: &str, args: &[&str]) -> Result<()> {
    setup::ensure()?;
    require_root(what)?;
    let synguard = build_synguard()?;
    step(&format!("running {bin} {}", args.join(" ")));
    cargo()
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--",
        ])
        .args(args)
        .env("SYNGUARD_BIN", &synguard)
        .status_ok()
}

/// `cargo xtask install`: the binary, the unit and a default config, then systemd told.
fn install(root: &Path) -> Result<()> {
    setup::ensure()?;
    let bin = build_synguard()?;
    let deploy = workspace_root().join("deploy");
    let under = |path: &str| root.join(path.trim_start_matches('/'));
    let copy = |from: &Path, to: &Path, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(to.parent().expect("a file path"))?;
        // Through a temporary file and a rename: a running binary is replaced, not rewritten.
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).with_context(|| format!("copying to {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, to)?;
        println!("    {}", to.display());
        Ok(())
    };
    step(&format!("installing under {}", root.display()));
    copy(&bin, &under("/usr/local/sbin/synguard"), 0o755)?;
    copy(
        &deploy.join("synguard.service"),
        &under("/etc/systemd/system/synguard.service"),
        0o644,
    )?;
    let config = under("/etc/synguard/synguard.toml");
    if config.exists() {
        println!("    {} kept (it exists)", config.display());
    } else {
        copy(&deploy.join("synguard.toml"), &config, 0o644)?;
    }
    if root == Path::new("/") && Path::new("/run/systemd/system").exists() {
        Command::new("systemctl").arg("daemon-reload").status_ok()?;
    }
    println!(
        "\nNext: set `iface` in {}, then `systemctl enable --now synguard`.",
        config.display()
    );
    Ok(())
}

/// Builds `synguard` in release mode and returns the binary's path.
fn build_synguard() -> Result<PathBuf> {
    step("building synguard (release)");
    cargo()
        .args(["build", "--release", "-p", "synguard"])
        .status_ok()?;
    let bin = target_dir().join("release/synguard");
    ensure!(bin.exists(), "{} missing after the build", bin.display());
    Ok(bin)
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("running {what} needs root: run `sudo cargo xtask ...` (or as root in CI)");
    }
    Ok(())
}

pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The cargo that runs xtask (rustup's), in the workspace root, with the sbin directories on
/// PATH for the lab's tools (ip, sysctl, hping3 live there).
fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root())
        .env("PATH", path_with_sbin());
    cmd
}

/// PATH, with /usr/sbin and /sbin appended when missing.
pub(crate) fn path_with_sbin() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> =
        env::split_paths(&env::var_os("PATH").unwrap_or_default()).collect();
    for sbin in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|d| d == Path::new(sbin)) {
            dirs.push(PathBuf::from(sbin));
        }
    }
    env::join_paths(dirs).expect("PATH entries contain no separator")
}

pub(crate) fn step(what: &str) {
    eprintln!("==> {what}");
}

pub(crate) trait StatusOk {
    fn status_ok(&mut self) -> Result<()>;
}

impl StatusOk for Command {
    fn status_ok(&mut self) -> Result<()> {
        let shown = std::iter::once(self.get_program())
            .chain(self.get_args())
            .map(|part| part.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let status = self
            .status()
            .with_context(|| format!("cannot run `{shown}`"))?;
        ensure!(status.success(), "`{shown}` failed ({status})");
        Ok(())
    }
}
