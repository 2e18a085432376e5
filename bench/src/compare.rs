//! `--compare NAME=URL`: another Responses server measured side by side
//! with edge-responses, so a user can put us next to what they run today.
//!
//! The other server has to answer from the bench's scripted backend, so
//! both face the same model: start the bench with `--backend-listen ADDR`
//! and point the other server at `http://ADDR/v1` as its OpenAI base URL,
//! with model `test-model` (any API key). `URL` is the other server's base,
//! like `http://127.0.0.1:4000` (a trailing `/v1` is accepted); requests go
//! to `URL/v1/responses`. Only loopback addresses are measured.
//!
//! Each compared server gets the concurrency-1 probes of the other phases,
//! taken in turn with edge-responses and the backend alone (non-streaming
//! latency, streaming time to first token), and the concurrency phase's
//! streams at every stream count (see [`crate::concurrency`]); its memory
//! is not sampled, as it is not our process. Each gets a report section of
//! its own, with columns edge-responses, that server, the backend alone.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context as _};

use crate::client::{Conn, Probe, Sample};
use crate::concurrency::Phase;
use crate::report::{Row, Section, Unit};
use crate::stats::Percentiles;

/// One server to compare with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// As given on the command line.
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `NAME=URL`, URL being `http://HOST:PORT` with an optional
    /// `/v1` (or `/`) after it, HOST a loopback address or `localhost`.
    pub fn parse(arg: &str) -> anyhow::Result<Target> {
        let (name, url) = arg
            .split_once('=')
            .with_context(|| format!("--compare wants NAME=URL, got {arg:?}"))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("--compare: the name {name:?} should be letters, digits, '-', '_' or '.'");
        }
        if ["edge_responses", "backend_alone"].contains(&name.replace('-', "_").as_str()) {
            bail!("--compare: the name {name:?} is taken by the bench's own columns");
        }
        let rest = url.strip_prefix("http://").with_context(|| {
            format!("--compare {name}: the URL must start with http://, got {url:?}")
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !["", "/", "/v1", "/v1/"].contains(&path) {
            bail!("--compare {name}: the URL should be the server's base, like http://127.0.0.1:4000 (or .../v1), got {url:?}");
        }
        let addr = match authority.strip_prefix("localhost:") {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            None => authority.parse::<SocketAddr>().ok(),
        }
        .with_context(|| format!("--compare {name}: {authority:?} is not HOST:PORT"))?;
        if !addr.ip().is_loopback() {
            bail!("--compare {name}: only loopback addresses are measured, got {addr}");
        }
        Ok(Target {
            name: name.to_owned(),
            url: url.to_owned(),
            addr,
        })
    }

    /// Whether something accepts connections at the target's address.
    pub fn check_reachable(&self) -> anyhow::Result<()> {
        std::net::TcpStream::connect_timeout(&self.addr, std::time::Duration::from_secs(2))
            .with_context(|| {
                format!(
                    "--compare {}: nothing answers at {} ({})",
                    self.name, self.addr, self.url
                )
            })?;
        Ok(())
    }
}

/// The probes every target gets at concurrency 1.
pub struct Probes<'a> {
    pub create: &'a Probe,
    pub create_stream: &'a Probe,
    /// The chat requests the component sends for them.
    pub chat: &'a Probe,
    pub chat_stream: &'a Probe,
}

/// Concurrency-1 numbers, each `[edge-responses, the other server, the
/// backend alone]`.
#[derive(Debug, Clone)]
pub struct Single {
    pub latency: [Percentiles; 3],
    pub ttft: [Percentiles; 3],
}

/// Measures `target` next to edge-responses (at `edge`) and the backend
/// (at `backend`), taking the three in turn: `warmup` rounds first, then
/// `latency_count` non-streaming and `stream_count` streaming rounds.
pub async fn measure_single(
    target: &Target,
    edge: SocketAddr,
    backend: SocketAddr,
    probes: &Probes<'_>,
    counts: (usize, usize, usize),
) -> anyhow::Result<Single> {
    let (warmup, latency_count, stream_count) = counts;
    let mut conns = [
        Conn::connect(edge).await?,
        Conn::connect(target.addr).await?,
        Conn::connect(backend).await?,
    ];
    let plain = [probes.create, probes.create, probes.chat];
    let streamed = [
        probes.create_stream,
        probes.create_stream,
        probes.chat_stream,
    ];
    in_turn(warmup, &mut conns, plain)
        .await
        .with_context(|| format!("{} ({})", target.name, target.url))?;
    in_turn(warmup, &mut conns, streamed)
        .await
        .with_context(|| format!("{} ({}), streaming", target.name, target.url))?;
    let samples = in_turn(latency_count, &mut conns, plain).await?;
    let latency = samples.map(|samples| Percentiles::of(samples.iter().map(|s| s.total)));
    let samples = in_turn(stream_count, &mut conns, streamed).await?;
    let ttft =
        samples.map(|samples| Percentiles::of(samples.iter().map(|s| s.first.unwrap_or(s.total))));
    Ok(Single { latency, ttft })
}

/// Sends each probe on its connection in turn, `count` times.
async fn in_turn(
    count: usize,
    conns: &mut [Conn; 3],
    probes: [&Probe; 3],
) -> anyhow::Result<[Vec<Sample>; 3]> {
    let mut samples: [Vec<Sample>; 3] = Default::default();
    for _ in 0..count {
        for ((conn, probe), samples) in conns.iter_mut().zip(probes).zip(&mut samples) {
            samples.push(conn.exchange(probe).await?);
        }
    }
    Ok(samples)
}

/// The side-by-side section of compared server `index`.
pub fn section(
    target: &Target,
    index: usize,
    single: Option<&Result<Single, String>>,
    concurrency: Option<&Phase>,
) -> Section {
    let mut rows = Vec::new();
    match single {
        Some(Ok(single)) => {
            let groups = [
                ("non-streaming latency, concurrency 1", &single.latency),
                ("time to first token, concurrency 1", &single.ttft),
            ];
            for (label, [edge, other, backend]) in groups {
                rows.push(
                    Row::columns(
                        format!("{label}, p50"),
                        Unit::Millis,
                        [Some(edge.p50), Some(other.p50), Some(backend.p50)],
                    )
                    .note(format!(
                        "added to the backend: edge-responses {:.3} ms, {} {:.3} ms; {} requests each",
                        edge.p50 - backend.p50,
                        target.name,
                        other.p50 - backend.p50,
                        edge.count
                    )),
                );
                rows.push(Row::columns(
                    format!("{label}, p99"),
                    Unit::Millis,
                    [Some(edge.p99), Some(other.p99), Some(backend.p99)],
                ));
            }
        }
        Some(Err(err)) => rows.push(
            Row::columns("concurrency 1", Unit::Millis, [None; 3]).note(format!("failed: {err}")),
        ),
        None => {}
    }
    if let Some(phase) = concurrency {
        rows.extend(phase.compare_rows(index));
    }
    Section::new(
        format!(
            "Side by side: edge-responses and {} ({}), same backend, same requests",
            target.name, target.url
        ),
        rows,
    )
    .with_columns([
        "edge-responses".to_owned(),
        target.name.clone(),
        "backend alone".to_owned(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_base_url() {
        let target = Target::parse("litellm=http://127.0.0.1:4000").expect("parses");
        assert_eq!(target.name, "litellm");
        assert_eq!(target.addr, "127.0.0.1:4000".parse().unwrap());
        for url in [
            "http://127.0.0.1:4000/",
            "http://127.0.0.1:4000/v1",
            "http://127.0.0.1:4000/v1/",
        ] {
            let target = Target::parse(&format!("other={url}")).expect(url);
            assert_eq!(target.addr.port(), 4000);
            assert_eq!(target.url, url);
        }
        let target = Target::parse("x=http://localhost:8080").expect("localhost");
        assert_eq!(target.addr, "127.0.0.1:8080".parse().unwrap());
        let target = Target::parse("v6=http://[::1]:9000").expect("ipv6 loopback");
        assert_eq!(target.addr.port(), 9000);
    }

    #[test]
    fn rejects_what_it_cannot_measure() {
        for arg in [
            "http://127.0.0.1:4000",
            "=http://127.0.0.1:4000",
            "a b=http://127.0.0.1:4000",
            "edge-responses=http://127.0.0.1:4000",
            "backend_alone=http://127.0.0.1:4000",
            "x=https://127.0.0.1:4000",
            "x=http://127.0.0.1",
            "x=http://127.0.0.1:4000/v2",
            "x=http://10.0.0.1:4000",
            "x=http://example.com:80",
        ] {
            assert!(Target::parse(arg).is_err(), "{arg}");
        }
    }
}
