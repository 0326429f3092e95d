//! Outbound connections for a sandbox that asks for them, through `pasta` (Debian's `passt`):
//! a user-mode helper that owns a tap device inside the sandbox's network namespace and makes
//! each of the sandbox's TCP/UDP flows as an ordinary socket on the host.
//!
//! Why pasta rather than a veth pair with NAT: nothing on the host changes (no forwarding
//! sysctl, no firewall rules, no routes), the helper's own seccomp filter and empty root
//! confine it, and it is started only for the sandboxes that need it.
//!
//! What stays unreachable: the host's loopback (`--no-map-gw`: the gateway address is not
//! translated to the host's 127.0.0.1), the sandbox's copy of the host's address (it is local
//! inside the namespace), and every other sandbox (each has its own namespace and no listener
//! reachable from outside). No port of the host is forwarded into the sandbox or out of it.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::sys;

/// Where sandboxes with outbound access send DNS queries; pasta forwards them to the host's
/// first resolver. A link-local address: never a real host on any network.
pub const DNS_FORWARD_ADDR: &str = "169.254.1.1";

/// A running pasta for one sandbox. Dropping it stops it.
#[derive(Debug)]
pub(crate) struct NetworkHelper {
    child: Child,
}

impl NetworkHelper {
    /// Starts pasta on the network namespace `netns` (an open `/proc/<pid>/ns/net`) and waits
    /// until the namespace's interface, address and routes are set up.
    pub(crate) fn start(helper_path: &Path, netns: OwnedFd, timeout: Duration) -> io::Result<Self> {
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut cmd = Command::new(helper_path);
        // pasta drops to "nobody" unless told otherwise, and as nobody it may not join a
        // namespace the host's root made. It keeps only the capabilities it needs to join and
        // configure the namespace, then confines itself (empty root, seccomp) before relaying.
        cmd.args(["--quiet", "--foreground", "--runas", "0:0"])
            // The namespace arrives as stdin: the helper needs no access to our /proc entries.
            .args(["--netns", "/proc/self/fd/0"])
            .args(["--no-map-gw", "--config-net"])
            .args(["--tcp-ports", "none", "--udp-ports", "none"])
            .args(["--tcp-ns", "none", "--udp-ns", "none"])
            .args(["--dns-forward", DNS_FORWARD_ADDR])
            // pasta writes its pid file only once the namespace is configured: that is our
            // readiness signal, through a pipe.
            .args(["--pid", "/proc/self/fd/1"])
            .env_clear()
            .stdin(Stdio::from(netns))
            .stdout(Stdio::from(ready_w))
            // Not a pipe: nobody would drain it over the sandbox's life.
            .stderr(Stdio::null());
        sys::die_with_parent_thread(&mut cmd);
        let child = cmd.spawn()?;
        drop(cmd);
        let mut helper = Self { child };
        let mut ready = std::fs::File::from(ready_r);
        let mut line = [0u8; 32];
        if sys::wait_readable(ready.as_fd(), timeout) {
            if let Ok(n) = ready.read(&mut line) {
                if n > 0 {
                    return Ok(helper);
                }
            }
        }
        let exited = helper.child.try_wait().ok().flatten();
        let _ = helper.child.kill();
        let _ = helper.child.wait();
        Err(io::Error::other(match exited {
            Some(status) => format!(
                "the network helper {} failed ({status})",
                helper_path.display()
            ),
            None => format!(
                "the network helper {} was not ready within {timeout:?}",
                helper_path.display()
            ),
        }))
    }
}

impl Drop for NetworkHelper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
