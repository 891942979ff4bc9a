//! The emulated household: one network namespace per device and one for the
//! coordinator, each linked by a veth pair to a bridge in a switch
//! namespace, every link shaped with `tc tbf` at both ends, each device in
//! a CPU cgroup of its own. Dropping a [`Lab`] kills every process it
//! started and removes its namespaces and cgroups.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// A device's CPU cgroup.
#[derive(Debug, Clone)]
pub struct CpuCgroup {
    /// Its directory.
    pub dir: PathBuf,
    /// Its quota per period, microseconds.
    pub quota_us: u64,
    /// Its CFS period, microseconds.
    pub period_us: u64,
}

/// A link's shape, at one end: `tc tbf` rate and burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// kbit/s.
    pub rate_kbit: u64,
    /// Bytes.
    pub burst_bytes: u64,
}

/// cgroup v1 CPU controller.
const CPU_CGROUPS: &str = "/sys/fs/cgroup/cpu";
/// The kernel's smallest CFS quota, microseconds.
const MIN_QUOTA_US: u64 = 1_000;
/// The lab's subnet; the coordinator is .1, device i is .(10 + i).
const SUBNET: &str = "10.77.0";

/// One emulated household, torn down when dropped.
pub struct Lab {
    /// Prefix of everything it makes (namespaces, interfaces, cgroups).
    pub id: String,
    namespaces: Vec<String>,
    cgroups: Vec<PathBuf>,
    processes: Vec<Child>,
}

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lab {
    /// An empty lab (nothing made yet); fails without root.
    pub fn new() -> Result<Self> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!("hearth-lab needs root (network namespaces, tc, cgroups): run it with sudo");
        }
        // Unique among this machine's labs: the pid, and a count within it.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            id: format!("hl{}x{n}", std::process::id() % 100_000),
            namespaces: Vec::new(),
            cgroups: Vec::new(),
            processes: Vec::new(),
        })
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.id)
    }

    /// The coordinator's namespace and address.
    pub fn coordinator(&self) -> (String, String) {
        (format!("{}-c", self.id), format!("{SUBNET}.1"))
    }

    /// Device `i`'s namespace and address.
    pub fn device(&self, i: usize) -> (String, String) {
        (format!("{}-d{i}", self.id), format!("{SUBNET}.{}", 10 + i))
    }

    fn add_namespace(&mut self, name: &str) -> Result<()> {
        run("ip", &["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        run("ip", &["-n", name, "link", "set", "lo", "up"])
    }

    /// The switch: a namespace holding the bridge.
    pub fn build_switch(&mut self) -> Result<()> {
        let sw = self.switch();
        self.add_namespace(&sw)?;
        run("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &sw, "link", "set", "br0", "up"])
    }

    /// A node: its namespace with `eth0` at `address`, plugged into the
    /// switch port `k`, both ends shaped as `link` says.
    pub fn add_node(&mut self, ns: &str, address: &str, k: usize, link: Shape) -> Result<()> {
        self.add_namespace(ns)?;
        let sw = self.switch();
        let (a, b) = (format!("{}a{k}", self.id), format!("{}b{k}", self.id));
        run(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        )?;
        run("ip", &["link", "set", &a, "netns", ns])?;
        run("ip", &["-n", ns, "link", "set", &a, "name", "eth0"])?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ],
        )?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        run("ip", &["link", "set", &b, "netns", &sw])?;
        run("ip", &["-n", &sw, "link", "set", &b, "master", "br0"])?;
        run("ip", &["-n", &sw, "link", "set", &b, "up"])?;
        let (rate, burst) = (
            format!("{}kbit", link.rate_kbit),
            link.burst_bytes.to_string(),
        );
        for (n, dev) in [(ns, "eth0"), (sw.as_str(), b.as_str())] {
            run(
                "tc",
                &[
                    "-n", n, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst",
                    &burst, "latency", "50ms",
                ],
            )?;
        }
        Ok(())
    }

    /// A CPU cgroup called `name` (within the lab's) with a quota of
    /// `cores` of a core per `period_us` (longer if the quota would fall
    /// under the kernel's 1 ms minimum).
    pub fn add_cgroup(&mut self, name: &str, cores: f64, period_us: u64) -> Result<CpuCgroup> {
        let dir = Path::new(CPU_CGROUPS).join(format!("hearth-lab-{}-{name}", self.id));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.cgroups.push(dir.clone());
        let period_us = period_us.max((MIN_QUOTA_US as f64 / cores.max(1e-6)).ceil() as u64);
        let quota_us = ((cores * period_us as f64).round() as u64).max(MIN_QUOTA_US);
        std::fs::write(dir.join("cpu.cfs_period_us"), period_us.to_string())?;
        std::fs::write(dir.join("cpu.cfs_quota_us"), quota_us.to_string())?;
        Ok(CpuCgroup {
            dir,
            quota_us,
            period_us,
        })
    }

    /// CPU seconds (user and system, all threads) the process `pid` has
    /// used, while it runs.
    pub fn cpu_seconds(pid: u32) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (utime, stime): (f64, f64) =
            (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks > 0.0).then(|| (utime + stime) / ticks)
    }

    /// Starts `program args` in namespace `ns` (and cgroup `cgroup`): the
    /// shell joins the cgroup, then becomes `ip netns exec`, which becomes
    /// the program, so the pid it kills is the program's.
    pub fn start(
        &mut self,
        ns: &str,
        cgroup: Option<&CpuCgroup>,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<u32> {
        let tasks = cgroup.map(|c| c.dir.join("tasks"));
        let script = match &tasks {
            Some(t) => format!(
                "echo $$ > '{}' && exec ip netns exec \"$0\" \"$@\"",
                t.display()
            ),
            None => "exec ip netns exec \"$0\" \"$@\"".to_string(),
        };
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(ns)
            .arg(program)
            .args(args)
            .env("HEARTH_CONFIG", "")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id();
        self.processes.push(child);
        Ok(pid)
    }

    /// The process started with pid `pid`, if it has ended: its exit code.
    pub fn ended(&mut self, pid: u32) -> Option<Option<i32>> {
        let child = self.processes.iter_mut().find(|c| c.id() == pid)?;
        child.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Kills every process, removes every namespace and cgroup; what could
    /// not be removed is named.
    pub fn tear_down(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        for mut child in self.processes.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = run("ip", &["netns", "del", &ns]) {
                left.push(format!("namespace {ns}: {e}"));
            }
        }
        for dir in self.cgroups.drain(..) {
            if let Err(e) = std::fs::remove_dir(&dir) {
                left.push(format!("cgroup {}: {e}", dir.display()));
            }
        }
        left
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for what in self.tear_down() {
            eprintln!("hearth-lab: could not remove {what}");
        }
    }
}
