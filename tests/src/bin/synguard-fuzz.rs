//! `cargo xtask fuzz`: the differential run at length. Generated frames go through synguard's
//! XDP program in the kernel and through the reference model in every mode; any disagreement
//! is printed (seed, shrunk frame in hex) and the exit status is 1.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Generated frames through the XDP program and the reference model, side by side")]
struct Args {
    /// Frames in all, split evenly over the modes.
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// The generator's seed (default: a new one, printed).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let seed = args
        .seed
        .unwrap_or_else(synguard_tests::differential::new_seed);
    println!("differential run: {} frames, seed {seed}", args.frames);
    match synguard_tests::differential::run(args.frames, seed, &mut std::io::stdout()) {
        Ok(summary) => {
            summary.print(&mut std::io::stdout());
            std::process::ExitCode::SUCCESS
        }
        Err(mismatch) => {
            eprintln!("{mismatch}");
            eprintln!(
                "reproduce: cargo xtask fuzz --frames {} --seed {seed}",
                args.frames
            );
            std::process::ExitCode::FAILURE
        }
    }
}
