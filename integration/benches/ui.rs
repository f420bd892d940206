//! `make bench BENCH=ui`: the Hubble UI in headless Chromium.
//!
//! - `ui_map_render_s`: from navigation start to the map drawn with 500
//!   workloads and 2,000 arrows (the page's own `performance.now()` when it
//!   has drawn them), the median of 5 page loads; the UI reads the flows
//!   from a real Hubble server. Baseline: a plain page that draws 500
//!   rectangles and 2,000 lines on a canvas, no library, no stream.
//! - `ui_flow_to_row_p99_s` (root): on a real local mesh, requests from c1's
//!   client to c2's echo server; for every flow row the page adds, the time
//!   from the flow's own (kernel) time to the row in the page. Baseline: the
//!   same flows read straight from the relay with gRPC (flow time to arrival).
//!
//! Prints one JSON object per line on stdout; progress on stderr.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use bench_report::Better;
use browser::{Browser, LaunchOptions};
use futures::StreamExt;
use hubble_api::{
    flow::Verdict,
    observer::{
        GetFlowsRequest, get_flows_response::ResponseTypes, observer_client::ObserverClient,
    },
};
use integration::TestMesh;
use ui::testing::{FlowSource, RunningUi, pod, syn};

const BENCH: bench_report::Bench = bench_report::Bench::new("ui");
const WORKLOADS: usize = 500;
const LINKS: usize = 2_000;
const LOADS: usize = 5;
const REQUESTS: usize = 200;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// 500 workloads over 2 clusters and 10 namespaces, 2,000 distinct arrows.
fn map_flows() -> Vec<hubble_api::flow::Flow> {
    let workloads: Vec<_> = (0..WORKLOADS)
        .map(|i| {
            let cluster = if i % 2 == 0 { "c1" } else { "c2" };
            pod(
                cluster,
                &format!("ns{}", i % 10),
                &format!("app{i}"),
                10_000 + i as u32,
            )
        })
        .collect();
    let mut seen = HashSet::new();
    let mut flows = Vec::new();
    let mut k = 0usize;
    while flows.len() < LINKS {
        let src = k % WORKLOADS;
        let dst = (k * 7 + 1 + k / WORKLOADS) % WORKLOADS;
        let port = 8000 + (k / WORKLOADS) as u32;
        k += 1;
        if src == dst || !seen.insert((src, dst, port)) {
            continue;
        }
        let verdict = if k.is_multiple_of(10) {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        };
        flows.push(syn(
            workloads[src].clone(),
            workloads[dst].clone(),
            port,
            verdict,
        ));
    }
    flows
}

/// The plain baseline: 500 rectangles and 2,000 lines on a canvas.
const PLAIN_PAGE: &str = r#"<!doctype html><html><body><canvas id="c" width="1600" height="1000"></canvas><script>
const ctx = document.getElementById('c').getContext('2d');
const pos = [];
for (let i = 0; i < 500; i++) { pos.push([40 + (i % 25) * 60, 40 + Math.floor(i / 25) * 45]); }
for (const [x, y] of pos) { ctx.fillStyle = '#eef'; ctx.fillRect(x, y, 50, 30); ctx.strokeRect(x, y, 50, 30); ctx.fillStyle = '#000'; ctx.fillText('app', x + 4, y + 18); }
ctx.beginPath();
for (let k = 0; k < 2000; k++) { const a = pos[k % 500], b = pos[(k * 7 + 1) % 500]; ctx.moveTo(a[0] + 25, a[1] + 15); ctx.lineTo(b[0] + 25, b[1] + 15); }
ctx.stroke();
requestAnimationFrame(() => { window.done = performance.now(); });
</script></body></html>"#;

async fn map_render(chromium: PathBuf) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("relay.sock");
    let source = FlowSource::start(&socket, 4095).await?;
    source.push(map_flows());
    let ui = RunningUi::start(&[("c1", &socket)]).await?;
    // The backend has read them all before the pages load.
    let snapshot = format!("http://{}/api/snapshot", ui.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_get(&snapshot).await?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        if v["map"]["links"].as_array().map_or(0, Vec::len) >= LINKS {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the UI did not read the 2,000 flows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let browser = Browser::launch(LaunchOptions {
        chromium,
        width: 1600,
        height: 1000,
    })
    .await?;
    let plain = dir.path().join("plain.html");
    std::fs::write(&plain, PLAIN_PAGE)?;
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for i in 0..LOADS {
        let page = browser.new_page().await?;
        page.goto(&ui.url).await?;
        let t: f64 = page
            .wait_for_value(
                "the map of 500 workloads and 2,000 arrows drawn",
                &format!(
                    "(() => {{ const r = (window.cmui && window.cmui.renders || []).find(r => r.workloads >= {WORKLOADS} && r.links >= {LINKS}); return r ? r.t : null; }})()"
                ),
                Duration::from_secs(60),
            )
            .await?;
        eprintln!(
            "ui bench: load {}: map drawn {:.3} s after navigation start",
            i + 1,
            t / 1000.0
        );
        ours.push(t / 1000.0);
        drop(page);
        let page = browser.new_page().await?;
        page.goto(&format!("file://{}", plain.display())).await?;
        let t: f64 = page
            .wait_for_value(
                "the plain canvas drawn",
                "window.done ?? null",
                Duration::from_secs(30),
            )
            .await?;
        base.push(t / 1000.0);
    }
    BENCH.emit(
        "ui_map_render_s",
        median(ours),
        "s",
        Better::Lower,
        Some(("plain_canvas_render_s", median(base))),
    );
    browser.close().await?;
    ui.stop().await?;
    source.stop().await;
    Ok(())
}

/// GET over plain HTTP/1.1 (the UI's own snapshot), the body.
async fn http_get(url: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("an http URL")?;
    let (host, path) = rest.split_once('/').context("a path")?;
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (_, body) = text.split_once("\r\n\r\n").context("an HTTP answer")?;
    // The snapshot is small enough to come unchunked or in chunks; strip
    // chunk sizes if any.
    if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut joined = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            joined.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        return Ok(joined);
    }
    Ok(body.to_owned())
}

fn flow_to_row(chromium: PathBuf) -> Result<()> {
    let mesh = TestMesh::up(2, 1).context("mesh for the flow-to-row latency")?;
    let url = mesh.state.hubble_ui.clone().context("the mesh's UI")?;
    let relay = mesh
        .state
        .cluster("c1")?
        .hubble_relay
        .clone()
        .context("c1's relay")?;
    let echo = mesh.echo_addr("c2", "echo-n1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let browser = rt.block_on(Browser::launch(LaunchOptions {
        chromium,
        width: 1600,
        height: 1000,
    }))?;
    let page = rt.block_on(browser.new_page())?;
    rt.block_on(page.goto(&url))?;
    rt.block_on(page.wait_for(
        "the page connected",
        "!!(window.cmui && window.cmui.connected)",
        Duration::from_secs(30),
    ))?;
    // Rows of the backlog (old flows) are not part of the figure.
    let skip: usize = rt.block_on(page.eval("window.cmui.flowLatenciesMs.length"))?;

    // The baseline: the same flows, straight from c1's relay.
    let c = mesh.state.cluster("c1")?;
    let tls = c.certs.hubble.clone().context("hubble certificates")?;
    let files = certs::TlsFiles::new(
        tls.relay_client_cert.clone(),
        tls.relay_client_key.clone(),
        c.certs.ca.clone(),
    );
    let client_tls = certs::ClientTls::load(
        files,
        certs::Config {
            alpn_protocols: vec![b"h2".to_vec()],
            ..Default::default()
        },
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reader = stop.clone();
    let server_name = format!("hubble-relay.{}.hubble-grpc.cilium.io", c.name);
    let reader = std::thread::spawn(move || -> Result<Vec<f64>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let channel = hubble::client::connect(
                &hubble::client::Address::Tcp {
                    host_port: relay,
                    tls: true,
                },
                Some(hubble::client::ClientTls {
                    connector: client_tls.connector(),
                    server_name,
                }),
            )
            .await?;
            let mut stream = ObserverClient::new(channel)
                .get_flows(GetFlowsRequest {
                    follow: true,
                    since: Some(hubble::time::timestamp(SystemTime::now())),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut latencies = Vec::new();
            while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Some(Ok(r))) =
                    tokio::time::timeout(Duration::from_millis(200), stream.next()).await
                else {
                    continue;
                };
                if let Some(ResponseTypes::Flow(f)) = r.response_types
                    && let Some(t) = f.time
                {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)?
                        .as_secs_f64();
                    latencies.push(now - (t.seconds as f64 + f64::from(t.nanos) / 1e9));
                }
            }
            Ok(latencies)
        })
    });
    eprintln!("ui bench: {REQUESTS} requests from c1's client to c2's echo");
    for _ in 0..REQUESTS {
        let _ = mesh.reaches("c1", "client", echo);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Until the page has had no new row for a second (at most 10 s).
    let (mut count, mut still_since, end) = (
        0usize,
        Instant::now(),
        Instant::now() + Duration::from_secs(10),
    );
    while still_since.elapsed() < Duration::from_secs(1) && Instant::now() < end {
        let now: usize = rt.block_on(page.eval("window.cmui.flowLatenciesMs.length"))?;
        if now != count {
            (count, still_since) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let all: Vec<f64> = rt.block_on(page.eval("window.cmui.flowLatenciesMs"))?;
    let mut ours: Vec<f64> = all.into_iter().skip(skip).map(|ms| ms / 1000.0).collect();
    let mut base = reader
        .join()
        .map_err(|_| anyhow::anyhow!("relay reader panicked"))??;
    ours.sort_by(f64::total_cmp);
    base.sort_by(f64::total_cmp);
    eprintln!(
        "ui bench: {} rows in the page, {} flows from the relay",
        ours.len(),
        base.len()
    );
    anyhow::ensure!(!ours.is_empty(), "no row reached the page");
    BENCH.emit(
        "ui_flow_to_row_p50_s",
        percentile(&ours, 0.5),
        "s",
        Better::Lower,
        Some(("relay_flow_latency_p50_s", percentile(&base, 0.5))),
    );
    BENCH.emit(
        "ui_flow_to_row_p99_s",
        percentile(&ours, 0.99),
        "s",
        Better::Lower,
        Some(("relay_flow_latency_p99_s", percentile(&base, 0.99))),
    );
    drop(page);
    rt.block_on(browser.close())?;
    Ok(())
}

fn main() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("the ui bench") else {
        return Ok(());
    };
    eprintln!("ui bench: map of {WORKLOADS} workloads and {LINKS} arrows, {LOADS} page loads");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(map_render(chromium.clone()))?;
    if integration::can_run("the ui bench's flow-to-row latency") {
        flow_to_row(chromium)?;
    }
    Ok(())
}
