#!/bin/sh
# Log jails, filter speed: orch test-filter vs fail2ban-regex vs fail2ban-rs
# on the same generated auth.log (see docs/benchmarks.md, "Log jails: filter
# speed"). Run from the repository root, as root (it may install packages):
#
#   sh benches/jail-compare.sh [LINES] [RUNS]
#
# LINES defaults to 1000000 and RUNS to 3 (fail2ban-regex needs about a
# minute per million lines, so keep RUNS small).
set -eu

lines=${1:-1000000}
runs=${2:-3}
work=${WORK:-/tmp/orch-jail-compare}
log="$work/auth.log"
mkdir -p "$work"

command -v hyperfine >/dev/null || { echo "hyperfine is needed" >&2; exit 1; }
[ -x /usr/bin/time ] || apt-get install -y time
# fail2ban and fail2ban-rs; sets $f2brs.
. benches/peers.sh

cargo build --release --bin orch
cargo bench --bench authlog -- generate "$log" "$lines" 30
orch=target/release/orch

# fail2ban-rs needs a config file: a [global] table and the jail that
# `gen-config sshd` prints.
{
  printf '[global]\nstate_dir = "%s/f2brs-state"\nsocket_path = "%s/f2brs.sock"\n\n' "$work" "$work"
  "$f2brs" gen-config sshd | sed "s#^log_path = .*#log_path = \"$log\"#"
} > "$work/fail2ban-rs.toml"

echo "== machine"
uname -srm
grep -m1 'model name' /proc/cpuinfo
nproc
"$orch" --version 2>/dev/null || true
fail2ban-regex --version | head -1
"$f2brs" --version

echo "== counts and lines/s as each tool prints them"
"$orch" test-filter sshd "$log"
fail2ban-regex "$log" /etc/fail2ban/filter.d/sshd.conf | grep -E '^(Failregex:|Lines:|\[processed)|^[|]  *[0-9]+[)]' | cut -c1-100
"$f2brs" -c "$work/fail2ban-rs.toml" dry-run "$log" | sed -n '1,/Would ban/p'

echo "== max RSS (KiB)"
for name in orch fail2ban-regex fail2ban-rs; do
  case $name in
    orch) set -- "$orch" test-filter sshd "$log" ;;
    fail2ban-regex) set -- fail2ban-regex "$log" /etc/fail2ban/filter.d/sshd.conf ;;
    fail2ban-rs) set -- "$f2brs" -c "$work/fail2ban-rs.toml" dry-run "$log" ;;
  esac
  /usr/bin/time -v "$@" 2>&1 >/dev/null | sed -n "s/.*Maximum resident set size (kbytes): /$name: /p"
done

echo "== hyperfine"
hyperfine --runs "$runs" --export-markdown "$work/hyperfine.md" \
  -n orch "$orch test-filter sshd $log" \
  -n fail2ban-regex "fail2ban-regex $log /etc/fail2ban/filter.d/sshd.conf" \
  -n fail2ban-rs "$f2brs -c $work/fail2ban-rs.toml dry-run $log"
cat "$work/hyperfine.md"
