//! `hearth-host work --config FILE`: a device's settings file, as the
//! systemd unit's host reads it.

use std::process::{Command, Stdio};

use hearth_e2e::{Reaped, assert_each_sample_once, binary, in_test_household, run, serve, text};

#[test]
fn a_host_trains_with_the_settings_of_its_file_and_a_bad_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "coordinator = \"ws://127.0.0.1:9/ws\"\nbogus = 1\n").unwrap();
    let out = run(in_test_household(&mut Command::new(binary("hearth-host")))
        .args(["work", "--config"])
        .arg(&bad));
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("bad.toml") && said.contains("--bogus"),
        "{said}"
    );

    let run_dir = tempfile::tempdir().unwrap();
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "1",
        "--epochs",
        "1",
        "--train-limit",
        "640",
        "--test-limit",
        "200",
        "--out",
        run_dir.path().to_str().unwrap(),
    ]);
    let settings = dir.path().join("host.toml");
    std::fs::write(
        &settings,
        format!(
            "coordinator = \"{url}\"\nname = \"from-file\"\nthreads = 2\nmax-backoff = 1\n\
             state-dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    // A flag on the command line wins over the file's (one thread here).
    let _host = Reaped(
        in_test_household(&mut Command::new(binary("hearth-host")))
            .args(["work", "--config"])
            .arg(&settings)
            .args(["--threads", "1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start hearth-host"),
    );
    assert!(
        hearth_e2e::wait_success(&mut coordinator, 240),
        "coordinator failed"
    );
    assert_each_sample_once(run_dir.path(), 640, 1);
    let ledger = std::fs::read_to_string(run_dir.path().join("ledger.jsonl")).unwrap();
    assert!(
        ledger
            .lines()
            .all(|l| l.contains("\"worker\":\"from-file\""))
    );
    assert!(
        dir.path().join("state").is_dir(),
        "the file's state directory is used"
    );
}
