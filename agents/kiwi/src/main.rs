//! `kiwi`: the Kowabunga network node agent. All behaviour lives in the libraries; this
//! binary names the role, lists its reconcilers in the order they apply, its Kahuna RPC
//! methods and its services.

use std::process::ExitCode;

use kowabunga_agent::push::PipelinePusher;
use kowabunga_agent::role::{Role, RoleContext};
use kowabunga_dhcp::{DhcpReconciler, DhcpServer};
use kowabunga_dns::{DnsReconciler, DnsServer, KiwiService};
use kowabunga_firewall::{Baseline, FirewallReconciler, NetbootPorts};
use kowabunga_ipsec::IpsecReconciler;
use kowabunga_model::{DynReconciler, Supervised, erase};
use kowabunga_netboot::{NetbootReconciler, NetbootServer};
use kowabunga_network::NetworkReconciler;
use kowabunga_vrrp::VrrpReconciler;
use kowabunga_wireguard::{TunnelWatch, WireguardReconciler};

struct Kiwi {
    dns: DnsServer,
    dhcp: DhcpServer,
    tunnels: TunnelWatch,
    netboot: NetbootServer,
}

impl Role for Kiwi {
    const NAME: &'static str = "kiwi";
    const KIND: &'static str = "Kiwi";
    const STATUS_PORT: u16 = 9721;
    type Rpc = KiwiService<PipelinePusher>;

    /// Links and addresses first, so the firewall can name them, WireGuard and IPsec
    /// set the tunnels among them, keepalived hold VIPs on them and DNS and DHCP bind
    /// them; netboot last, since it boots nodes through DHCP's answers. DHCP keeps its
    /// leases under the state directory (`dhcp/leases.json`), keepalived's,
    /// conntrackd's and strongSwan's files are `daemons/keepalived.conf`,
    /// `daemons/conntrackd.conf` and `daemons/swanctl.conf` (the image's units read them
    /// there); the WireGuard keys are under `wireguard/` (0700), the netboot images
    /// under `netboot/images/`.
    fn reconcilers(&self, context: &RoleContext) -> Result<Vec<Box<dyn DynReconciler>>, String> {
        let network = NetworkReconciler::with_state_dir(context.state_dir.join("network"))
            .map_err(|e| e.to_string())?;
        self.dhcp.set_state_dir(context.state_dir.join("dhcp"));
        self.netboot.set_store(
            context.state_dir.join("netboot/images"),
            context.signed.clone(),
        );
        Ok(vec![
            erase(network),
            // Closed until the document opens it: with no [firewall], the baseline,
            // DHCP opened on the links [dhcp] serves, VRRP on the links [vrrp] runs on,
            // conntrackd's sync on the link [vrrp.conntrack_sync] names, netboot's
            // HTTP on the links [dhcp] serves when [netboot] boots nodes.
            erase(
                FirewallReconciler::new()
                    .map_err(|e| e.to_string())?
                    .with_baseline(Baseline::kiwi(
                        kowabunga_dhcp::model::served_links,
                        kowabunga_vrrp::model::vrrp_links,
                        kowabunga_vrrp::model::conntrack_sync_links,
                        NetbootPorts {
                            http: kowabunga_netboot::HTTP_PORT,
                            tftp: kowabunga_netboot::tftp::TFTP_PORT,
                            links: kowabunga_netboot::model::netboot_links,
                        },
                    )),
            ),
            erase(WireguardReconciler::new(
                context.state_dir.join("wireguard"),
            )),
            erase(IpsecReconciler::new(context.state_dir.join("daemons"))),
            erase(VrrpReconciler::new(context.state_dir.join("daemons"))),
            erase(DnsReconciler::new(self.dns.clone())),
            erase(DhcpReconciler::new(self.dhcp.clone())),
            erase(NetbootReconciler::new(self.netboot.clone())),
        ])
    }

    /// `Kiwi.*` DNS methods: pushed `dns` state, applied through the pipeline.
    fn rpc(&self, _context: &RoleContext, pusher: PipelinePusher) -> Self::Rpc {
        KiwiService::new(self.dns.clone(), pusher)
    }

    /// The DNS listeners and the DHCP links' serving threads (bound and re-bound by
    /// their reconcilers), restarted by the core when one fails, the WireGuard
    /// tunnels' watcher (`/status`: each peer's last handshake) and the netboot server
    /// (its HTTP listener and image store).
    fn services(&self, _context: &RoleContext, _pusher: PipelinePusher) -> Vec<Supervised> {
        vec![
            self.dns.supervised(),
            self.dhcp.supervised(),
            self.tunnels.supervised(),
            self.netboot.supervised(),
        ]
    }
}

fn main() -> ExitCode {
    let dhcp = DhcpServer::new();
    let leases = dhcp.clone();
    let netboot = NetbootServer::new(move |mac| leases.address_of(mac));
    dhcp.set_boot_directory(std::sync::Arc::new(netboot.clone()));
    kowabunga_agent::cli::main(Kiwi {
        dns: DnsServer::new(),
        dhcp,
        tunnels: TunnelWatch::new(),
        netboot,
    })
}
