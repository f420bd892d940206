//! The Hubble UI of a real local mesh in a real headless Chromium: real
//! packets between the clusters' pods become boxes, arrows and rows; a
//! policy drop turns its arrow red; the cluster filter hides a cluster; the
//! global services panel follows a failover and the failback; the page
//! follows the relays through a restart. Screenshots of every step go to
//! `target/tmp/hubble-ui/<test>/`.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use browser::{Browser, LaunchOptions, Page};
use integration::{DEADLINE, TestMesh, can_run, echo_admits_local_clients, wait_for};

const TEST: &str = "the_ui_maps_the_mesh_and_follows_drops_filters_failover_and_relays";

/// The page, driven from a test thread that also drives the mesh (which
/// has blocking calls of its own): every browser step is one `block_on`.
struct Ui {
    rt: tokio::runtime::Runtime,
    page: Page,
    _browser: Browser,
    shots: PathBuf,
}

impl Ui {
    fn open(chromium: PathBuf, url: &str) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let browser = rt.block_on(Browser::launch(LaunchOptions {
            chromium,
            width: 1600,
            height: 1000,
        }))?;
        let page = rt.block_on(browser.new_page())?;
        rt.block_on(page.goto(url))?;
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("hubble-ui")
            .join(TEST);
        let ui = Self {
            rt,
            page,
            _browser: browser,
            shots,
        };
        ui.wait(
            "the page to connect",
            "!!(window.cmui && window.cmui.connected)",
        )?;
        Ok(ui)
    }

    fn eval<T: serde::de::DeserializeOwned>(&self, js: &str) -> anyhow::Result<T> {
        Ok(self.rt.block_on(self.page.eval(js))?)
    }

    fn is(&self, js: &str) -> bool {
        self.eval::<bool>(js).unwrap_or(false)
    }

    fn wait(&self, what: &str, js: &str) -> anyhow::Result<()> {
        Ok(self.rt.block_on(self.page.wait_for(what, js, DEADLINE))?)
    }

    fn click(&self, selector: &str) -> anyhow::Result<()> {
        Ok(self.rt.block_on(self.page.click(selector))?)
    }

    fn shot(&self, name: &str) -> anyhow::Result<()> {
        let path = self.shots.join(format!("{name}.png"));
        self.rt.block_on(self.page.screenshot(&path))?;
        eprintln!("screenshot: {}", path.display());
        Ok(())
    }
}

/// The arrow from c1's client to c2's echo: `js` of it (`e`), or false.
fn client_to_echo(js: &str) -> String {
    format!(
        "(() => {{ const e = window.cmui.cy.edges().filter(e => e.data('source') === 'c1/demo/client' && e.data('target') === 'c2/demo/echo')[0]; return !!e && ({js}); }})()"
    )
}

/// The `.view` of cluster `viewer` for the global service demo/echo.
fn service_view(viewer: &str, js: &str) -> String {
    format!(
        "(() => {{ const v = document.querySelector('#services .service[data-name=\"demo/echo\"] .view[data-cluster=\"{viewer}\"]'); return !!v && ({js}); }})()"
    )
}

#[test]
fn the_ui_maps_the_mesh_and_follows_drops_filters_failover_and_relays() -> anyhow::Result<()> {
    if !can_run(TEST) {
        return Ok(());
    }
    let Some(chromium) = browser::chromium_or_skip(TEST) else {
        return Ok(());
    };
    let mut mesh = TestMesh::up(2, 1)?;
    let url = mesh
        .state
        .hubble_ui
        .clone()
        .context("up records the Hubble UI's URL in mesh.json")?;
    let ui = Ui::open(chromium, &url)?;
    let echo = mesh.echo_addr("c2", "echo-n1");

    // A cross-cluster request: boxes in both clusters, a forwarded arrow.
    wait_for("c1's client reaches c2's echo", || {
        mesh.reaches("c1", "client", echo)
    });
    ui.wait(
        "the c1 client -> c2 echo arrow, forwarded",
        &client_to_echo("e.data('verdict') === 'forwarded'"),
    )?;
    for cluster in ["c1", "c2"] {
        let boxes: usize = ui.eval(&format!(
            "window.cmui.cy.nodes().filter(n => !n.hasClass('region') && n.data('cluster') === '{cluster}' && n.data('kind') === 'workload').length"
        ))?;
        assert!(boxes >= 1, "workloads of {cluster} on the map");
    }
    ui.shot("1-cross-cluster")?;

    // The same request denied by a policy: the arrow turns red once its
    // recent requests are all dropped, and the table shows the reason.
    let policy = echo_admits_local_clients();
    mesh.apply_policy("c2", &policy)?;
    wait_for("c1's client denied", || mesh.denied("c1", "client", echo));
    let started = Instant::now();
    loop {
        // More denied attempts, until the arrow's recent requests are all drops.
        let _ = mesh.denied("c1", "client", echo);
        if ui.is(&client_to_echo("e.data('verdict') === 'dropped'")) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the arrow did not turn red within {DEADLINE:?}"
        );
    }
    let colours: (String, String) = ui.eval(
        "[window.cmui.cy.edges('.dropped')[0].style('line-color'), getComputedStyle(document.body).color]",
    )?;
    eprintln!("dropped arrow colour: {}", colours.0);
    ui.wait(
        "a DROPPED row from c1 with POLICY_DENIED",
        "[...document.querySelectorAll('#flows tbody tr.flow[data-verdict=\"DROPPED\"]')].some(r => \
           r.dataset.clusterSource === 'c1' && r.dataset.clusterDestination === 'c2' && \
           r.querySelector('td.drop-reason').textContent.includes('POLICY_DENIED'))",
    )?;
    ui.shot("2-policy-drop")?;

    // The cluster filter hides c2 and every arrow into it.
    ui.click("input.cluster-toggle[value=\"c2\"]")?;
    ui.wait(
        "c2 hidden, c1 shown",
        "window.cmui.cy.nodes().filter(n => !n.hasClass('region') && n.data('cluster') === 'c2' && n.visible()).length === 0 && \
         window.cmui.cy.nodes().filter(n => !n.hasClass('region') && n.data('cluster') === 'c1' && n.visible()).length > 0",
    )?;
    assert!(
        !ui.is(&client_to_echo("e.visible()")),
        "the arrow into c2 is hidden"
    );
    ui.shot("3-cluster-filter")?;
    ui.click("input.cluster-toggle[value=\"c2\"]")?;
    ui.wait("the arrow into c2 back", &client_to_echo("e.visible()"))?;

    // The global services panel: c1 serves itself, fails over to c2 when
    // its backend goes, and comes back when one returns.
    ui.wait(
        "c1 serving demo/echo locally",
        &service_view(
            "c1",
            "v.dataset.active === 'c1' && v.dataset.mode === 'local'",
        ),
    )?;
    mesh.remove_endpoint("c1", "echo-n1")?;
    ui.wait(
        "c1 failing over to c2",
        &service_view(
            "c1",
            "v.dataset.active.split(',').includes('c2') && v.dataset.mode === 'failover'",
        ),
    )?;
    ui.shot("4-failover")?;
    mesh.add_endpoint(
        "c1",
        "n1",
        "echo-back",
        &[("app", "echo")],
        Some(localmesh::ECHO_PORT),
    )?;
    ui.wait(
        "c1 serving locally again",
        &service_view(
            "c1",
            "v.dataset.active === 'c1' && v.dataset.mode === 'local'",
        ),
    )?;
    ui.shot("5-failback")?;

    // Both relays stop: the banner says so; one returns: the page follows
    // it and new flows arrive.
    let rows_before: u64 = ui.eval("Math.max(0, ...[...document.querySelectorAll('#flows tbody tr.flow')].map(r => +r.dataset.seq))")?;
    mesh.stop_relay("c1")?;
    mesh.stop_relay("c2")?;
    ui.wait(
        "the unreachable-relay banner",
        "(() => { const b = document.querySelector('#banner'); return b.offsetParent !== null && b.textContent.includes('Hubble Relay'); })()",
    )?;
    ui.shot("6-relays-down")?;
    mesh.start_relay("c2")?;
    let echo1 = mesh.echo_addr("c1", "echo-back");
    let started = Instant::now();
    loop {
        let _ = mesh.reaches("c1", "client", echo1);
        if ui.is(&format!(
            "document.querySelector('#banner').offsetParent === null && \
             [...document.querySelectorAll('#flows tbody tr.flow')].some(r => +r.dataset.seq > {rows_before})"
        )) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the page did not follow the relay back within {DEADLINE:?}"
        );
    }
    ui.shot("7-relay-back")?;
    mesh.start_relay("c1")?;
    let console = ui.rt.block_on(async { ui.page.console() });
    assert!(
        !console.iter().any(|l| l.starts_with("error: Uncaught")),
        "{console:?}"
    );
    Ok(())
}
