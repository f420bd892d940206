//! Headless Chromium driven over the Chrome DevTools Protocol (CDP), for
//! browser tests and benchmarks of the web UI.
//!
//! [`Browser::launch`] starts Debian's `chromium` in headless mode with a
//! fresh user-data dir and connects to its DevTools websocket;
//! [`Browser::new_page`] opens a tab, and a [`Page`] navigates
//! ([`Page::goto`]), evaluates JavaScript ([`Page::eval`]), waits for a
//! condition with a deadline ([`Page::wait_for`]), clicks like a mouse
//! ([`Page::click`]), takes screenshots ([`Page::screenshot`]) and collects
//! what the page logged ([`Page::console`]). Every request has a deadline, so
//! a test fails with a reason instead of hanging. Dropping a [`Browser`], also
//! while a test panics, kills Chromium's whole process group, reaps it and
//! removes its user-data dir.
//!
//! The client is a small hand-written one (JSON over one websocket, one task
//! routing responses and events) that knows only the few CDP methods above;
//! it is not a general automation library. Tests that need Chromium call
//! [`chromium_or_skip`] first, which skips them where Chromium is not
//! installed and fails them under CI.

mod browser;
mod chromium;
mod connection;
mod console;
mod error;
mod page;
mod process;

pub use browser::{Browser, LaunchOptions};
pub use chromium::{CHROMIUM_ENV, chromium_or_skip, chromium_path};
pub use error::BrowserError;
pub use page::Page;
