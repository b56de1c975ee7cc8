//! `orch::dns::Resolver` against a real DNS server: dnsmasq on 127.0.0.1
//! with a free high port, serving fixed *.test records with known TTLs.
//! No root needed. Skipped (with a note) only when dnsmasq is not installed
//! (Debian package `dnsmasq-base`).

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use orch::dns::{DnsFamily, Resolver};

/// TTL of the host records (`--local-ttl`).
const HOST_TTL: u64 = 300;
/// TTL of the c.test CNAME, below `HOST_TTL`: an address reached through
/// it must carry the smaller of the two.
const CNAME_TTL: u64 = 60;

/// The dnsmasq binary, if installed (it lives in /usr/sbin, which a
/// non-root PATH may lack).
fn dnsmasq_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()]);
    for dir in candidates {
        let binary = dir.join("dnsmasq");
        if binary.is_file() {
            return Some(binary);
        }
    }
    None
}

/// A dnsmasq on 127.0.0.1:<port>, killed on drop.
struct Dnsmasq {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Dnsmasq {
    /// Starts dnsmasq on a free port (retrying with another port if the
    /// chosen one was taken meanwhile) and waits until it accepts TCP.
    fn start(binary: &PathBuf) -> Dnsmasq {
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().expect("log file");
            let child = Command::new(binary)
                .args(common::dnsmasq_args(port))
                .args([
                    "--log-facility=-",
                    // Unknown *.test names: NXDOMAIN (without it: REFUSED).
                    "--local=/test/",
                    &format!("--local-ttl={HOST_TTL}"),
                    "--host-record=a.test,192.0.2.10,2001:db8::10",
                    "--host-record=v4only.test,192.0.2.20",
                    &format!("--cname=c.test,a.test,{CNAME_TTL}"),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.reopen().expect("reopen log"))
                .spawn()
                .expect("start dnsmasq");
            let mut server = Dnsmasq { child, port, log };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break;
                }
                if TcpStream::connect(server.addr()).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = server.log_text();
            server.stop();
        }
        panic!("dnsmasq did not start:\n{last_log}");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (at the time of asking).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts dnsmasq, or says why the test is skipped.
fn server() -> Option<Dnsmasq> {
    let Some(binary) = dnsmasq_binary() else {
        eprintln!("SKIPPED: dnsmasq is not installed (Debian package dnsmasq-base)");
        return None;
    };
    Some(Dnsmasq::start(&binary))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Resolves within a deadline, so a hang fails the test instead of
/// stalling it.
async fn resolve(
    resolver: &Resolver,
    name: &str,
    family: DnsFamily,
) -> Result<Vec<(IpAddr, Duration)>, orch::dns::DnsError> {
    tokio::time::timeout(Duration::from_secs(15), resolver.resolve(name, &family))
        .await
        .unwrap_or_else(|_| panic!("resolving {name} hung"))
}

/// Addresses sorted, with each TTL checked to be `ttl` (or a second less,
/// should the answer straddle a second).
fn check(mut got: Vec<(IpAddr, Duration)>, want: &[&str], ttl: u64) {
    got.sort();
    let addresses: Vec<IpAddr> = got.iter().map(|(a, _)| *a).collect();
    let want: Vec<IpAddr> = want.iter().map(|a| ip(a)).collect();
    assert_eq!(addresses, want, "{got:?}");
    for (addr, got_ttl) in &got {
        let secs = got_ttl.as_secs();
        assert!(
            secs == ttl || secs + 1 == ttl,
            "{addr}: TTL {secs} s, want {ttl} s"
        );
    }
}

#[tokio::test]
async fn a_aaaa_and_cname_resolve_with_their_ttls() {
    let Some(dns) = server() else { return };
    let resolver = Resolver::new(&[dns.addr()]).expect("resolver");

    let v4 = resolve(&resolver, "a.test", DnsFamily::Ipv4).await;
    check(v4.expect("A a.test"), &["192.0.2.10"], HOST_TTL);
    let v6 = resolve(&resolver, "a.test", DnsFamily::Ipv6).await;
    check(v6.expect("AAAA a.test"), &["2001:db8::10"], HOST_TTL);
    let any = resolve(&resolver, "a.test", DnsFamily::Any).await;
    check(
        any.expect("a.test"),
        &["192.0.2.10", "2001:db8::10"],
        HOST_TTL,
    );
    // A trailing dot is accepted too.
    let dotted = resolve(&resolver, "a.test.", DnsFamily::Ipv4).await;
    check(dotted.expect("a.test."), &["192.0.2.10"], HOST_TTL);

    // Through the CNAME: same addresses, the CNAME's smaller TTL.
    let cname = resolve(&resolver, "c.test", DnsFamily::Any).await;
    check(
        cname.expect("c.test"),
        &["192.0.2.10", "2001:db8::10"],
        CNAME_TTL,
    );

    // Asked again: the resolver does not cache, the TTL is the server's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = resolve(&resolver, "a.test", DnsFamily::Ipv4).await;
    check(again.expect("A a.test again"), &["192.0.2.10"], HOST_TTL);
}

#[tokio::test]
async fn nxdomain_and_nodata_are_empty_answers() {
    let Some(dns) = server() else { return };
    let resolver = Resolver::new(&[dns.addr()]).expect("resolver");

    let nx = resolve(&resolver, "nonexistent.test", DnsFamily::Any).await;
    assert_eq!(nx, Ok(Vec::new()), "NXDOMAIN");
    // v4only.test has no AAAA: NODATA.
    let nodata = resolve(&resolver, "v4only.test", DnsFamily::Ipv6).await;
    assert_eq!(nodata, Ok(Vec::new()), "NODATA");
    let any = resolve(&resolver, "v4only.test", DnsFamily::Any).await;
    check(any.expect("v4only.test"), &["192.0.2.20"], HOST_TTL);
}

#[tokio::test]
async fn a_refused_query_is_a_failure() {
    let Some(dns) = server() else { return };
    let resolver = Resolver::new(&[dns.addr()]).expect("resolver");
    // Outside --local=/test/ and with --no-resolv, dnsmasq refuses.
    let refused = resolve(&resolver, "example.org", DnsFamily::Ipv4).await;
    let err = refused.expect_err("REFUSED must be a failure");
    eprintln!("REFUSED gives: {err}");
    assert!(err.to_string().contains("example.org"), "{err}");
}

#[tokio::test]
async fn a_dead_server_fails_within_seconds() {
    let Some(mut dns) = server() else { return };
    let resolver = Resolver::new(&[dns.addr()]).expect("resolver");
    let before = resolve(&resolver, "a.test", DnsFamily::Any).await;
    assert!(before.is_ok(), "{before:?}");

    dns.stop();
    let started = Instant::now();
    let after = resolve(&resolver, "a.test", DnsFamily::Any).await;
    let took = started.elapsed();
    eprintln!("dead server: {after:?} after {took:?}");
    assert!(after.is_err(), "{after:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");

    // Another resolver that never reached a server behaves the same.
    let fresh = Resolver::new(&[dns.addr()]).expect("resolver");
    let started = Instant::now();
    let never = resolve(&fresh, "a.test", DnsFamily::Ipv4).await;
    let took = started.elapsed();
    eprintln!("never-reached server: {never:?} after {took:?}");
    assert!(never.is_err(), "{never:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}
