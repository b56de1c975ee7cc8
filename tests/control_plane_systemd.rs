//! The control plane as installed: a real systemd in throwaway namespaces,
//! its own dbus.service with the policy `orch install-units` writes, and
//! calls made as uid 65534 with setpriv. tests/control_plane.rs covers
//! orch's own checks on an open bus; this covers what the shipped policy
//! adds in front of them.

mod common;

use common::systemd::{ORCH_IN_SANDBOX, SystemdSandbox};

const SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

/// Runs tests/fixtures/big_call.py inside the sandbox as uid 65534.
fn big_call_as_nobody(sandbox: &SystemdSandbox, mode: &str, size: usize) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/big_call.py");
    let size = size.to_string();
    let out = sandbox
        .run(
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "/usr/bin/python3",
                script,
                SYSTEM_BUS,
                mode,
                &size,
            ],
        )
        .expect_ok("big_call.py as nobody");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("big_call.py printed {:?}: {e}", out.stdout))
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
