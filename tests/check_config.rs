//! `orch check-config`: what an admin sees for a good and a broken config.

mod common;

fn orch(args: &[&str]) -> (i32, String, String) {
    let out = common::run_orch(args);
    (out.status, out.stdout, out.stderr)
}

#[test]
fn every_error_is_reported_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orch.toml");
    std::fs::write(
        &path,
        "allow = [\"192.0.2.7/24\", \"not-an-ip\"]\n[firewall]\nverdict = \"drop\"\n[bans]\ndefault_time = \"1 hourr\"\nmin_prefix_v4 = 40\n",
    )
    .expect("write config");
    let file = path.display().to_string();
    let (code, _stdout, stderr) = orch(&["check-config", "--config", &file]);
    assert_eq!(code, 1, "{stderr}");
    for expected in [
        format!("{file}:1:10: "),
        format!("{file}:1:26: "),
        format!("{file}:5:16: bans.default_time"),
        format!("{file}:6:17: bans.min_prefix_v4"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("did you mean 192.0.2.0/24?"), "{stderr}");
}

#[test]
fn unknown_keys_are_errors_and_a_good_file_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[firewall]\ntabel = \"x\"\n").expect("write");
    let (code, _, stderr) = orch(&["check-config", "--config", &bad.display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("{}:2:1: ", bad.display())),
        "{stderr}"
    );
    assert!(stderr.contains("tabel"), "{stderr}");

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "allow = [\"192.0.2.0/24\"]\n[bans]\ndefault_time = \"2h\"\n",
    )
    .expect("write");
    let (code, stdout, stderr) = orch(&["check-config", "--config", &good.display().to_string()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn a_missing_explicit_config_is_named() {
    let (code, _, stderr) = orch(&["check-config", "--config", "/nonexistent/orch.toml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/orch.toml"), "{stderr}");
}

#[test]
fn every_command_has_help() {
    for command in [
        "daemon",
        "ban",
        "unban",
        "list",
        "allow",
        "disallow",
        "status",
        "sync",
        "check-config",
        "test-filter",
        "install-units",
        "uninstall-units",
    ] {
        let (code, stdout, _) = orch(&[command, "--help"]);
        assert_eq!(code, 0, "orch {command} --help");
        assert!(
            stdout.contains("Usage: orch"),
            "orch {command} --help:\n{stdout}"
        );
    }
}

#[test]
fn a_password_over_plain_nats_to_another_host_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orch.toml");
    let password = dir.path().join("fleet.password");
    common::write_secret_file(&password, "s3cret\n");
    let fleet = format!(
        "[fleet]\nservers = [\"nats://198.51.100.4:4222\"]\nuser = \"web1\"\npassword_file = \"{}\"\n",
        password.display()
    );
    std::fs::write(&path, &fleet).expect("write config");
    let file = path.display().to_string();
    let (code, _stdout, stderr) = orch(&["check-config", "--config", &file]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:2:11: fleet.servers:"))
            && stderr.contains("plain nats://")
            && stderr.contains("insecure = true"),
        "{stderr}"
    );
    std::fs::write(&path, format!("{fleet}insecure = true\n")).expect("write config");
    let (code, _stdout, stderr) = orch(&["check-config", "--config", &file]);
    assert_eq!(code, 0, "accepted with insecure = true: {stderr}");
}

/// A fleet secret others can read is refused, as ssh refuses such keys,
/// and the message says how to fix it.
#[test]
fn a_secret_others_can_read_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orch.toml");
    let password = dir.path().join("fleet.password");
    common::write_secret_file(&password, "s3cret\n");
    let fleet = format!(
        "[fleet]\nservers = [\"tls://198.51.100.4:4222\"]\nuser = \"web1\"\npassword_file = \"{}\"\n",
        password.display()
    );
    std::fs::write(&path, &fleet).expect("write config");
    let file = path.display().to_string();
    let (code, _stdout, stderr) = orch(&["check-config", "--config", &file]);
    assert_eq!(code, 0, "a 0600 secret is fine: {stderr}");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, stdout, stderr) = orch(&["check-config", "--config", &file]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} holds a secret but is readable by group or others (mode 0644; fix: chmod 600 {}",
            password.display(),
            password.display()
        )),
        "{stderr}"
    );
    assert!(!stdout.contains("configuration OK"), "{stdout}");
}

/// A config file others could change (it can set hooks.dir) is warned
/// about, with the fix; the config itself is still valid.
#[test]
fn a_config_file_others_can_write_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orch.toml");
    std::fs::write(&path, "allow = [\"192.0.2.1\"]\n").expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let file = path.display().to_string();
    let (code, stdout, stderr) = orch(&["check-config", "--config", &file]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "warning: a config file others could change: {file} is writable by group or others (mode 0666; fix: chmod go-w {file})"
        )),
        "{stdout}"
    );
}

/// With a fleet sharing jail bans, check-config says which jails stay
/// local because any local user can feed them, and how to share them.
#[test]
fn jails_any_user_can_feed_are_named_as_kept_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orch.toml");
    let config = "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\n\n\
         [jails.sshd]\njournal = { matches = [\"_SYSTEMD_UNIT=ssh.service\"] }\n\n\
         [jails.authlog]\nfilter = \"sshd\"\nfiles = [\"/var/log/auth.log\"]\n";
    std::fs::write(&path, config).expect("write config");
    let (code, stdout, stderr) = orch(&["check-config", "--config", &path.display().to_string()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("note: jail authlog: its bans stay on this host, because any local user can write what it reads (files /var/log/auth.log); name it in fleet.share to share them"),
        "{stdout}"
    );
    assert!(!stdout.contains("jail sshd:"), "{stdout}");
}
