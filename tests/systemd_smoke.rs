//! Smoke tests for the real-systemd sandbox in `tests/common/systemd.rs`:
//! systemd boots as PID 1 of its own namespaces, the distribution's
//! nftables.service works inside, drop-ins and unit files written inside
//! never reach the host, and the sandbox's own system bus answers.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::systemd::SystemdSandbox;
use common::{pid_exists, run_command, unique_name, wait_until};

/// Boots a sandbox and prints how long that took.
fn boot(test: &str) -> SystemdSandbox {
    let sandbox = SystemdSandbox::boot();
    eprintln!(
        "{test}: systemd sandbox (pid {}) booted in {:?}",
        sandbox.pid(),
        sandbox.boot_time()
    );
    sandbox
}

#[test]
fn boots_systemd_as_pid1_in_its_own_namespaces() {
    let sandbox = boot("boots_systemd_as_pid1_in_its_own_namespaces");

    let state = sandbox.systemctl(&["is-system-running"]);
    assert!(
        matches!(state.stdout.trim(), "running" | "degraded"),
        "is-system-running: {state}"
    );

    let exe = sandbox
        .run("readlink", &["/proc/1/exe"])
        .expect_ok("readlink /proc/1/exe");
    assert!(
        exe.stdout.trim().ends_with("/systemd/systemd"),
        "PID 1 inside is not systemd: {}",
        exe.stdout
    );
    let host_exe = std::fs::read_link(format!("/proc/{}/exe", sandbox.pid()))
        .expect("readlink systemd's exe from the host");
    assert!(host_exe.ends_with("systemd/systemd"), "{host_exe:?}");

    // Own network namespace: a table created inside is not on the host.
    let table = unique_name("sandbox_smoke");
    sandbox
        .nft(&["add", "table", "inet", &table])
        .expect_ok("add table inside");
    let inside = sandbox
        .nft(&["list", "tables"])
        .expect_ok("list tables inside");
    assert!(inside.stdout.contains(&table), "{inside}");
    let host = run_command(Command::new("nft").args(["list", "tables"]))
        .expect_ok("list tables on the host");
    assert!(
        !host.stdout.contains(&table),
        "table leaked to host: {host}"
    );

    // The freshly built orch binary runs inside at its host path.
    sandbox
        .run(env!("CARGO_BIN_EXE_orch"), &["--version"])
        .expect_ok("orch --version inside the sandbox");

    // The sandbox's temp dir shows no trace of the overlay on the host.
    assert!(sandbox.dir().join("init.sh").is_file());
    assert_eq!(
        std::fs::read_dir(sandbox.dir().join("fs"))
            .expect("read fs dir")
            .count(),
        0,
        "overlay mount point is not empty on the host"
    );
    assert!(
        sandbox.console().contains("Reached target"),
        "console:\n{}",
        sandbox.console()
    );
}

#[test]
fn nftables_service_lifecycle() {
    let sandbox = boot("nftables_service_lifecycle");
    assert_eq!(
        sandbox
            .nft(&["list", "ruleset"])
            .expect_ok("list ruleset")
            .stdout
            .trim(),
        "",
        "fresh sandbox has rules"
    );

    sandbox
        .systemctl(&["start", "nftables"])
        .expect_ok("systemctl start nftables");
    let ruleset = sandbox.nft(&["list", "ruleset"]).expect_ok("list ruleset");
    assert!(
        ruleset.stdout.contains("table inet filter"),
        "Debian's /etc/nftables.conf not loaded: {ruleset}\n{}",
        sandbox.journal("nftables.service")
    );
    for chain in ["chain input", "chain forward", "chain output"] {
        assert!(ruleset.stdout.contains(chain), "{chain} missing: {ruleset}");
    }
    sandbox
        .systemctl(&["is-active", "nftables"])
        .expect_ok("nftables active");

    sandbox
        .systemctl(&["reload", "nftables"])
        .expect_ok("systemctl reload nftables");
    sandbox
        .systemctl(&["restart", "nftables"])
        .expect_ok("systemctl restart nftables");
    assert!(
        sandbox
            .nft(&["list", "tables"])
            .expect_ok("list tables")
            .stdout
            .contains("table inet filter")
    );

    sandbox
        .systemctl(&["stop", "nftables"])
        .expect_ok("systemctl stop nftables");
    let ruleset = sandbox
        .nft(&["list", "ruleset"])
        .expect_ok("list ruleset after stop");
    assert_eq!(
        ruleset.stdout.trim(),
        "",
        "ruleset not empty after stop: {ruleset}"
    );
    assert!(
        sandbox
            .journal("nftables.service")
            .contains("nftables.service"),
        "journal has no nftables entries:\n{}",
        sandbox.journal("nftables.service")
    );
}

#[test]
fn drop_in_stays_inside_the_sandbox() {
    let sandbox = boot("drop_in_stays_inside_the_sandbox");
    let drop_in = "/etc/systemd/system/nftables.service.d/test.conf";
    sandbox.write_file(
        drop_in,
        "[Service]\nExecStartPost=/bin/sh -c 'echo started > /run/marker'\n",
        0o644,
    );
    assert!(
        sandbox
            .read_file(drop_in)
            .is_some_and(|c| c.contains("marker"))
    );
    sandbox
        .systemctl(&["daemon-reload"])
        .expect_ok("daemon-reload");
    sandbox
        .systemctl(&["restart", "nftables"])
        .expect_ok("restart nftables with drop-in");
    assert_eq!(
        sandbox.read_file("/run/marker").as_deref(),
        Some("started\n"),
        "ExecStartPost did not run:\n{}",
        sandbox.journal("nftables.service")
    );
    assert!(sandbox.read_file("/run/no-such-file").is_none());

    assert!(
        !Path::new("/etc/systemd/system/nftables.service.d").exists(),
        "drop-in directory leaked to the host"
    );
    assert!(!Path::new(drop_in).exists(), "drop-in leaked to the host");
    assert!(!Path::new("/run/marker").exists(), "marker leaked to host");
}

#[test]
fn sandbox_system_bus_answers() {
    let sandbox = boot("sandbox_system_bus_answers");
    sandbox
        .systemctl(&["start", "nftables"])
        .expect_ok("start nftables");
    let unit = sandbox
        .busctl(&[
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "GetUnit",
            "s",
            "nftables.service",
        ])
        .expect_ok("GetUnit nftables.service on the sandbox bus");
    assert!(
        unit.stdout
            .contains("/org/freedesktop/systemd1/unit/nftables_2eservice"),
        "{unit}"
    );
    let state = sandbox
        .busctl(&[
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1/unit/nftables_2eservice",
            "org.freedesktop.systemd1.Unit",
            "ActiveState",
        ])
        .expect_ok("ActiveState of nftables.service");
    assert_eq!(state.stdout.trim(), "s \"active\"");
}

#[test]
fn notify_service_starts() {
    let sandbox = boot("notify_service_starts");
    sandbox.write_file(
        "/etc/systemd/system/smoke-notify.service",
        "[Unit]\nDescription=sandbox smoke Type=notify service\n\n\
         [Service]\nType=notify\nNotifyAccess=all\n\
         ExecStart=/bin/sh -c 'systemd-notify --ready; exec sleep infinity'\n",
        0o644,
    );
    sandbox
        .systemctl(&["daemon-reload"])
        .expect_ok("daemon-reload");
    let start = sandbox
        .run(
            "timeout",
            &["20", "systemctl", "start", "smoke-notify.service"],
        )
        .expect_ok("start Type=notify service");
    assert!(start.stderr.is_empty(), "{start}");
    sandbox
        .systemctl(&["is-active", "smoke-notify.service"])
        .expect_ok("smoke-notify.service is active");
    sandbox
        .systemctl(&["stop", "smoke-notify.service"])
        .expect_ok("stop Type=notify service");
    assert!(!Path::new("/etc/systemd/system/smoke-notify.service").exists());
}

#[test]
fn parallel_sandboxes_and_cleanup() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| boot("parallel_sandboxes_and_cleanup[a]"));
        let b = s.spawn(|| boot("parallel_sandboxes_and_cleanup[b]"));
        (a.join().expect("boot a"), b.join().expect("boot b"))
    });
    assert_ne!(a.pid(), b.pid());
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("netns");
    assert_ne!(ns(a.pid()), ns(b.pid()));

    a.nft(&["add", "table", "inet", "only_in_a"])
        .expect_ok("add table in a");
    assert!(
        !b.nft(&["list", "tables"])
            .expect_ok("list tables in b")
            .stdout
            .contains("only_in_a")
    );
    a.write_file("/etc/only-in-a", "a\n", 0o600);
    assert!(b.read_file("/etc/only-in-a").is_none());
    assert_eq!(
        a.run("stat", &["-c", "%a", "/etc/only-in-a"])
            .expect_ok("stat")
            .stdout
            .trim(),
        "600"
    );
    b.systemctl(&["start", "nftables"])
        .expect_ok("start nftables in b");
    assert_eq!(a.set_elements("only_in_a", "nope"), Vec::<String>::new());

    // Explicit shutdown and drop both clean up everything.
    let (pid_a, dir_a) = (a.pid(), a.dir().to_path_buf());
    let (pid_b, dir_b) = (b.pid(), b.dir().to_path_buf());
    a.shutdown();
    drop(b);
    for (pid, dir) in [(pid_a, dir_a), (pid_b, dir_b)] {
        wait_until(
            Duration::from_secs(5),
            &format!("systemd {pid} to be gone"),
            || !pid_exists(pid),
        );
        assert!(!dir.exists(), "{} survived", dir.display());
    }
}

#[test]
fn set_elements_inside() {
    let sandbox = boot("set_elements_inside");
    sandbox
        .nft_script(
            "table inet t {\n\
             set s { type ipv4_addr; flags interval, timeout; }\n\
             }\n\
             add element inet t s { 192.0.2.1, 10.0.0.0/24 timeout 1h }\n",
        )
        .expect_ok("create set");
    let mut elems = sandbox.set_elements("t", "s");
    elems.sort();
    assert_eq!(elems, ["10.0.0.0/24", "192.0.2.1"]);
    assert!(sandbox.set_elements("absent_table", "s").is_empty());
}
