//! The UI's page in a real headless Chromium, fed by a real Hubble server
//! through the real backend: what it draws, how it filters, and how it
//! reports and survives a relay that goes away.

use std::{path::PathBuf, time::Duration};

use hubble_api::flow::Verdict;
use ui::testing::{DEADLINE, FlowSource, RunningUi, open, pod, syn};

/// Where a test's screenshots go: `target/tmp/hubble-ui/<test>/`.
fn shots(test: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hubble-ui")
        .join(test)
}

async fn screenshot(page: &browser::Page, test: &str, name: &str) -> anyhow::Result<()> {
    ui::testing::screenshot(page, &shots(test), name).await
}

/// Workload boxes of `cluster` that are visible.
fn visible_boxes(cluster: &str) -> String {
    format!(
        "window.cmui.cy.nodes().filter(n => !n.hasClass('region') && n.data('cluster') === '{cluster}' && n.visible()).length"
    )
}

#[tokio::test]
async fn an_empty_mesh_shows_a_hint_then_flows_draw_boxes_arrows_and_rows() -> anyhow::Result<()> {
    let test = "an_empty_mesh_shows_a_hint_then_flows_draw_boxes_arrows_and_rows";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("relay.sock");
    let source = FlowSource::start(&socket, 1023).await?;
    let ui = RunningUi::start(&[("c1", &socket)]).await?;
    let (_browser, page) = open(chromium, &ui.url).await?;

    page.wait_for(
        "the empty-state hint",
        "(() => { const e = document.querySelector('#empty-state'); return !!e && e.offsetParent !== null && e.textContent.length > 20; })()",
        DEADLINE,
    )
    .await?;
    page.wait_for(
        "no banner while the relay answers",
        "document.querySelector('#banner').offsetParent === null",
        DEADLINE,
    )
    .await?;
    screenshot(&page, test, "1-empty").await?;

    let (client, echo) = (
        pod("c1", "demo", "client", 1001),
        pod("c2", "demo", "echo", 2001),
    );
    let intruder = pod("c1", "demo", "intruder", 1002);
    source.push([
        syn(client.clone(), echo.clone(), 8080, Verdict::Forwarded),
        syn(intruder.clone(), echo.clone(), 8080, Verdict::Dropped),
    ]);
    page.wait_for(
        "boxes of both clusters and two arrows",
        &format!(
            "{} === 2 && {} === 1 && window.cmui.cy.edges().length === 2",
            visible_boxes("c1"),
            visible_boxes("c2")
        ),
        DEADLINE,
    )
    .await?;
    let verdicts: Vec<(String, String)> = page
        .eval("window.cmui.cy.edges().map(e => [e.data('source'), e.data('verdict')]).sort()")
        .await?;
    assert_eq!(
        verdicts,
        [
            ("c1/demo/client".to_string(), "forwarded".to_string()),
            ("c1/demo/intruder".to_string(), "dropped".to_string())
        ]
    );
    // Red is not the colour of a forwarded arrow.
    let colours: Vec<String> = page
        .eval("['forwarded','dropped'].map(v => window.cmui.cy.edges('.' + v)[0].style('line-color'))")
        .await?;
    assert_ne!(colours[0], colours[1]);
    // Both clusters are regions, and the arrow between them crosses.
    let regions: Vec<String> = page
        .eval("window.cmui.cy.nodes('.region').map(n => n.id()).filter(id => id.startsWith('cluster:')).sort()")
        .await?;
    assert_eq!(regions, ["cluster:c1", "cluster:c2"]);
    page.wait_for(
        "two rows, the drop with its reason",
        "document.querySelectorAll('#flows tbody tr.flow').length === 2 && \
         document.querySelector('#flows tbody tr.flow[data-verdict=\"DROPPED\"] td.drop-reason').textContent.includes('POLICY_DENIED')",
        DEADLINE,
    )
    .await?;
    page.wait_for(
        "the hint gone",
        "document.querySelector('#empty-state').offsetParent === null",
        DEADLINE,
    )
    .await?;
    screenshot(&page, test, "2-flows").await?;

    // The layout is stable: boxes already drawn stay where they are when
    // new ones arrive.
    let before: serde_json::Value = page
        .eval("Object.fromEntries(window.cmui.cy.nodes().filter(n => !n.hasClass('region')).map(n => [n.id(), n.position()]))")
        .await?;
    source.push((0..20).map(|i| {
        syn(
            pod(
                if i % 2 == 0 { "c1" } else { "c2" },
                "demo",
                &format!("app{i}"),
                3000 + i,
            ),
            echo.clone(),
            8080,
            Verdict::Forwarded,
        )
    }));
    page.wait_for(
        "23 boxes",
        "window.cmui.cy.nodes().filter(n => !n.hasClass('region')).length === 23",
        DEADLINE,
    )
    .await?;
    let after: serde_json::Value = page
        .eval("Object.fromEntries(window.cmui.cy.nodes().filter(n => !n.hasClass('region')).map(n => [n.id(), n.position()]))")
        .await?;
    for (id, position) in before.as_object().expect("positions") {
        assert_eq!(&after[id], position, "{id} moved when new boxes arrived");
    }
    screenshot(&page, test, "3-more").await?;
    assert!(
        !page.console().iter().any(|l| l.starts_with("error")),
        "{:?}",
        page.console()
    );
    ui.stop().await?;
    source.stop().await;
    Ok(())
}

#[tokio::test]
async fn filters_a_selection_and_pause_narrow_what_is_shown() -> anyhow::Result<()> {
    let test = "filters_a_selection_and_pause_narrow_what_is_shown";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("relay.sock");
    let source = FlowSource::start(&socket, 1023).await?;
    let (client1, client2) = (
        pod("c1", "demo", "client", 1001),
        pod("c2", "demo", "client", 2002),
    );
    let (echo1, echo2) = (
        pod("c1", "demo", "echo", 1003),
        pod("c2", "demo", "echo", 2001),
    );
    let db = pod("c2", "data", "db", 2004);
    source.push([
        syn(client1.clone(), echo2.clone(), 8080, Verdict::Forwarded),
        syn(client2.clone(), echo2.clone(), 8080, Verdict::Forwarded),
        syn(client1.clone(), echo1.clone(), 8080, Verdict::Forwarded),
        syn(client2.clone(), db.clone(), 5432, Verdict::Dropped),
    ]);
    let ui = RunningUi::start(&[("c1", &socket)]).await?;
    let (_browser, page) = open(chromium, &ui.url).await?;
    let rows = "document.querySelectorAll('#flows tbody tr.flow').length";
    let shown = "[...document.querySelectorAll('#flows tbody tr.flow')].filter(r => r.offsetParent !== null)";
    page.wait_for("4 rows", &format!("{rows} === 4"), DEADLINE)
        .await?;

    // The cluster filter: c2 unchecked hides c2's boxes, arrows touching
    // them and rows with an end in c2.
    page.click("input.cluster-toggle[value=\"c2\"]").await?;
    page.wait_for(
        "c2's boxes hidden, c1's shown",
        &format!(
            "{} === 0 && {} === 2",
            visible_boxes("c2"),
            visible_boxes("c1")
        ),
        DEADLINE,
    )
    .await?;
    let visible_rows: Vec<(String, String)> = page
        .eval(&format!(
            "{shown}.map(r => [r.dataset.clusterSource, r.dataset.clusterDestination])"
        ))
        .await?;
    assert_eq!(visible_rows, [("c1".to_string(), "c1".to_string())]);
    let edges: usize = page
        .eval("window.cmui.cy.edges().filter(e => e.visible()).length")
        .await?;
    assert_eq!(edges, 1);
    // c2's region and namespace blocks go with its boxes.
    let regions: Vec<String> = page
        .eval("window.cmui.cy.nodes('.region').filter(n => n.visible()).map(n => n.id()).sort()")
        .await?;
    assert_eq!(regions, ["cluster:c1", "ns:c1/demo"]);
    screenshot(&page, test, "1-cluster-filter").await?;
    page.click("input.cluster-toggle[value=\"c2\"]").await?;
    page.wait_for(
        "c2 back",
        &format!("{} === 3", visible_boxes("c2")),
        DEADLINE,
    )
    .await?;

    // The verdict filter.
    page.eval::<serde_json::Value>(
        "(() => { const s = document.querySelector('#filter-verdict'); s.value = 'DROPPED'; s.dispatchEvent(new Event('change', {bubbles: true})); })()",
    )
    .await?;
    page.wait_for(
        "only the drop shown",
        &format!("{shown}.length === 1 && {shown}[0].dataset.verdict === 'DROPPED'"),
        DEADLINE,
    )
    .await?;
    page.eval::<serde_json::Value>(
        "(() => { const s = document.querySelector('#filter-verdict'); s.value = ''; s.dispatchEvent(new Event('change', {bubbles: true})); })()",
    )
    .await?;
    page.wait_for("4 rows shown", &format!("{shown}.length === 4"), DEADLINE)
        .await?;

    // Clicking (tapping) a box shows only its flows.
    page.eval::<serde_json::Value>("void window.cmui.cy.getElementById('c2/data/db').emit('tap')")
        .await?;
    page.wait_for(
        "only db's flow",
        &format!("{shown}.length === 1 && {shown}[0].dataset.destination === 'c2/data/db'"),
        DEADLINE,
    )
    .await?;
    screenshot(&page, test, "2-selected-box").await?;
    page.click("#clear-selection").await?;
    page.wait_for("4 rows shown", &format!("{shown}.length === 4"), DEADLINE)
        .await?;

    // Pause keeps new rows back until resume.
    page.click("#pause").await?;
    page.wait_for(
        "paused",
        "document.querySelector('#pause').dataset.paused === 'true'",
        DEADLINE,
    )
    .await?;
    source.push([syn(
        client1.clone(),
        echo2.clone(),
        8080,
        Verdict::Forwarded,
    )]);
    // The map goes on: the arrow's count reaches 2 while the table waits.
    page.wait_for(
        "the arrow counted twice",
        "window.cmui.cy.getElementById('c1/demo/client>c2/demo/echo:8080/TCP').data('count') === 2",
        DEADLINE,
    )
    .await?;
    assert_eq!(
        page.eval::<usize>(rows).await?,
        4,
        "no new row while paused"
    );
    page.click("#pause").await?;
    page.wait_for("5 rows after resume", &format!("{rows} === 5"), DEADLINE)
        .await?;
    ui.stop().await?;
    source.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_relay_shows_why_and_the_page_follows_it_back() -> anyhow::Result<()> {
    let test = "an_unreachable_relay_shows_why_and_the_page_follows_it_back";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("relay.sock");
    // Nothing listens yet.
    let ui = RunningUi::start(&[("c1", &socket)]).await?;
    let (_browser, page) = open(chromium, &ui.url).await?;
    let banner = "document.querySelector('#banner')";
    page.wait_for(
        "a banner naming the relay, the reason and the retry",
        &format!(
            "{banner}.offsetParent !== null && {banner}.dataset.state === 'unreachable' && \
             {banner}.textContent.includes('Hubble Relay c1') && {banner}.textContent.includes('relay.sock') && \
             {banner}.textContent.includes('Retrying')"
        ),
        DEADLINE,
    )
    .await?;
    let text: String = page.eval(&format!("{banner}.textContent")).await?;
    eprintln!("banner: {text}");
    screenshot(&page, test, "1-unreachable").await?;

    // The relay comes: the banner goes and flows arrive.
    let source = FlowSource::start(&socket, 1023).await?;
    let (client, echo) = (
        pod("c1", "demo", "client", 1001),
        pod("c2", "demo", "echo", 2001),
    );
    source.push([syn(client.clone(), echo.clone(), 8080, Verdict::Forwarded)]);
    page.wait_for(
        "the banner gone and the flow shown",
        &format!("{banner}.offsetParent === null && document.querySelectorAll('#flows tbody tr.flow').length === 1"),
        Duration::from_secs(30),
    )
    .await?;

    // It restarts: flows written meanwhile arrive once, none twice.
    let buffer = source.stop().await;
    page.wait_for(
        "the banner back",
        &format!("{banner}.offsetParent !== null"),
        DEADLINE,
    )
    .await?;
    let source = FlowSource::serve(&socket, buffer).await?;
    source.push([
        syn(client.clone(), echo.clone(), 8080, Verdict::Forwarded),
        syn(client, echo, 8080, Verdict::Forwarded),
    ]);
    page.wait_for(
        "3 rows after the restart",
        &format!("{banner}.offsetParent === null && document.querySelectorAll('#flows tbody tr.flow').length === 3"),
        Duration::from_secs(30),
    )
    .await?;
    let count: u64 = page
        .eval("window.cmui.cy.getElementById('c1/demo/client>c2/demo/echo:8080/TCP').data('count')")
        .await?;
    assert_eq!(count, 3, "each flow counted once across the restart");
    screenshot(&page, test, "2-back").await?;
    ui.stop().await?;
    source.stop().await;
    Ok(())
}
