//! A damaged ban store with the real binary: `orch daemon` refuses to start
//! on a bad frame in the middle of the log, naming `orch store verify` and
//! `orch store salvage`; verify reports the damage with its offset; salvage
//! refuses while the daemon runs, then keeps every valid record, and the
//! daemon starts again with those bans in the kernel.

mod common;

use std::path::Path;

use common::{CmdOutput, Daemon, NetNs, TestBus, orch_bin, run_command, run_orch};

/// Store file header, and a frame's length + CRC fields (src/store/mod.rs).
const FILE_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 8;
const KIND_BAN: u8 = 1;
const FAMILY_V4: u8 = 4;

/// Offset of the log frame holding the ban of the IPv4 `address`.
fn ban_frame_offset(log: &[u8], address: [u8; 4]) -> usize {
    let mut offset = FILE_HEADER_LEN;
    while offset + RECORD_HEADER_LEN <= log.len() {
        let len_bytes: [u8; 4] = log[offset..offset + 4].try_into().expect("4 bytes");
        let payload_start = offset + RECORD_HEADER_LEN;
        let payload = &log[payload_start..payload_start + u32::from_le_bytes(len_bytes) as usize];
        if payload[..2] == [KIND_BAN, FAMILY_V4] && payload[2..6] == address {
            return offset;
        }
        offset = payload_start + payload.len();
    }
    panic!("no ban of {address:?} in the log");
}

fn store(args: &[&str], state_dir: &Path) -> CmdOutput {
    let dir = state_dir.display().to_string();
    let mut all = vec!["store"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--state-dir", &dir]);
    run_orch(&all)
}

#[test]
fn damaged_log_stops_the_daemon_until_salvage_keeps_every_valid_record() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let mut daemon = Daemon::start(&netns, &bus, "");
    for address in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"] {
        daemon
            .cli(&["ban", address, "--for", "1h", "--reason", "test"])
            .expect_ok("ban");
    }
    let state_dir = daemon.state_dir.clone();

    let verified = store(&["verify"], &state_dir);
    assert_eq!(verified.status, 0, "verify while orch runs\n{verified}");
    assert!(
        verified
            .stdout
            .contains(&format!("orch (pid {}) holds the store", daemon.pid())),
        "{verified}"
    );
    let refused = store(&["salvage"], &state_dir);
    assert_eq!(refused.status, 1, "salvage while orch runs\n{refused}");
    assert!(
        refused.stderr.contains(&format!(
            "in use by pid {} (lock file bans.lock is held); stop orch first: systemctl stop orch",
            daemon.pid()
        )),
        "{refused}"
    );

    daemon.stop();
    let log_path = state_dir.join("bans.log");
    let mut log = std::fs::read(&log_path).expect("read log");
    let damaged = ban_frame_offset(&log, [192, 0, 2, 2]);
    log[damaged + 5] ^= 0xff; // inside the CRC field
    std::fs::write(&log_path, &log).expect("write log");

    let verified = store(&["verify"], &state_dir);
    assert_eq!(verified.status, 1, "{verified}");
    for needed in [
        format!("DAMAGED at byte {damaged}: record checksum mismatch"),
        "next start: REFUSED".to_string(),
    ] {
        assert!(verified.stdout.contains(&needed), "{needed:?}\n{verified}");
    }

    let start = run_command(
        netns
            .command("timeout")
            .arg("30")
            .arg(orch_bin())
            .arg("daemon")
            .arg("--config")
            .arg(&daemon.config_path)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET"),
    );
    assert_eq!(start.status, 1, "the daemon must not start\n{start}");
    assert_eq!(
        start.stderr.matches("is damaged at byte").count(),
        1,
        "said once\n{start}"
    );
    for needed in [
        format!(
            "ban store log {} is damaged at byte {damaged}",
            log_path.display()
        ),
        "intact record(s) follow the damage".to_string(),
        "`orch store verify`".to_string(),
        "`orch store salvage`".to_string(),
    ] {
        assert!(start.stderr.contains(&needed), "{needed:?}\n{start}");
    }

    let salvaged = store(&["salvage"], &state_dir);
    assert_eq!(salvaged.status, 0, "{salvaged}");
    for needed in [
        format!("dropped: bans.log byte {damaged}: record checksum mismatch"),
        "kept: 3 active ban(s)".to_string(),
        "damaged file kept as".to_string(),
    ] {
        assert!(salvaged.stdout.contains(&needed), "{needed:?}\n{salvaged}");
    }
    let verified = store(&["verify"], &state_dir);
    assert_eq!(verified.status, 0, "{verified}");

    daemon.restart(&netns, &bus);
    let mut banned = netns.set_elements("orch", "ban4");
    banned.sort();
    assert_eq!(banned, ["192.0.2.1", "192.0.2.3", "192.0.2.4"]);
}

#[test]
fn store_commands_have_help_with_exit_statuses() {
    for command in ["verify", "salvage"] {
        let help = run_orch(&["store", command, "--help"]).expect_ok("help");
        for needed in ["Usage: orch store", "--state-dir <DIR>", "Exit status: 0"] {
            assert!(
                help.stdout.contains(needed),
                "{command}: {needed:?}\n{help}"
            );
        }
    }
    let empty = tempfile::tempdir().expect("tempdir");
    let verified = store(&["verify"], empty.path());
    assert_eq!(verified.status, 0, "{verified}");
    assert!(
        verified.stdout.contains("no store files here"),
        "{verified}"
    );
    let missing = store(&["verify"], &empty.path().join("absent"));
    assert_eq!(missing.status, 2, "{missing}");
    assert!(missing.stderr.contains("absent"), "{missing}");
}
