//! The `condo` binary: `serve` runs the platform; the other commands talk to a running one.
//!
//! When re-executed with the hidden sandbox-init argument it becomes a sandbox's init step,
//! before any thread or async runtime exists.

#![forbid(unsafe_code)]

mod bench;
mod client;
mod load;
mod loadgen;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "condo",
    version,
    about = "A Lambda-compatible function platform with tenant isolation mode"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the platform: the Lambda API, execution environments, and the async queue.
    Serve(serve::ServeArgs),
    /// Print the `export` lines that point the aws CLI and SDKs at this server.
    Env(client::EnvArgs),
    /// Invoke a function and print its answer.
    Invoke(client::InvokeArgs),
    /// List functions as a table.
    Functions(client::Connection),
    /// Zip a directory and create (or update) a function from it.
    Deploy(client::DeployArgs),
    /// Invoke a function under load and print latency percentiles and throughput.
    Load(load::LoadArgs),
    /// Benchmark condo against its peers on this machine and write a report (needs root).
    Bench(bench::BenchArgs),
}

/// Default data directory: `$XDG_DATA_HOME/condo`, else `~/.local/share/condo`.
pub(crate) fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("condo");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/var/lib"), PathBuf::from);
    home.join(".local").join("share").join("condo")
}

fn main() -> anyhow::Result<()> {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == condo_sandbox::INIT_ARG)
    {
        condo_sandbox::init_main();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Env(args) => client::env(args),
        Command::Invoke(args) => client::invoke(args),
        Command::Functions(conn) => client::functions(conn),
        Command::Deploy(args) => client::deploy(args),
        Command::Load(args) => load::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
