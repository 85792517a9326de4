//! What the benchmarks share: medians, and pinning client and servers to separate CPUs.

// Each bench is its own crate and uses a part of this.
#![allow(dead_code)]

use covet_replication::testing::LocalCluster;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// On a machine with more than one CPU, the servers get the last CPU and this process the
/// others: otherwise the scheduler moves client and server backends between cores, which
/// shifts a run by more than the margin being measured.
pub fn pin(cluster: &LocalCluster) -> Option<String> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        return None;
    }
    let taskset = |args: &[String]| {
        std::process::Command::new("taskset")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let server_cpu = (cpus - 1).to_string();
    let mut pids = Vec::new();
    for pm in cluster.server_pids() {
        pids.push(pm.to_string());
        // Backends forked later inherit the postmaster's mask; the ones running now need it too.
        let children = std::process::Command::new("pgrep")
            .args(["-P", &pm.to_string()])
            .output()
            .ok()?;
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    for pid in &pids {
        if !taskset(&["-p".into(), "-c".into(), server_cpu.clone(), pid.clone()]) {
            return None;
        }
    }
    let client_cpus = if cpus == 2 {
        "0".to_string()
    } else {
        format!("0-{}", cpus - 2)
    };
    let me = std::process::id().to_string();
    taskset(&["-a".into(), "-p".into(), "-c".into(), client_cpus.clone(), me]).then(|| {
        format!(
            "client on CPU {client_cpus}, {} server processes on CPU {server_cpu}",
            pids.len()
        )
    })
}
