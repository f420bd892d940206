//! Two pod namespaces routed through a node namespace over veths: the
//! smallest topology where a datapath on the node's host-side veths sees
//! traffic between pods (throughput benchmarks).

use crate::{
    command::CommandError,
    name::unique_name,
    namespace::{NetNs, NetNsError},
    veth::Veth,
};

/// Creating the topology failed.
#[derive(Debug, thiserror::Error)]
pub enum RoutedPairError {
    #[error(transparent)]
    Namespace(#[from] NetNsError),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// `client` (10.210.1.2/24) ↔ `node` ↔ `server` (10.210.2.2/24), the node
/// forwarding between its ends of the two veths ([`Self::client_veth`],
/// [`Self::server_veth`]) and each pod routing through it. Everything is
/// deleted on drop.
#[derive(Debug)]
pub struct RoutedPair {
    // Dropped first: the veths, then the namespaces.
    client_link: Veth,
    server_link: Veth,
    pub node: NetNs,
    pub client: NetNs,
    pub server: NetNs,
}

impl RoutedPair {
    /// The client's address.
    pub const CLIENT_ADDR: &str = "10.210.1.2";
    /// The server's address.
    pub const SERVER_ADDR: &str = "10.210.2.2";

    pub fn create() -> Result<Self, RoutedPairError> {
        let node = NetNs::unique("cmbn")?;
        node.enable_forwarding()?;
        let client = NetNs::unique("cmbc")?;
        let server = NetNs::unique("cmbs")?;
        let (hc, hs) = (unique_name("hc"), unique_name("hs"));
        let client_link = Veth::create(&hc, Some(&node), "eth0", Some(&client))?;
        let server_link = Veth::create(&hs, Some(&node), "eth0", Some(&server))?;
        node.add_addr(&hc, "10.210.1.1/24")?.keep();
        node.add_addr(&hs, "10.210.2.1/24")?.keep();
        client.add_addr("eth0", "10.210.1.2/24")?.keep();
        server.add_addr("eth0", "10.210.2.2/24")?.keep();
        client
            .add_route("default", Some("10.210.1.1"), None)?
            .keep();
        server
            .add_route("default", Some("10.210.2.1"), None)?
            .keep();
        Ok(Self {
            client_link,
            server_link,
            node,
            client,
            server,
        })
    }

    /// The node's end of the client's veth (in [`Self::node`]).
    pub fn client_veth(&self) -> &str {
        self.client_link.name_a()
    }

    /// The node's end of the server's veth (in [`Self::node`]).
    pub fn server_veth(&self) -> &str {
        self.server_link.name_a()
    }
}
