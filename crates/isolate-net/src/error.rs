//! The network set-up's errors, each naming what failed and what to do.

/// A failure of isolate's host networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A host operation (file, sysctl, lock) failed.
    #[error("network: cannot {action}")]
    Host {
        /// What isolate was doing.
        action: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("network: cannot {action} (netlink)")]
    Netlink {
        /// What isolate was doing.
        action: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// `nft` refused isolate's ruleset or could not be run.
    #[error("network: cannot load isolate's nftables table (`nft -f -`): {detail}; is the nftables package installed (apt-get install nftables)?")]
    Nft {
        /// nft's message.
        detail: String,
    },
    /// A published host port is in use on the host.
    #[error("cannot publish {publish}: host port {port}/{protocol} is already in use; choose another host port or stop what listens on it")]
    PortTaken {
        /// The `-p` value, as docker writes it.
        publish: String,
        /// The host port.
        port: u16,
        /// tcp or udp.
        protocol: &'static str,
    },
    /// Every candidate subnet clashes with a host route.
    #[error("network: no free private subnet for the isolate0 bridge (every candidate clashes with a host route); set ISOLATE_NET_SUBNET, e.g. 10.123.0.0/16")]
    NoFreeSubnet,
    /// `ISOLATE_NET_SUBNET` is not an IPv4 network.
    #[error("network: ISOLATE_NET_SUBNET={0:?} is not an IPv4 subnet; use e.g. 10.123.0.0/16 (prefix 8 to 29)")]
    BadSubnet(String),
    /// `ISOLATE_NET_SUBNET` differs from the subnet the bridge has.
    #[error("network: the isolate0 bridge is on {bridge}, not on ISOLATE_NET_SUBNET={wanted}; once no networked workload runs, remove it (ip link del isolate0) and the next run makes it on {wanted}")]
    SubnetChanged {
        /// The bridge's subnet.
        bridge: String,
        /// The one asked for.
        wanted: String,
    },
    /// Every address of the subnet is leased.
    #[error("network: every address of {0} is in use by a running workload; stop one or set a larger ISOLATE_NET_SUBNET")]
    NoFreeAddress(String),
}

impl NetError {
    pub(crate) fn host(action: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Host {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn netlink(action: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Netlink {
            action: action.into(),
            source,
        }
    }
}
