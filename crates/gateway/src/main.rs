//! The `chat-gateway` binary: parses the command line and calls the library
//! (`serve` runs a node until SIGTERM, `token` prints a JWT for trying sign-in).

use clap::{Parser, Subcommand};

use chat_gateway::auth;
use chat_gateway::config::Settings;

/// jemalloc: per message, glibc's malloc/free was ~12 % of a node's CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "chat-gateway",
    version,
    about = "A node of the real-time chat cluster"
)]
struct Cli {
    /// TOML settings file; `CHAT_<SECTION>__<KEY>` environment variables win over it.
    #[arg(long, global = true)]
    config: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Print a JWT signed with auth.jwt_secret, for trying token sign-in.
    Token {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat-gateway: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token {
            user,
            name,
            ttl_secs,
        } => match auth::issue_token(&settings.auth.jwt_secret, &user, &name, ttl_secs) {
            Ok(token) => {
                println!("{token}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("chat-gateway token: {e}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Serve => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if settings.server.worker_threads > 0 {
                builder.worker_threads(settings.server.worker_threads);
            }
            let runtime = match builder.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("chat-gateway: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(chat_gateway::serve(settings)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "node stopped");
                    eprintln!("chat-gateway: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
