//! `orch query ADDR [--json]`: asks the daemon what holds an address
//! banned and what allows it (the `Query` method, whose answer is one JSON
//! object, docs/json.md `query`), and prints it for people or as it came.
//!
//! It only reads. Every text from the daemon is made printable before it
//! reaches the terminal: reasons and host names come from log lines and
//! other hosts.

use std::time::Duration;

use crate::bus::client::Orch1Proxy;
use crate::daemon::query::BanHold;
use crate::quote::printable;
use crate::timefmt::{now_unix, rfc3339};

/// Asks, then prints; the JSON is checked to be an object before it is
/// passed on.
pub async fn run(proxy: &Orch1Proxy<'_>, address: &str, json: bool) -> zbus::Result<()> {
    let answer = proxy.query(address).await?;
    let value: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|err| zbus::Error::Failure(format!("the daemon's answer is not JSON: {err}")))?;
    if json {
        println!("{value}");
    } else {
        print_text(&value);
    }
    Ok(())
}

fn text<'a>(value: &'a serde_json::Value, key: &str) -> std::borrow::Cow<'a, str> {
    printable(value[key].as_str().unwrap_or(""))
}

fn number(value: &serde_json::Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or(0)
}

fn print_text(answer: &serde_json::Value) {
    let address = text(answer, "address");
    let banned = answer["banned"].as_bool().unwrap_or(false);
    println!(
        "{address}: {}",
        if banned { "BANNED" } else { "not banned" }
    );
    let now = now_unix();
    for ban in answer["bans"].as_array().into_iter().flatten() {
        print_ban("ban", ban, now);
    }
    if let Some(shadowed) = answer.get("shadowed").filter(|v| !v.is_null()) {
        print_ban("own ban kept under a longer remote one", shadowed, now);
    }
    for hold in answer["fleet_holds"].as_array().into_iter().flatten() {
        println!(
            "  fleet host {} bans it until {}: {}",
            text(hold, "host"),
            rfc3339(number(hold, "expires_at")),
            text(hold, "reason")
        );
    }
    let times = number(answer, "times_banned");
    match answer["last_banned_at"].as_u64() {
        Some(last) if times > 0 => {
            println!("  banned {times} time(s) so far, last at {}", rfc3339(last))
        }
        _ => println!("  never banned before"),
    }
    let allows = answer["allowed_by"].as_array().cloned().unwrap_or_default();
    if allows.is_empty() {
        println!("  allowlisted: no");
    }
    for allow in &allows {
        let name = allow["name"]
            .as_str()
            .map(|name| format!(" ({})", printable(name)))
            .unwrap_or_default();
        println!(
            "  allowlisted by {} entry {}{name}: never banned while it stays",
            text(allow, "kind"),
            text(allow, "entry")
        );
    }
    if let Some(dropped) = answer.get("dropped").filter(|v| !v.is_null()) {
        println!(
            "  dropped: {} packets, {} bytes",
            number(dropped, "packets"),
            number(dropped, "bytes")
        );
    } else if let Some(note) = answer["dropped_note"].as_str() {
        println!("  dropped: not known: {}", printable(note));
    }
}

fn print_ban(what: &str, ban: &serde_json::Value, now: u64) {
    let hold: Option<BanHold> = serde_json::from_value(ban.clone()).ok();
    let Some(hold) = hold else {
        return;
    };
    let by = match (&hold.jail, &hold.origin_host) {
        (Some(jail), _) => format!("jail {}", printable(jail)),
        (_, Some(host)) => format!("fleet host {}", printable(host)),
        _ => printable(&hold.source).into_owned(),
    };
    let remaining =
        humantime::format_duration(Duration::from_secs(hold.expires_at.saturating_sub(now)));
    println!(
        "  {what} of {} by {by}{}",
        printable(&hold.network),
        if hold.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", printable(&hold.reason))
        }
    );
    println!(
        "    since {}, until {} ({remaining} left)",
        rfc3339(hold.banned_at),
        rfc3339(hold.expires_at)
    );
}
