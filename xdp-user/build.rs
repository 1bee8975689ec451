//! Builds the XDP program (`../xdp-ebpf`) and leaves its objects in `OUT_DIR`, where
//! `src/objects.rs` embeds them, so the `synguard` binary is all a server needs.
//!
//! The BPF target needs a prebuilt `core`, which rustup cannot provide here; Debian's
//! `rustc-web` ships one, and `bpf-linker` must be built against the same LLVM
//! (docs/design.md). `cargo xtask setup` installs both.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const EBPF_RUSTC: &str = "/usr/bin/rustc";
const EBPF_CARGO: &str = "/usr/bin/cargo";
const TARGET: &str = "bpfel-unknown-none";
/// The `[[bin]]` targets of the eBPF crate, each one object file.
const OBJECTS: [&str; 2] = ["synguard", "lab"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let ebpf_dir = manifest_dir.join("../xdp-ebpf");
    let common_dir = manifest_dir.join("../xdp-common");
    for path in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo::rerun-if-changed={}", path.display());
    }

    for tool in [EBPF_RUSTC, EBPF_CARGO] {
        if !Path::new(tool).exists() {
            fail(&format!(
                "{tool} is missing: the XDP program is built with Debian's rustc-web toolchain. \
                 Run `cargo xtask setup` once, then build again."
            ));
        }
    }

    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new(EBPF_CARGO);
    cmd.current_dir(&ebpf_dir)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        // Build-script output on stdout is read by cargo as directives; keep the inner build's
        // chatter on stderr.
        .stdout(std::io::stderr());
    // Nothing of the outer (host, rustup) build may leak into the inner one: its wrappers
    // (clippy sets RUSTC_WORKSPACE_WRAPPER), flags and target settings are for another rustc.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key.starts_with("RUSTUP")
            || key == "RUSTFLAGS"
            || key == "TARGET"
            || key == "HOST"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    // aya-ebpf enables `asm_experimental_arch` on BPF, a nightly feature of a stable compiler.
    // `--btf` has bpf-linker turn the debug info into BTF (see xdp-ebpf/Cargo.toml).
    cmd.env("RUSTC", EBPF_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=--btf");
    // bpf-linker is installed by `cargo install`, into $CARGO_HOME/bin.
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    if let Some(cargo_home) = cargo_home {
        let mut paths = vec![cargo_home.join("bin")];
        paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        cmd.env("PATH", env::join_paths(paths).unwrap());
    }

    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {EBPF_CARGO}: {e}")));
    if !status.success() {
        fail(&format!(
            "building the XDP program failed ({status}); see the compiler output above. \
             If bpf-linker is missing or built against another LLVM, run `cargo xtask setup`."
        ));
    }

    for name in OBJECTS {
        let built = target_dir.join(TARGET).join("release").join(name);
        let embedded = out_dir.join(format!("{name}.bpf.o"));
        std::fs::copy(&built, &embedded).unwrap_or_else(|e| {
            fail(&format!(
                "cannot copy {} to {}: {e}",
                built.display(),
                embedded.display()
            ))
        });
    }
}

fn fail(message: &str) -> ! {
    // Cargo prints a failed build script's stderr.
    eprintln!("error: {message}");
    std::process::exit(1);
}
