//! `portcullis`: the IAM server, the admin CLI and the development mode.
//!
//! `main` parses the command line, builds validated config, calls a library
//! and maps the result to an exit code: 0 success, 1 runtime failure,
//! 2 invalid configuration or usage.

mod admin;
mod ca;
mod cli;
mod demo;
mod dev;
mod gateway;
mod policy;
mod serve;
mod token;

use clap::Parser;
use std::process::ExitCode;

/// A failure with the exit code it maps to.
pub enum Failure {
    /// Bad configuration or usage: exit 2.
    Config(String),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Runtime(e)
    }
}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match args.command {
            cli::Command::Iam {
                command: cli::IamCommand::Serve(a),
            } => serve::run(a, args.log).await,
            cli::Command::Dev(a) => dev::run(a, args.log).await,
            cli::Command::Gateway {
                command: cli::GatewayCommand::Serve(a),
            } => gateway::serve(a, args.log).await,
            cli::Command::Gateway {
                command: cli::GatewayCommand::HashPassword,
            } => gateway::hash_password(),
            cli::Command::Apikeys {
                command:
                    cli::ApikeysCommand::Create {
                        consumer,
                        expires_in_days,
                    },
            } => gateway::create_api_key(&consumer, expires_in_days),
            cli::Command::Clients { admin, command } => admin::clients(admin, command).await,
            cli::Command::Keys { admin, command } => admin::keys(admin, command).await,
            cli::Command::Users { admin, command } => admin::users(admin, command).await,
            cli::Command::Roles { admin, command } => admin::roles(admin, command).await,
            cli::Command::Ca { ca, command } => ca::run(ca, command, args.log).await,
            cli::Command::Policy { command } => policy::run(command),
            cli::Command::Token { command } => token::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
