//! `scripted-backend`: serves the default echo reply on a loopback address
//! until Ctrl-C, for manual demos and benchmarks.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use scripted_backend::{Backend, Reply};

const USAGE: &str =
    "usage: scripted-backend [--listen 127.0.0.1:8000] [--delay-ms N] [--model ID]...

Serves an OpenAI-compatible /v1/chat/completions that answers
\"Hello! You said: <last user message>\", and /v1/models.

  --listen ADDR   loopback address to listen on (default 127.0.0.1:8000)
  --delay-ms N    delay between streamed chunks in milliseconds (default 0)
  --model ID      a model id listed by /v1/models (repeatable; default test-model)";

/// Command-line options.
#[derive(Debug)]
struct Options {
    listen: SocketAddr,
    delay: Duration,
    models: Vec<String>,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Options>> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
        delay: Duration::ZERO,
        models: Vec::new(),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => options.listen = value()?.parse().context("--listen")?,
            "--delay-ms" => {
                options.delay = Duration::from_millis(value()?.parse().context("--delay-ms")?)
            }
            "--model" => options.models.push(value()?),
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    Ok(Some(options))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("scripted-backend: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let Some(options) = parse_options(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let backend = Backend::start_on(options.listen)?;
    backend.set_recording(false);
    backend.set_default(Reply::echo().delay_between_chunks(options.delay));
    if !options.models.is_empty() {
        backend.set_models(options.models);
    }
    println!("scripted-backend listening on {}", backend.url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    backend.shutdown().await;
    Ok(())
}
