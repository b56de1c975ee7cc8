//! The control plane as installed: a real systemd in throwaway namespaces,
//! its own dbus.service with the policy `orch install-units` writes, and
//! calls made as uid 65534 with setpriv. tests/control_plane.rs covers
//! orch's own checks on an open bus; this covers what the shipped policy
//! adds in front of them.

mod common;

use std::time::Duration;

use common::systemd::{ORCH_IN_SANDBOX, SystemdSandbox};

const SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

/// Runs tests/fixtures/big_call.py inside the sandbox, as uid 65534 or
/// as root.
fn big_call(
    sandbox: &SystemdSandbox,
    as_nobody: bool,
    mode: &str,
    size: usize,
) -> serde_json::Value {
    big_call_with(sandbox, as_nobody, &[mode, &size.to_string()])
}

/// [`big_call`] with the script's arguments after the bus address.
fn big_call_with(sandbox: &SystemdSandbox, as_nobody: bool, call: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/big_call.py");
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let mut args: Vec<&str> = if as_nobody { nobody.to_vec() } else { vec![] };
    args.extend(["--", "/usr/bin/python3", script, SYSTEM_BUS]);
    args.extend(call);
    let out = sandbox.run("setpriv", &args).expect_ok("big_call.py");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("big_call.py printed {:?}: {e}", out.stdout))
}

fn big_call_as_nobody(sandbox: &SystemdSandbox, mode: &str, size: usize) -> serde_json::Value {
    big_call(sandbox, true, mode, size)
}

/// Elements of `inet orch ban4`, counted inside the sandbox.
fn ban4_count(sandbox: &SystemdSandbox) -> usize {
    // Elements are listed comma-separated; no JSON for a million of them.
    let out = sandbox
        .sh("nft list set inet orch ban4 | tr -cd ',' | wc -c")
        .expect_ok("count ban4");
    let commas: usize = out.stdout.trim().parse().expect("a count");
    commas + 1
}

fn restarts(sandbox: &SystemdSandbox) -> String {
    sandbox
        .systemctl(&["show", "orch.service", "-p", "NRestarts", "--value"])
        .expect_ok("NRestarts")
        .stdout
        .trim()
        .to_string()
}

fn busctl_as_nobody(sandbox: &SystemdSandbox, args: &[&str]) -> common::CmdOutput {
    let mut full = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "busctl",
    ];
    full.extend_from_slice(args);
    sandbox.run("setpriv", &full)
}

#[test]
fn the_shipped_policy_drops_changing_calls_from_nobody_and_lets_them_read() {
    let sandbox = SystemdSandbox::boot();
    sandbox.install_and_start_orch(None);
    sandbox
        .run(ORCH_IN_SANDBOX, &["ban", "192.0.2.9", "--for", "1h"])
        .expect_ok("root bans");

    // The bus refuses before orch sees the message.
    let reply = big_call_as_nobody(&sandbox, "sync-event", 7 * 1024 * 1024);
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(
        reply["error_name"], "org.freedesktop.DBus.Error.AccessDenied",
        "{reply}"
    );
    for (member, signature, args) in [
        ("Ban", "sts", vec!["192.0.2.10", "60", "x"]),
        ("Unban", "s", vec!["192.0.2.9"]),
        ("Allow", "s", vec!["192.0.2.0/24"]),
        ("Sync", "", vec![]),
        ("RunHooks", "", vec![]),
        ("Reload", "", vec![]),
    ] {
        let mut call = vec![
            "call",
            "org.orch.Orch1",
            "/org/orch/Orch1",
            "org.orch.Orch1",
            member,
        ];
        if !signature.is_empty() {
            call.push(signature);
        }
        call.extend(args);
        let out = busctl_as_nobody(&sandbox, &call);
        assert!(!out.ok(), "{member} from nobody must fail: {out}");
        assert!(
            out.stderr.contains("Access denied") || out.stderr.contains("AccessDenied"),
            "{member}: {out}"
        );
    }

    // The CLI says the same, with exit status 4 and what grants the action.
    let cli = sandbox.run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            ORCH_IN_SANDBOX,
            "ban",
            "192.0.2.10",
        ],
    );
    assert_eq!(cli.status, 4, "exit status 4: permission denied: {cli}");
    assert!(
        cli.stderr.contains("org.orch.Orch1.ban") && cli.stderr.contains("orch-admin"),
        "{cli}"
    );

    let listed = busctl_as_nobody(
        &sandbox,
        &[
            "call",
            "org.orch.Orch1",
            "/org/orch/Orch1",
            "org.orch.Orch1",
            "ListBans",
        ],
    )
    .expect_ok("nobody may list");
    assert!(listed.stdout.contains("192.0.2.9"), "{listed}");
    let count = busctl_as_nobody(
        &sandbox,
        &[
            "get-property",
            "org.orch.Orch1",
            "/org/orch/Orch1",
            "org.orch.Orch1",
            "BanCount",
        ],
    )
    .expect_ok("nobody may read properties");
    assert_eq!(count.stdout.trim(), "u 1");

    // orch kept its name: root's commands still work.
    sandbox
        .run(ORCH_IN_SANDBOX, &["ban", "192.0.2.11", "--for", "1h"])
        .expect_ok("root's ban afterwards");
    let elements = sandbox.set_elements("orch", "ban4");
    assert!(elements.iter().any(|e| e == "192.0.2.11"), "{elements:?}");
    sandbox.shutdown();
}

/// Runs the installed orch CLI inside the sandbox as `user` (with the
/// user's groups).
fn orch_as(sandbox: &SystemdSandbox, user: &str, args: &[&str]) -> common::CmdOutput {
    let reuid = format!("--reuid={user}");
    let regid = format!("--regid={user}");
    let mut full = vec![
        reuid.as_str(),
        regid.as_str(),
        "--init-groups",
        "--",
        ORCH_IN_SANDBOX,
    ];
    full.extend_from_slice(args);
    sandbox.run("setpriv", &full)
}

#[test]
fn polkit_lets_the_orch_admin_group_ban_and_unban_but_not_change_the_allowlist() {
    assert!(
        std::path::Path::new(
            "/usr/share/dbus-1/system-services/org.freedesktop.PolicyKit1.service"
        )
        .exists(),
        "this test needs Debian's polkitd (.ci/run installs it)"
    );
    let sandbox = SystemdSandbox::boot();
    sandbox.install_and_start_orch(None);
    sandbox
        .sh("groupadd --system orch-admin && useradd -M -G orch-admin alice && useradd -M bob")
        .expect_ok("users");
    // The bus policy names orch-admin, which did not exist when the bus
    // read it.
    sandbox
        .busctl(&[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "ReloadConfig",
        ])
        .expect_ok("reload the bus config");

    orch_as(&sandbox, "alice", &["ban", "192.0.2.50", "--for", "1h"])
        .expect_ok("alice (orch-admin) bans without a password");
    let elements = sandbox.set_elements("orch", "ban4");
    assert!(elements.iter().any(|e| e == "192.0.2.50"), "{elements:?}");
    orch_as(&sandbox, "alice", &["unban", "192.0.2.50"]).expect_ok("alice unbans");
    let refused = orch_as(&sandbox, "alice", &["allow", "192.0.2.0/24"]);
    assert!(
        !refused.ok(),
        "alice may not change the allowlist: {refused}"
    );
    assert!(refused.stderr.contains("org.orch.Orch1.allow"), "{refused}");

    let refused = orch_as(&sandbox, "bob", &["ban", "192.0.2.51"]);
    assert!(!refused.ok(), "bob is not in orch-admin: {refused}");
    assert!(refused.stderr.contains("org.orch.Orch1.ban"), "{refused}");
    assert!(
        refused.stderr.contains("orch-admin"),
        "says what grants it: {refused}"
    );

    sandbox
        .run(ORCH_IN_SANDBOX, &["ban", "192.0.2.52", "--for", "1h"])
        .expect_ok("root is unaffected");

    // Without polkitd, only root.
    sandbox
        .systemctl(&["mask", "--now", "polkit.service"])
        .expect_ok("mask polkit");
    let refused = orch_as(&sandbox, "alice", &["ban", "192.0.2.53"]);
    assert!(!refused.ok(), "without polkit alice may not ban: {refused}");
    assert!(
        refused.stderr.contains("polkit is not available"),
        "{refused}"
    );
    sandbox
        .run(ORCH_IN_SANDBOX, &["unban", "192.0.2.52"])
        .expect_ok("root still may");
    sandbox.shutdown();
}

/// `count` bans in one `BanMany` as root in the installed unit, listed by
/// nobody a page at a time, then a restart with them stored: the call
/// answers, NRestarts stays 0, every ban is in the kernel after each step,
/// and no reply exceeds the cap.
fn bulk_bans_never_trip_the_watchdog(count: usize) {
    let sandbox = SystemdSandbox::boot();
    sandbox.install_and_start_orch(None);
    let started = std::time::Instant::now();
    let banned = big_call(&sandbox, false, "ban-many-distinct", count);
    eprintln!("BanMany of {count} answered after {:?}", started.elapsed());
    assert_eq!(banned["answer"], serde_json::json!([count]), "{banned}");
    assert_eq!(
        restarts(&sandbox),
        "0",
        "{}",
        sandbox.journal("orch.service")
    );
    assert_eq!(ban4_count(&sandbox), count, "in the kernel after BanMany");

    let started = std::time::Instant::now();
    let paged = big_call_as_nobody(&sandbox, "page-all", 0);
    eprintln!("paged as nobody in {:?}: {paged}", started.elapsed());
    assert_eq!(paged["rows"], count, "{paged}");
    let largest = paged["largest_reply_bytes"].as_u64().expect("largest");
    assert!(largest <= 8 * 1024 * 1024, "{paged}");

    let started = std::time::Instant::now();
    sandbox
        .systemctl(&["restart", "orch.service"])
        .expect_ok("restart with the bans stored");
    eprintln!(
        "restart with {count} stored bans took {:?}",
        started.elapsed()
    );
    assert_eq!(
        restarts(&sandbox),
        "0",
        "{}",
        sandbox.journal("orch.service")
    );
    assert_eq!(
        ban4_count(&sandbox),
        count,
        "in the kernel after the restart"
    );
    sandbox.shutdown();
}

#[test]
fn two_hundred_thousand_bans_in_one_call_and_across_a_restart() {
    bulk_bans_never_trip_the_watchdog(200_000);
}

/// The scale. Not in CI: nft 1.0.6 needs about two minutes to list
/// a million elements, twice, and the debug build another two to page
/// through them; about 8 minutes in all on this machine kind (measured
/// 2026-12-03: BanMany 41 s, paging 90 s, restart 21 s, one listing 119 s).
#[test]
#[ignore = "about 8 minutes; run with: cargo test --test control_plane_systemd -- --ignored"]
fn a_million_bans_in_one_call_and_across_a_restart() {
    bulk_bans_never_trip_the_watchdog(1_000_000);
}

#[test]
fn a_read_flood_from_nobody_delays_neither_root_nor_a_jail() {
    let sandbox = SystemdSandbox::boot();
    let log = "/var/log/orch-flood-auth.log";
    sandbox.write_file(log, "", 0o640);
    sandbox.install_and_start_orch(Some(&format!(
        "[jails.sshd]\nfiles = [\"{log}\"]\nmaxretry = 1\nfindtime = \"10m\"\nbantime = \"1h\"\n"
    )));
    let held = 200_000;
    let banned = big_call(&sandbox, false, "ban-many-distinct", held);
    assert_eq!(banned["answer"], serde_json::json!([held]), "{banned}");

    let sandbox = std::sync::Arc::new(sandbox);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sandbox, sampling) = (sandbox.clone(), sampling.clone());
        std::thread::spawn(move || {
            let (mut present, mut missing) = (0, 0);
            // nft 1.0.6 fetches the whole set for a `get element` (about a
            // second of CPU at 200k elements): one sample a second.
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if ban4_has(&sandbox, "10.0.0.1") {
                    present += 1;
                } else {
                    missing += 1;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            (present, missing)
        })
    };
    let flood_started = std::time::Instant::now();
    let flood = {
        let sandbox = sandbox.clone();
        // 5,000 reads in flight, kept up for 8 s: the bans below land
        // while it runs however fast this machine answers.
        std::thread::spawn(move || big_call_with(&sandbox, true, &["read-flood", "5000", "8"]))
    };
    // Let the flood get going: its 50 connections and first calls.
    std::thread::sleep(Duration::from_millis(500));

    let started = std::time::Instant::now();
    sandbox
        .run(ORCH_IN_SANDBOX, &["ban", "192.0.2.200", "--for", "1h"])
        .expect_ok("root's ban during the flood");
    let root_ban = started.elapsed();

    let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
    let started = std::time::Instant::now();
    sandbox
        .sh(&format!(
            "echo '{stamp} web1 sshd-session[4242]: Failed password for root from 198.51.100.77 port 40000 ssh2' >> {log}"
        ))
        .expect_ok("append a failure");
    // orch lists a ban only after the job that put it in the kernel has
    // ended (listings queue behind writes), so a listing is a cheap
    // witness; the kernel is asked once afterwards.
    let jailed = common::poll_until(Duration::from_secs(10), || {
        sandbox
            .run(ORCH_IN_SANDBOX, &["list", "--prefix", "198.51.100.77/32"])
            .stdout
            .contains("198.51.100.77")
    });
    let jail_ban = started.elapsed();
    let overlapped = flood_started.elapsed();

    let flood = flood.join().expect("flood thread");
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (present, missing) = sampler.join().expect("sampler");
    eprintln!(
        "5000 GetAll in flight from nobody for 8 s with {held} bans: {flood}; root ban {root_ban:?}, jail ban {jail_ban:?}; ban4 sampled {present} present, {missing} missing"
    );
    let flood_seconds = flood["seconds"].as_f64().expect("seconds");
    assert!(
        flood_seconds > overlapped.as_secs_f64() - 0.5,
        "the bans were made while the flood ran ({flood})"
    );
    assert!(
        jailed,
        "the jail banned 198.51.100.77\n{}",
        sandbox.journal("orch.service")
    );
    assert!(ban4_has(&sandbox, "198.51.100.77"), "in the kernel");
    // Latency is a benchmark's job (benches/control_plane.rs, release
    // build); this debug build on a loaded CI machine only has to show
    // that neither was starved.
    assert!(
        root_ban < Duration::from_secs(10),
        "root's ban took {root_ban:?}"
    );
    assert!(
        jail_ban < Duration::from_secs(10),
        "the jail's ban took {jail_ban:?}"
    );
    let errors = flood["errors"].as_object().expect("errors");
    assert!(
        errors
            .keys()
            .all(|name| name == "org.freedesktop.DBus.Error.LimitsExceeded"),
        "reads are answered or refused as busy: {flood}"
    );
    assert_eq!(missing, 0, "ban4 was never without 10.0.0.1");
    assert!(present > 0);
    assert_eq!(restarts(&sandbox), "0");
}

/// Whether `addr` is in `inet orch ban4` (panics on an answer that is
/// neither yes nor no).
/// nft answers EINTR when a transaction commits during its request (see
/// tests/systemd_integration.rs); such a sample is taken again.
fn ban4_has(sandbox: &SystemdSandbox, addr: &str) -> bool {
    let element = format!("{{ {addr} }}");
    loop {
        let out = sandbox.nft(&["get", "element", "inet", "orch", "ban4", &element]);
        if out.ok() {
            return true;
        }
        if out.stderr.contains("Interrupted system call") {
            continue;
        }
        assert!(
            out.stderr.contains("No such file or directory"),
            "nft get element: {out}"
        );
        return false;
    }
}
