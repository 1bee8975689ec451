//! `cargo xtask soak [--minutes N]`: synguard under floods, legit traffic and an operator's
//! changes for N minutes (default 30); prints the summary and exits non-zero if it broke a
//! promise.

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(about = "synguard under floods, legit traffic and run-time changes, for a long while")]
struct Args {
    #[arg(long, default_value_t = 30)]
    minutes: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = synguard_lab::soak::run(
        Duration::from_secs(args.minutes * 60),
        Duration::from_secs(10),
        Duration::from_secs(30),
    )?;
    report.print();
    report.check()
}
