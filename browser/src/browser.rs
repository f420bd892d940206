//! A headless Chromium and its DevTools connection.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{BrowserError, Page, chromium_path, connection::Connection, process::ChromiumProcess};

/// How long [`Browser::close`] waits for Chromium to exit by itself.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start Chromium.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The binary (Debian's launcher script is fine).
    pub chromium: PathBuf,
    /// Width of the window and of every page's viewport, in CSS pixels.
    pub width: u32,
    /// Height of the window and of every page's viewport, in CSS pixels.
    pub height: u32,
}

impl Default for LaunchOptions {
    /// [`chromium_path`] (else plain `chromium`, which fails at launch with
    /// a clear error), and a 1280×800 window: a laptop screen, wide enough
    /// for the UI's desktop layout.
    fn default() -> Self {
        Self {
            chromium: chromium_path().unwrap_or_else(|| PathBuf::from("chromium")),
            width: 1280,
            height: 800,
        }
    }
}

/// A headless Chromium with its own temporary user-data dir.
///
/// Dropping it (also while a test panics) kills Chromium's whole process
/// group with SIGKILL, reaps the browser process and removes the user-data
/// dir; [`Browser::close`] first asks Chromium to exit. Pages opened from it
/// fail with [`BrowserError::Closed`] afterwards. Chromium also dies with the
/// thread that launched it (`PR_SET_PDEATHSIG`), so a test process killed
/// by a timeout leaves no browser behind; launch it from a thread that
/// outlives it (a test's thread, a runtime's worker or `block_on` thread,
/// not a `spawn_blocking` one).
#[derive(Debug)]
pub struct Browser {
    // dropped first: stops the connection's task before Chromium is killed
    connection: Arc<Connection>,
    process: ChromiumProcess,
    viewport: (u32, u32),
}

impl Browser {
    /// Starts Chromium and connects to it; fails with Chromium's last log
    /// lines if it exits or does not open its DevTools port in time.
    pub async fn launch(options: LaunchOptions) -> Result<Browser, BrowserError> {
        let mut process = ChromiumProcess::spawn(&options)?;
        let url = process.devtools_url().await?;
        let connection = Arc::new(Connection::connect(&url).await?);
        Ok(Browser {
            connection,
            process,
            viewport: (options.width, options.height),
        })
    }

    /// Opens a new tab on `about:blank`, attached as a flattened session with
    /// the Page, Runtime and Log domains enabled (so its load events and
    /// console reach the [`Page`]), and a viewport of the launch options'
    /// width and height (headless Chromium's window keeps some of its height
    /// for browser UI that it does not draw).
    pub async fn new_page(&self) -> Result<Page, BrowserError> {
        let target = self
            .connection
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = string_field(&target, "Target.createTarget", "targetId")?;
        let attached = self
            .connection
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        let session_id = string_field(&attached, "Target.attachToTarget", "sessionId")?;
        let page = Page::new(self.connection.clone(), target_id, session_id);
        page.enable(self.viewport).await?;
        Ok(page)
    }

    /// The browser process's id (also the id of its process group).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Chromium's user-data dir (removed on drop).
    pub fn user_data_dir(&self) -> &Path {
        self.process.user_data_dir()
    }

    /// Asks Chromium to exit (`Browser.close`), waits for it, then kills
    /// what is left of its process group, reaps it and removes the
    /// user-data dir, as on drop.
    pub async fn close(self) -> Result<(), BrowserError> {
        match self.connection.call(None, "Browser.close", json!({})).await {
            // Chromium may close the socket before it answers
            Ok(_) | Err(BrowserError::Closed) => {}
            Err(error) => return Err(error),
        }
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while !self.process.has_exited() {
            if Instant::now() >= deadline {
                return Err(BrowserError::Timeout {
                    what: "Chromium to exit after Browser.close".to_owned(),
                    last: format!("pid {} still running; killed", self.pid()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// A string in a CDP result, or an error naming the method.
pub(crate) fn string_field(
    result: &serde_json::Value,
    method: &str,
    field: &str,
) -> Result<String, BrowserError> {
    result[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| BrowserError::BadResponse {
            method: method.to_owned(),
            detail: format!("no `{field}` in {result}"),
        })
}
