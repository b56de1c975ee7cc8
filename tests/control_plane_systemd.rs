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
