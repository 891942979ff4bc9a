//! `hearth-lab cluster` for real: namespaces, shaped links, CPU quotas, the
//! real coordinator and hosts; afterwards nothing of the lab is left.
//!
//! Needs root (`ip netns`, `tc`, cgroup v1 at `/sys/fs/cgroup/cpu`); without
//! it the test says so and passes, unless `HEARTH_LAB_TESTS=1` (set by
//! `scripts/test.sh` when it runs as root) makes that a failure.

use std::process::Command;

/// Namespaces, cgroups and processes whose names hold `id`.
fn leftovers(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        if line.contains(id) {
            left.push(format!("namespace {line}"));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/fs/cgroup/cpu") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.contains(id) {
                left.push(format!("cgroup {name}"));
            }
        }
    }
    left
}

/// Processes whose command line holds `text`.
fn processes_with(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(text) && !cmd.contains("cargo") {
                found.push(cmd);
            }
        }
    }
    found
}

/// No namespace or cgroup named with `id`, no process running from `out`.
fn assert_nothing_left(id: &str, out: &std::path::Path) {
    assert!(leftovers(id).is_empty(), "left behind: {:?}", leftovers(id));
    let out = out.display().to_string();
    assert!(
        processes_with(&out).is_empty(),
        "{:?}",
        processes_with(&out)
    );
}

/// Whether this test can run (root); a skip is a failure when
/// `HEARTH_LAB_TESTS=1`.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("HEARTH_LAB_TESTS").as_deref() != Ok("1"),
            "HEARTH_LAB_TESTS=1 but this is not root"
        );
        eprintln!("SKIPPED: the lab test needs root (namespaces, tc, cgroups)");
    }
    root
}

#[test]
fn reproduce_quick_writes_the_table_and_both_figures_and_leaves_nothing_behind() {
    if !can_run() {
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let child = Command::new(env!("CARGO_BIN_EXE_hearth-lab"))
        .args(["reproduce", "--quick", "--out"])
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start hearth-lab");
    // Every lab of this process is named hl{pid % 100000}x{n}.
    let prefix = format!("hl{}x", child.id() % 100_000);
    let run = child.wait_with_output().expect("hearth-lab");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_nothing_left(&prefix, out.path());
    let table = std::fs::read_to_string(out.path().join("table.md")).expect("table.md");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| devices"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].starts_with("| 1 | ") && rows[1].starts_with("| 2 | "),
        "{table}"
    );
    for png in ["epoch_time.png", "accuracy.png"] {
        let bytes = std::fs::read(out.path().join(png)).expect(png);
        assert!(bytes.starts_with(b"\x89PNG"), "{png} is not a PNG");
    }
    // Each household trained every sample once per epoch.
    for n in [1, 2] {
        hearth_e2e::assert_each_sample_once(&out.path().join(format!("n{n}/run")), 1280, 2);
    }
}

#[test]
fn a_two_device_household_trains_and_leaves_nothing_behind() {
    if !can_run() {
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new(env!("CARGO_BIN_EXE_hearth-lab"))
        .args(["cluster", "--devices", "2", "--out"])
        .arg(out.path())
        .args([
            "--",
            "--epochs",
            "1",
            "--train-limit",
            "1280",
            "--test-limit",
            "500",
        ])
        .output()
        .expect("start hearth-lab");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("torn down: namespaces, cgroups and processes of "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the lab names what it tore down")
        .to_string();
    assert_nothing_left(&id, out.path());
    // Both emulated devices trained, each sample once.
    hearth_e2e::assert_each_sample_once(&out.path().join("run"), 1280, 1);
    let ledger = std::fs::read_to_string(out.path().join("run/ledger.jsonl")).expect("ledger");
    for device in ["device-1", "device-2"] {
        assert!(
            ledger.contains(&format!("\"worker\":\"{device}\"")),
            "{device} never trained"
        );
    }
}
