//! Kernel tests of the netns toolkit: namespaces, veths, addresses, routes,
//! processes and closures inside namespaces; everything gone after drop.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::fs::MetadataExt,
    path::Path,
    time::Duration,
};

use anyhow::Result;
use netns::{NetNs, NetNsGuard, Veth, run_in, skip_unless_root, unique_name};

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

#[test]
fn veth_between_namespaces_carries_ping_and_tcp() -> Result<()> {
    skip_unless_root!(Ok(()));
    let a = NetNs::unique("nta")?;
    let b = NetNs::unique("ntb")?;
    let (name_a, name_b) = (unique_name("va"), unique_name("vb"));
    let _veth = Veth::create(&name_a, Some(&a), &name_b, Some(&b))?;
    let _a4 = a.add_addr(&name_a, "10.201.0.1/24")?;
    let _b4 = b.add_addr(&name_b, "10.201.0.2/24")?;
    let _a6 = a.add_addr(&name_a, "fd00:201::1/64")?;
    let _b6 = b.add_addr(&name_b, "fd00:201::2/64")?;

    a.run("ping", &["-c", "1", "-W", "2", "10.201.0.2"])?;
    a.run("ping", &["-c", "1", "-W", "2", "fd00:201::2"])?;

    // a listener created inside b keeps serving from this thread
    let listener = b.enter(|| TcpListener::bind("10.201.0.2:0"))??;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.write_all(b"hello")
    });
    let mut stream = a.enter(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))??;
    let mut got = String::new();
    stream.read_to_string(&mut got)?;
    assert_eq!(got, "hello");
    server.join().expect("server thread")?;
    Ok(())
}

#[test]
fn routes_and_forwarding_between_two_links() -> Result<()> {
    skip_unless_root!(Ok(()));
    let router = NetNs::unique("ntr")?;
    let left = NetNs::unique("ntl")?;
    let right = NetNs::unique("ntr")?;
    router.enable_forwarding()?;
    let (l_host, r_host) = (unique_name("hl"), unique_name("hr"));
    let _l = Veth::create(&l_host, Some(&router), "eth0", Some(&left))?;
    let _r = Veth::create(&r_host, Some(&router), "eth0", Some(&right))?;
    let _a = router.add_addr(&l_host, "10.202.1.1/24")?;
    let _b = router.add_addr(&r_host, "10.202.2.1/24")?;
    let _c = left.add_addr("eth0", "10.202.1.2/24")?;
    let _d = right.add_addr("eth0", "10.202.2.2/24")?;
    let route = left.add_route("default", Some("10.202.1.1"), None)?;
    right
        .add_route("default", Some("10.202.1.1"), Some("eth0"))
        .expect_err("gateway not on link");
    right.add_route("default", Some("10.202.2.1"), None)?.keep();
    left.run("ping", &["-c", "1", "-W", "2", "10.202.2.2"])?;
    drop(route);
    let out = left.exec("ping", &["-c", "1", "-W", "1", "10.202.2.2"])?;
    assert!(!out.status.success(), "route removed on drop");
    assert!(router.ifindex(&l_host)? > 1);
    Ok(())
}

/// The inode of a namespace file: the same for every handle of one namespace.
fn ns_inode(path: impl AsRef<Path>) -> std::io::Result<u64> {
    std::fs::metadata(path).map(|m| m.ino())
}

#[test]
fn guard_returns_the_thread_and_run_in_joins_on_its_own_thread() -> Result<()> {
    skip_unless_root!(Ok(()));
    let ns = NetNs::unique("ntg")?;
    let own = "/proc/thread-self/ns/net";
    let (here, there) = (ns_inode(own)?, ns_inode(ns.path())?);
    assert_ne!(here, there);
    {
        let _guard = NetNsGuard::enter(ns.path())?;
        assert_eq!(ns_inode(own)?, there);
    }
    assert_eq!(ns_inode(own)?, here, "back after the guard dropped");
    assert_eq!(run_in(ns.path(), || ns_inode(own))??, there);
    assert_eq!(
        ns_inode(own)?,
        here,
        "run_in leaves the caller's thread alone"
    );
    assert!(run_in(Path::new("/run/netns/no-such-namespace"), || ()).is_err());
    Ok(())
}

#[test]
fn namespace_removed_on_drop_even_on_panic() -> Result<()> {
    skip_unless_root!(Ok(()));
    let name = unique_name("ntp");
    let inner = name.clone();
    let result = std::panic::catch_unwind(move || {
        let _ns = NetNs::new(&inner).expect("create");
        assert!(netns_exists(&inner));
        panic!("test failure inside");
    });
    assert!(result.is_err());
    assert!(!netns_exists(&name));
    Ok(())
}

#[test]
fn spawned_process_killed_on_drop_and_errors_carry_stderr() -> Result<()> {
    skip_unless_root!(Ok(()));
    let ns = NetNs::unique("nts")?;
    let sleeper = ns.spawn("sleep", &["30"])?;
    let pid = sleeper.id();
    drop(sleeper);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    let error = ns
        .ip(&["link", "set", "nope0", "up"])
        .expect_err("no such device");
    let message = error.to_string();
    assert!(message.contains("ip -n"), "{message}");
    assert!(!error.stderr().is_empty(), "{message}");

    let done = ns.spawn("sh", &["-c", "echo out; echo err >&2"])?;
    let output = done.wait_timeout(Duration::from_secs(5))?;
    assert!(output.status.success());
    assert_eq!(output.stdout.trim(), "out");
    assert_eq!(output.stderr.trim(), "err");
    Ok(())
}
