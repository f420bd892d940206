use std::{
    collections::HashSet,
    net::{Ipv4Addr, TcpListener},
    sync::{LazyLock, Mutex},
};

/// Every port handed out in this process: the kernel may give a port that
/// was handed out but not bound yet to the next caller (with hundreds of
/// servers starting at once, two of them would share a port).
/// Ports remembered at most (a quarter of Linux's ephemeral range).
const FORGET_AFTER: usize = 7_000;

static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Mutex::default);

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and closing the listener, so another
/// process may take it before the caller binds it; callers that start servers
/// retry on "address in use" (as [`crate::TestEtcd::start`] does).
///
/// A port is never handed out twice in one process.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        let mut handed_out = HANDED_OUT.lock().expect("ports");
        if handed_out.len() > FORGET_AFTER {
            // Long since bound, or given up: the range must not run dry.
            handed_out.clear();
        }
        if handed_out.insert(port) {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::free_port;

    #[test]
    fn no_port_is_handed_out_twice() {
        let ports: Vec<u16> = (0..2_000).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
