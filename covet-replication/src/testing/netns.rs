//! Network namespaces for a [`LocalCluster`](super::LocalCluster): each node in one of its own,
//! all on one bridge with the test process, so that a test can cut or thin out any link with
//! nftables (issue 14: faults of the network, not of the servers).
//!
//! Node `i` listens on `10.X.Y.(10 + i)`; the test process (the application) reaches the nodes
//! from the bridge's address `10.X.Y.1`. Faults are nftables rules in the nodes' namespaces, so
//! the application's own namespace is never touched. The harness administers the servers over
//! Unix sockets, which no network fault reaches.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::ClusterError;
use crate::core::lock;

/// One end of a network link of a namespaced cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// The test process: the application and the handles it opens.
    App,
    /// The node of this index.
    Node(usize),
}

/// What a cut link does with its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Dropped without a word: a TCP connection waits out its retransmissions and timeouts,
    /// as behind a dead switch or a firewall that drops.
    Blackhole,
    /// Refused: a TCP reset (ICMP unreachable for other packets), so the peer knows at once.
    Reject,
}

const PREFIX: &str = "covet-";

/// The namespaces and bridge of one cluster; removed on drop.
pub(crate) struct Network {
    /// `<pid>-<seq>`: names the namespaces, and lets a later process remove them if ours died.
    tag: String,
    bridge: String,
    subnet: (u8, u8),
    nodes: usize,
    faults: Mutex<Faults>,
}

#[derive(Default)]
struct Faults {
    /// Cut links, each once with its lower end first.
    cuts: BTreeMap<(Endpoint, Endpoint), Cut>,
    /// Per node: the percentage of its packets to and from the application dropped.
    loss: BTreeMap<usize, u8>,
}

impl Network {
    /// Creates a namespace per node, a bridge in ours, and a veth pair joining each to it.
    pub(crate) fn create(nodes: usize) -> Result<Self, ClusterError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let subnet = free_subnet(pid, seq)?;
        let network = Self {
            tag: format!("{pid}-{seq}"),
            bridge: format!("cv{pid}b{seq}"),
            subnet,
            nodes,
            faults: Mutex::new(Faults::default()),
        };
        // Dropped on a failure half-way: what was made is removed.
        network.build()?;
        Ok(network)
    }

    fn build(&self) -> Result<(), ClusterError> {
        let app = format!("{}/24", self.app_address());
        run("ip", &["link", "add", &self.bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &app, "dev", &self.bridge])?;
        run("ip", &["link", "set", &self.bridge, "up"])?;
        for i in 0..self.nodes {
            let ns = self.namespace(i);
            let (outer, inner) = self.veth(i);
            let address = format!("{}/24", self.host(i));
            run("ip", &["netns", "add", &ns])?;
            run("ip", &["link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
            run("ip", &["link", "set", &inner, "netns", &ns])?;
            run("ip", &["link", "set", &outer, "master", &self.bridge, "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", &ns, "addr", "add", &address, "dev", &inner])?;
            run("ip", &["-n", &ns, "link", "set", &inner, "up"])?;
        }
        Ok(())
    }

    /// The address node `i` listens on.
    pub(crate) fn host(&self, i: usize) -> String {
        let (x, y) = self.subnet;
        format!("10.{x}.{y}.{}", 10 + i)
    }

    /// The application's address, as the nodes see it.
    pub(crate) fn app_address(&self) -> String {
        let (x, y) = self.subnet;
        format!("10.{x}.{y}.1")
    }

    /// The subnet, for `pg_hba.conf`.
    pub(crate) fn cidr(&self) -> String {
        let (x, y) = self.subnet;
        format!("10.{x}.{y}.0/24")
    }

    /// The namespace file a process enters (`setns`) to run in node `i`'s namespace.
    pub(crate) fn namespace_path(&self, i: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(self.namespace(i))
    }

    fn namespace(&self, i: usize) -> String {
        format!("{PREFIX}{}-n{i}", self.tag)
    }

    fn veth(&self, i: usize) -> (String, String) {
        let (pid, seq) = self.tag.split_once('-').unwrap_or((&self.tag, ""));
        (format!("cv{pid}v{seq}.{i}"), format!("cv{pid}p{seq}.{i}"))
    }

    fn address(&self, end: Endpoint) -> String {
        match end {
            Endpoint::App => self.app_address(),
            Endpoint::Node(i) => self.host(i),
        }
    }

    fn check(&self, end: Endpoint) -> Result<(), ClusterError> {
        match end {
            Endpoint::Node(node) if node >= self.nodes => Err(ClusterError::UnknownNode {
                node,
                count: self.nodes,
            }),
            _ => Ok(()),
        }
    }

    /// Cuts the link between `a` and `b` (both directions).
    pub(crate) fn cut(&self, a: Endpoint, b: Endpoint, how: Cut) -> Result<(), ClusterError> {
        self.check(a)?;
        self.check(b)?;
        if a == b {
            return Ok(());
        }
        lock(&self.faults).cuts.insert((a.min(b), a.max(b)), how);
        self.apply_ends(a, b)
    }

    /// Restores the link between `a` and `b`.
    pub(crate) fn heal(&self, a: Endpoint, b: Endpoint) -> Result<(), ClusterError> {
        self.check(a)?;
        self.check(b)?;
        lock(&self.faults).cuts.remove(&(a.min(b), a.max(b)));
        self.apply_ends(a, b)
    }

    /// Drops `percent` of the packets between the application and node `i` (0 restores it).
    pub(crate) fn set_loss(&self, i: usize, percent: u8) -> Result<(), ClusterError> {
        self.check(Endpoint::Node(i))?;
        let mut faults = lock(&self.faults);
        match percent.min(100) {
            0 => faults.loss.remove(&i),
            p => faults.loss.insert(i, p),
        };
        drop(faults);
        self.apply(i)
    }

    /// Restores every link.
    pub(crate) fn heal_all(&self) -> Result<(), ClusterError> {
        *lock(&self.faults) = Faults::default();
        (0..self.nodes).try_for_each(|i| self.apply(i))
    }

    fn apply_ends(&self, a: Endpoint, b: Endpoint) -> Result<(), ClusterError> {
        for end in [a, b] {
            if let Endpoint::Node(i) = end {
                self.apply(i)?;
            }
        }
        Ok(())
    }

    /// Replaces node `i`'s ruleset with what the faults say, in one nftables transaction.
    fn apply(&self, i: usize) -> Result<(), ClusterError> {
        let rules = self.rules(i);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.namespace(i), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| tool_error("nft", format!("could not start: {e}"), String::new()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .map_err(ClusterError::io("writing nftables rules"))?;
        }
        let out = child.wait_with_output().map_err(ClusterError::io("waiting for nft"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            return Err(tool_error("nft", out.status.to_string(), format!("{stderr}\n{rules}")));
        }
        Ok(())
    }

    /// Node `i`'s nftables ruleset.
    fn rules(&self, i: usize) -> String {
        let faults = lock(&self.faults);
        let me = Endpoint::Node(i);
        let mut input = String::new();
        let mut output = String::new();
        for (&(a, b), &how) in &faults.cuts {
            let other = match (a, b) {
                (a, b) if a == me => b,
                (a, b) if b == me => a,
                _ => continue,
            };
            let peer = self.address(other);
            let verdict = match how {
                Cut::Blackhole => "drop",
                Cut::Reject => "reject",
            };
            if how == Cut::Reject {
                // A reset ends a connection at once; `reject` alone would send ICMP to TCP too.
                input.push_str(&format!("    ip saddr {peer} meta l4proto tcp reject with tcp reset\n"));
                output.push_str(&format!("    ip daddr {peer} meta l4proto tcp reject with tcp reset\n"));
            }
            input.push_str(&format!("    ip saddr {peer} {verdict}\n"));
            output.push_str(&format!("    ip daddr {peer} {verdict}\n"));
        }
        if let Some(p) = faults.loss.get(&i) {
            let app = self.app_address();
            input.push_str(&format!("    ip saddr {app} numgen random mod 100 < {p} drop\n"));
            output.push_str(&format!("    ip daddr {app} numgen random mod 100 < {p} drop\n"));
        }
        format!(
            "flush ruleset\ntable inet covet {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{input}  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{output}  }}\n}}\n"
        )
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and so their peers on the bridge.
        for i in 0..self.nodes {
            let _ = run("ip", &["netns", "del", &self.namespace(i)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

/// Removes the namespaces and bridges of processes that are gone (a test process killed
/// outright leaves them behind).
pub(crate) fn sweep_stale() {
    let dead = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for name in entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
        {
            if let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next())
                && dead(pid)
            {
                let _ = run("ip", &["netns", "del", &name]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for name in entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
        {
            if let Some((pid, _)) = name.strip_prefix("cv").and_then(|r| r.split_once('b'))
                && dead(pid)
            {
                let _ = run("ip", &["link", "del", &name]);
            }
        }
    }
}

/// A `10.X.Y.0/24` no interface here uses, starting from one derived from our pid and `seq`.
fn free_subnet(pid: u32, seq: u32) -> Result<(u8, u8), ClusterError> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|e| tool_error("ip", format!("could not start: {e}"), String::new()))?;
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = pid.wrapping_mul(31).wrapping_add(seq.wrapping_mul(7));
    (0..4096u32)
        .map(|k| {
            let c = start.wrapping_add(k) % (128 * 256);
            ((64 + c / 256) as u8, (c % 256) as u8)
        })
        .find(|(x, y)| !used.contains(&format!(" 10.{x}.{y}.")))
        .ok_or_else(|| tool_error("ip", "no free 10.x.y.0/24 subnet".into(), used))
}

fn run(program: &str, args: &[&str]) -> Result<(), ClusterError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| tool_error(program, format!("could not start: {e}"), args.join(" ")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(tool_error(
        program,
        out.status.to_string(),
        format!("{} ({})", stderr.trim(), args.join(" ")),
    ))
}

fn tool_error(program: &str, status: String, output: String) -> ClusterError {
    ClusterError::Tool {
        program: program.into(),
        status,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network as `create` would describe it, without making anything (dropping it only
    /// fails to delete what does not exist).
    fn network() -> Network {
        Network {
            tag: "0-0".into(),
            bridge: "cv0b0".into(),
            subnet: (64, 7),
            nodes: 3,
            faults: Mutex::new(Faults::default()),
        }
    }

    fn lines(n: &Network, i: usize) -> Vec<String> {
        n.rules(i)
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("ip "))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn each_fault_becomes_rules_in_the_namespaces_of_its_nodes_only() {
        let n = network();
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        lock(&n.faults)
            .cuts
            .insert((Endpoint::App, Endpoint::Node(0)), Cut::Blackhole);
        assert_eq!(lines(&n, 0), s(&["ip saddr 10.64.7.1 drop", "ip daddr 10.64.7.1 drop"]));
        assert!(lines(&n, 1).is_empty());
        // A link between two nodes is cut on both sides; a reject resets TCP first.
        lock(&n.faults)
            .cuts
            .insert((Endpoint::Node(1), Endpoint::Node(2)), Cut::Reject);
        let reject = |peer: &str| {
            s(&[
                &format!("ip saddr {peer} meta l4proto tcp reject with tcp reset"),
                &format!("ip saddr {peer} reject"),
                &format!("ip daddr {peer} meta l4proto tcp reject with tcp reset"),
                &format!("ip daddr {peer} reject"),
            ])
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(sorted(lines(&n, 1)), sorted(reject("10.64.7.12")));
        assert_eq!(sorted(lines(&n, 2)), sorted(reject("10.64.7.11")));
        // Loss applies to the application's packets only.
        lock(&n.faults).loss.insert(2, 5);
        assert!(lines(&n, 2).contains(&"ip saddr 10.64.7.1 numgen random mod 100 < 5 drop".to_owned()));
        assert_eq!(lines(&n, 2).len(), 6);
        // Every ruleset replaces the last one whole.
        assert!(n.rules(0).starts_with("flush ruleset\n"));
    }

    #[test]
    fn a_link_names_nodes_the_network_has() {
        let n = network();
        assert!(matches!(
            n.check(Endpoint::Node(3)),
            Err(ClusterError::UnknownNode { node: 3, count: 3 })
        ));
        assert!(n.check(Endpoint::Node(2)).is_ok() && n.check(Endpoint::App).is_ok());
    }
}
