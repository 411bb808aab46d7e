use clap::Parser;
use paylink::config::{Cli, Command, MerchantCommand};
use paylink::merchants::add_merchant;
use paylink::startup::Application;
use paylink::telemetry;
use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: a pay page allocates a few dozen small blocks,
/// and this takes about a microsecond off each (see README, Performance). The embedded
/// store's memory is measured with it too (`bench/memory_store_rss.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Merchant(MerchantCommand::Add { id, name })) => {
            match add_merchant(&cli.settings.merchants, &id, &name) {
                Ok(key) => {
                    eprintln!(
                        "added merchant {id:?} to {}; its API key follows, shown only this once",
                        cli.settings.merchants.display()
                    );
                    println!("{key}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("paylink: {e}");
                    ExitCode::from(2)
                }
            }
        }
        None | Some(Command::Serve) => serve(cli).await,
    }
}

async fn serve(cli: Cli) -> ExitCode {
    let settings = match cli.settings.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("paylink: {e}");
            return ExitCode::from(2);
        }
    };
    let _log = telemetry::init(settings.log_format);
    for adjustment in &settings.adjustments {
        tracing::warn!("configuration: {adjustment}");
    }
    let ip = settings.addr.ip();
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "paylink could not start");
            return ExitCode::FAILURE;
        }
    };
    let port = app.port();
    tracing::info!(port, "paylink listening on http://{ip}:{port}");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server stopped with an error");
            ExitCode::FAILURE
        }
    }
}
