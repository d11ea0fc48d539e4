//! Network namespaces for partitions: one namespace per process, each with a veth pair into
//! a bridge in the caller's own namespace (which holds the bridge's address, so the caller
//! reaches every process). A member is partitioned by an nftables table in its namespace
//! that drops everything except loopback and the caller's address; deleting the table heals
//! it. Everything is removed when the [`Net`] is dropped. Used by the chaos harness and by
//! `tests/partition.rs`.
//!
//! Needs root (`ip netns`, `nft`).

use std::process::Command;

/// A bridge and `members` network namespaces attached to it.
pub struct Net {
    tag: String,
    subnet: String,
    members: usize,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether this process may create network namespaces (it runs as root, with `ip` and
/// `nft`); the reason when it may not.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("partition tests need root to create network namespaces".into());
    }
    for tool in ["ip", "nft"] {
        run(&["sh", "-c", &format!("command -v {tool}")])
            .map_err(|_| format!("partition tests need `{tool}` (iproute2, nftables)"))?;
    }
    Ok(())
}

impl Net {
    /// A bridge with `members` namespaces; member `i` has address `<subnet>.<i + 1>`, the
    /// test `<subnet>.254`.
    pub fn new(members: usize) -> Result<Net, String> {
        let pid = std::process::id();
        let net = Net {
            tag: format!("lbw{}", pid % 100_000),
            subnet: format!("10.251.{}", pid % 250),
            members,
        };
        let br = net.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}.254/24", net.subnet),
            "dev",
            &br,
        ])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for i in 0..members {
            let (ns, host, inner) = (net.ns(i), format!("{}h{i}", net.tag), net.inner(i));
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &inner,
            ])?;
            run(&["ip", "link", "set", &inner, "netns", &ns])?;
            run(&["ip", "link", "set", &host, "master", &br])?;
            run(&["ip", "link", "set", &host, "up"])?;
            let addr = format!("{}/24", net.addr(i));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn inner(&self, i: usize) -> String {
        format!("{}i{i}", self.tag)
    }

    /// Member `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// The program and leading arguments that run `binary` inside member `i`'s namespace.
    pub fn wrap(&self, i: usize, binary: &std::path::Path) -> (String, Vec<std::ffi::OsString>) {
        let args = [
            "netns".into(),
            "exec".into(),
            self.ns(i).into(),
            binary.into(),
        ];
        ("ip".to_string(), args.to_vec())
    }

    /// `binary` run inside member `i`'s namespace (add its arguments).
    pub fn command(&self, i: usize, binary: &str) -> Command {
        let (program, args) = self.wrap(i, std::path::Path::new(binary));
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    }

    /// Cut member `i` off from every other member (silently dropped packets, both ways);
    /// the test's own address still reaches it.
    pub fn partition(&self, i: usize) -> Result<(), String> {
        let me = format!("{}.254", self.subnet);
        let rules = format!(
            "table inet partition {{\n\
             chain input {{ type filter hook input priority 0; policy drop; iifname \"lo\" accept; ip saddr {me} accept; }}\n\
             chain output {{ type filter hook output priority 0; policy drop; oifname \"lo\" accept; ip daddr {me} accept; }}\n\
             }}\n"
        );
        let path = std::env::temp_dir().join(format!("{}-partition-{i}.nft", self.tag));
        std::fs::write(&path, rules).map_err(|e| e.to_string())?;
        let file = path.to_string_lossy().to_string();
        run(&["ip", "netns", "exec", &self.ns(i), "nft", "-f", &file])
    }

    /// Undo [`Net::partition`] of member `i`.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns(i),
            "nft",
            "delete",
            "table",
            "inet",
            "partition",
        ])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.members {
            let _ = run(&["ip", "netns", "delete", &self.ns(i)]);
        }
        let _ = run(&["ip", "link", "delete", &self.bridge()]);
    }
}
