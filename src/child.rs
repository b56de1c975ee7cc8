//! How orch starts other programs (hooks, `ignore_command`,
//! nft): they inherit stdin, stdout and stderr and nothing else. orch runs
//! as root and holds descriptors a child must not get, above all the
//! netlink socket that owns orch's table, which libnftables opens without
//! close-on-exec: a hook holding it could edit or delete the table, and
//! keep it alive after orch exits.
//!
//! It only prepares commands; what runs, and when, is the caller's.

use std::io;

/// Marks every descriptor above 2 close-on-exec in the child, between
/// fork and exec (so the standard library's own exec-error pipe, already
/// close-on-exec, keeps working).
fn close_all_but_standard_fds_on_exec() -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes flags in this (child) process's
    // descriptor table; it is async-signal-safe.
    let marked =
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if marked == 0 {
        return Ok(());
    }
    // Kernels before 5.11: mark them one by one, up to the descriptor limit.
    // SAFETY: sysconf and fcntl are async-signal-safe.
    let limit = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(3, 65_536) as libc::c_int;
    for fd in 3..limit {
        // SAFETY: as above; an fd that is not open just fails with EBADF.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

/// Lets the command's child inherit only descriptors 0, 1 and 2.
pub fn only_standard_fds(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook only calls async-signal-safe functions.
    unsafe { command.pre_exec(close_all_but_standard_fds_on_exec) }
}

/// [`only_standard_fds`] for a tokio command.
pub fn only_standard_fds_async(
    command: &mut tokio::process::Command,
) -> &mut tokio::process::Command {
    // SAFETY: the hook only calls async-signal-safe functions.
    unsafe { command.pre_exec(close_all_but_standard_fds_on_exec) }
}

/// The environment a child that needs nothing of orch's gets: a fixed
/// PATH and nothing else.
pub const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_child_sees_only_the_standard_descriptors() {
        // An inheritable descriptor, as libnftables' socket is.
        // Placed at 100 or above, so it cannot be mistaken for the one
        // `ls` opens itself.
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        // SAFETY: F_DUPFD returns a new descriptor without close-on-exec,
        // which this test owns and closes at the end.
        let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, 100) };
        assert!(fd >= 100, "dup failed");
        let listing = |limit: bool| {
            let mut command = std::process::Command::new("ls");
            command.arg("/proc/self/fd");
            if limit {
                only_standard_fds(&mut command);
            }
            let output = command.output().expect("run ls");
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let fds =
            |text: String| -> Vec<String> { text.split_whitespace().map(str::to_string).collect() };
        assert!(
            fds(listing(false)).contains(&fd.to_string()),
            "without the guard the child inherits fd {fd}"
        );
        // ls itself opens one descriptor for /proc/self/fd.
        let limited = fds(listing(true));
        assert!(!limited.contains(&fd.to_string()), "{limited:?}");
        assert!(limited.len() <= 4, "{limited:?}");
        let mut missing = std::process::Command::new("/nonexistent/program");
        only_standard_fds(&mut missing);
        assert!(missing.spawn().is_err(), "exec errors are still reported");
        // SAFETY: closes the descriptor this test made.
        unsafe {
            libc::close(fd);
        }
    }
}
