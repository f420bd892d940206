//! Browser tests against a real headless Chromium and a page served by the
//! test itself: navigation, JavaScript, real mouse clicks, waiting,
//! screenshots, console, several browsers at once, and no Chromium or
//! profile left behind.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use browser::{Browser, BrowserError, LaunchOptions};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

const WAIT: Duration = Duration::from_secs(10);

/// A counter and a button below the fold; only trusted (real input) clicks
/// count, so `el.click()` from script would not pass the click test.
const COUNTER_PAGE: &str = r#"<!doctype html>
<html><head><title>counter</title></head>
<body style="margin: 0">
<p id="count">0</p>
<button id="add" style="position: absolute; top: 1500px; left: 40px; width: 120px; height: 40px">add one</button>
<div id="hidden" style="display: none">hidden</div>
<script>
let count = 0;
document.getElementById("add").addEventListener("click", (event) => {
  if (!event.isTrusted) return;
  count += 1;
  document.getElementById("count").textContent = String(count);
});
</script>
</body></html>"#;

/// Logs at two levels, then throws outside any handler.
const NOISY_PAGE: &str = r#"<!doctype html>
<html><head><title>noisy</title></head><body>
<script>
console.log("hello", 42);
console.warn("careful");
setTimeout(() => { throw new Error("late boom"); }, 0);
</script>
</body></html>"#;

/// A minimal HTTP/1.1 server on 127.0.0.1:0 serving the pages above; stops
/// on drop.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream));
            }
        });
        Ok(Self { addr, task })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 << 10 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/" => ("200 OK", COUNTER_PAGE),
        "/noisy" => ("200 OK", NOISY_PAGE),
        _ => ("404 Not Found", "not found"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn launch(chromium: PathBuf) -> Result<Browser> {
    Ok(Browser::launch(LaunchOptions {
        chromium,
        ..LaunchOptions::default()
    })
    .await?)
}

/// Whether a live (not zombie) process is in process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp ...; comm may contain spaces
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

fn gone(pid: u32, user_data_dir: &Path) -> Result<()> {
    ensure!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "Chromium {pid} still exists"
    );
    ensure!(
        netns::wait_until(WAIT, || !group_alive(pid)),
        "processes of Chromium's group {pid} still run"
    );
    ensure!(
        !user_data_dir.exists(),
        "{} still exists",
        user_data_dir.display()
    );
    Ok(())
}

#[tokio::test]
async fn goto_eval_and_real_clicks() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("goto_eval_and_real_clicks") else {
        return Ok(());
    };
    let server = Server::start().await?;
    let browser = launch(chromium).await?;
    let page = browser.new_page().await?;
    page.goto(&server.url("/")).await?;

    assert_eq!(page.eval::<String>("document.title").await?, "counter");
    assert_eq!(page.eval::<u32>("count").await?, 0);
    assert_eq!(page.eval::<i64>("Promise.resolve(6 * 7)").await?, 42);
    assert_eq!(page.eval::<Option<String>>("undefined").await?, None);
    page.eval::<()>("void 0").await?;

    // the button is below the fold: the click scrolls to it first
    page.click("#add").await?;
    page.wait_for(
        "the counter to reach 1",
        "document.getElementById('count').textContent === '1'",
        WAIT,
    )
    .await?;
    assert!(page.eval::<f64>("window.scrollY").await? > 0.0);
    page.click("#add").await?;
    let count: String = page
        .wait_for_value(
            "the counter to reach 2",
            "(t => t === '2' ? t : null)(document.getElementById('count').textContent)",
            WAIT,
        )
        .await?;
    assert_eq!(count, "2");

    let missing = page.click("#nothing").await.unwrap_err();
    assert!(
        matches!(&missing, BrowserError::NoElement { selector } if selector == "#nothing"),
        "{missing}"
    );
    let hidden = page.click("#hidden").await.unwrap_err();
    assert!(
        matches!(hidden, BrowserError::NotVisible { .. }),
        "{hidden}"
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn javascript_exceptions_name_the_expression() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("javascript_exceptions_name_the_expression")
    else {
        return Ok(());
    };
    let browser = launch(chromium).await?;
    let page = browser.new_page().await?;

    let thrown = page
        .eval::<u32>("(() => { throw new Error('boom'); })()")
        .await
        .unwrap_err();
    let BrowserError::Js { expression, text } = &thrown else {
        panic!("expected a JS error, got {thrown}");
    };
    assert_eq!(expression, "(() => { throw new Error('boom'); })()");
    assert!(text.contains("Error: boom"), "{text}");
    assert!(
        thrown.to_string().contains("throw new Error('boom')"),
        "{thrown}"
    );

    let rejected = page
        .eval::<u32>("Promise.reject(new TypeError('nope'))")
        .await
        .unwrap_err();
    assert!(
        rejected.to_string().contains("TypeError: nope"),
        "{rejected}"
    );

    let wrong_type = page.eval::<u32>("'text'").await.unwrap_err();
    assert!(
        matches!(wrong_type, BrowserError::Decode { .. }),
        "{wrong_type}"
    );
    Ok(())
}

#[tokio::test]
async fn wait_for_times_out_with_the_reason() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("wait_for_times_out_with_the_reason") else {
        return Ok(());
    };
    let browser = launch(chromium).await?;
    let page = browser.new_page().await?;
    let short = Duration::from_millis(300);

    let never = page
        .wait_for("one to equal two", "1 === 2", short)
        .await
        .unwrap_err();
    assert_eq!(
        never.to_string(),
        "timed out waiting for one to equal two (last: false)"
    );

    let failing = page
        .wait_for(
            "a missing element",
            "document.querySelector('#missing').textContent === 'x'",
            short,
        )
        .await
        .unwrap_err();
    let BrowserError::Timeout { what, last } = &failing else {
        panic!("expected a timeout, got {failing}");
    };
    assert_eq!(what, "a missing element");
    assert!(last.contains("TypeError"), "{last}");

    let null = page
        .wait_for_value::<u32>("a value", "null", short)
        .await
        .unwrap_err();
    assert!(null.to_string().ends_with("(last: null)"), "{null}");

    // a condition that comes true later is waited for
    page.eval::<()>("void setTimeout(() => { window.later = 7; }, 200)")
        .await?;
    let later: u32 = page
        .wait_for_value("window.later", "window.later ?? null", WAIT)
        .await?;
    assert_eq!(later, 7);
    Ok(())
}

#[tokio::test]
async fn screenshot_writes_a_png_of_the_window() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("screenshot_writes_a_png_of_the_window") else {
        return Ok(());
    };
    let server = Server::start().await?;
    let browser = Browser::launch(LaunchOptions {
        chromium,
        width: 800,
        height: 600,
    })
    .await?;
    let page = browser.new_page().await?;
    page.goto(&server.url("/")).await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shots/counter.png");
    page.screenshot(&path).await?;

    let png = std::fs::read(&path).context("read the screenshot")?;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert!(png.len() > 1000, "only {} bytes", png.len());
    // IHDR: width and height, big-endian, right after the signature and chunk header
    let width = u32::from_be_bytes(png[16..20].try_into()?);
    let height = u32::from_be_bytes(png[20..24].try_into()?);
    assert_eq!((width, height), (800, 600));
    assert_eq!(
        page.eval::<(u32, u32)>("[innerWidth, innerHeight]").await?,
        (800, 600)
    );
    Ok(())
}

#[tokio::test]
async fn console_collects_logs_and_uncaught_exceptions() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("console_collects_logs_and_uncaught_exceptions")
    else {
        return Ok(());
    };
    let server = Server::start().await?;
    let browser = launch(chromium).await?;
    let page = browser.new_page().await?;
    page.goto(&server.url("/noisy")).await?;
    page.eval::<()>("console.error('from eval')").await?;
    // the exception comes from a timer: wait until it has been reported
    let deadline = tokio::time::Instant::now() + WAIT;
    while !page.console().iter().any(|line| line.contains("late boom")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no exception in {:?}",
            page.console()
        );
        page.eval::<()>("new Promise(r => setTimeout(r, 20))")
            .await?;
    }
    let console = page.console();
    assert_eq!(console[..2], ["log: hello 42", "warning: careful"]);
    assert!(
        console.contains(&"error: from eval".to_owned()),
        "{console:?}"
    );
    assert!(
        console
            .iter()
            .any(|line| line.starts_with("exception: Error: late boom")),
        "{console:?}"
    );
    Ok(())
}

#[tokio::test]
async fn two_browsers_at_once_are_independent() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("two_browsers_at_once_are_independent") else {
        return Ok(());
    };
    let server = Server::start().await?;
    let (a, b) = tokio::try_join!(launch(chromium.clone()), launch(chromium))?;
    assert_ne!(a.user_data_dir(), b.user_data_dir());
    let (page_a, page_b) = tokio::try_join!(a.new_page(), b.new_page())?;
    let url = server.url("/");
    tokio::try_join!(page_a.goto(&url), page_b.goto(&url))?;

    page_a.click("#add").await?;
    page_a
        .wait_for("a's counter to reach 1", "count === 1", WAIT)
        .await?;
    assert_eq!(page_b.eval::<u32>("count").await?, 0);
    page_b.click("#add").await?;
    page_b.click("#add").await?;
    page_b
        .wait_for("b's counter to reach 2", "count === 2", WAIT)
        .await?;
    assert_eq!(page_a.eval::<u32>("count").await?, 1);
    Ok(())
}

#[tokio::test]
async fn dropping_a_browser_kills_chromium_and_removes_its_profile() -> Result<()> {
    let Some(chromium) =
        browser::chromium_or_skip("dropping_a_browser_kills_chromium_and_removes_its_profile")
    else {
        return Ok(());
    };
    let server = Server::start().await?;
    let browser = launch(chromium).await?;
    let page = browser.new_page().await?;
    page.goto(&server.url("/")).await?;
    let (pid, dir) = (browser.pid(), browser.user_data_dir().to_owned());
    ensure!(dir.join("DevToolsActivePort").exists());
    ensure!(group_alive(pid), "Chromium {pid} is not running");

    drop(browser);
    gone(pid, &dir)?;
    // the page outlived its browser: it fails instead of hanging
    let closed = page.eval::<u32>("1").await.unwrap_err();
    assert!(matches!(closed, BrowserError::Closed), "{closed}");
    Ok(())
}

#[tokio::test]
async fn a_panicking_test_leaves_no_chromium_behind() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("a_panicking_test_leaves_no_chromium_behind")
    else {
        return Ok(());
    };
    let (started, launched) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let browser = launch(chromium).await.expect("launch");
        started
            .send((browser.pid(), browser.user_data_dir().to_owned()))
            .expect("send");
        panic!("the test fails while its browser runs");
    });
    let (pid, dir) = launched.await?;
    assert!(test.await.unwrap_err().is_panic());
    gone(pid, &dir)
}

#[tokio::test]
async fn close_lets_chromium_exit() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("close_lets_chromium_exit") else {
        return Ok(());
    };
    let browser = launch(chromium).await?;
    let _page = browser.new_page().await?;
    let (pid, dir) = (browser.pid(), browser.user_data_dir().to_owned());
    browser.close().await?;
    gone(pid, &dir)
}

#[tokio::test]
async fn goto_a_closed_port_names_the_url() -> Result<()> {
    let Some(chromium) = browser::chromium_or_skip("goto_a_closed_port_names_the_url") else {
        return Ok(());
    };
    // a port that was just free: nothing listens there any more
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let browser = launch(chromium).await?;
    let page = browser.new_page().await?;
    let refused = page.goto(&url).await.unwrap_err();
    let BrowserError::Navigate { url: failed, error } = &refused else {
        panic!("expected a navigation error, got {refused}");
    };
    assert_eq!(failed, &url);
    assert!(error.contains("ERR_CONNECTION_REFUSED"), "{error}");
    assert!(refused.to_string().contains(&url), "{refused}");
    Ok(())
}

#[tokio::test]
async fn a_failed_launch_says_why() {
    // no Chromium needed: these binaries are not Chromium
    let missing = Browser::launch(LaunchOptions {
        chromium: PathBuf::from("/nonexistent/chromium"),
        ..LaunchOptions::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(missing, BrowserError::Spawn { .. }), "{missing}");

    let exits = Browser::launch(LaunchOptions {
        chromium: PathBuf::from("/bin/false"),
        ..LaunchOptions::default()
    })
    .await
    .unwrap_err();
    assert!(
        exits
            .to_string()
            .starts_with("launch failed: Chromium exited (exit status: 1)"),
        "{exits}"
    );
}
