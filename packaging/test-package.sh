#!/usr/bin/env bash
# The Debian package as an operator uses it, on a machine without systemd running (CI):
# install it; check the unit (`systemd-analyze verify`); follow the README's install steps
# (copy the shipped flows, lookups and schemas to /etc/ferry, fill /etc/ferry/ferry.env);
# start the unit's ExecStart line as its User, in its WorkingDirectory, with its Environment
# and EnvironmentFile, all read from the installed unit; check that it first refuses to start
# naming the file to edit, then that it serves /healthz on FERRY_LISTEN and runs a shipped
# file flow end to end through the API (bytes at the target, source renamed, run succeeded,
# email written); stop it with SIGTERM; purge the package and check what is left.
#
#   packaging/test-package.sh DEB        (as root; .ci/run calls it after cargo test)
#
# Silent when all is well; on failure says what and prints the service's log. Refuses to run
# where ferry is installed already (it installs, runs and purges the package).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
deb="${1:?usage: packaging/test-package.sh DEB}"
unit=/usr/lib/systemd/system/ferry.service
readme="$root/README.md"
flow=OUTL-BA-DACS_OUAI_FTP_ENROLL
sample="$root/examples/demo/data/dacs-ftp/sploutput/DACSEnv/enroll/ENROLL_SYNC_20230210_0100.csv"
name="$(basename "$sample")"

work="$(mktemp -d)"
log="$work/serve.log"
pid=""

fail() {
  echo "test-package: $*" >&2
  if [ -s "$log" ]; then
    echo "--- the service's output:" >&2
    cat "$log" >&2
  fi
  exit 1
}

if dpkg-query -W -f='${Status}' ferry 2>/dev/null | grep -q installed; then
  fail "ferry is installed on this machine; this test installs, runs and purges the package: dpkg --purge ferry first"
fi
made_user=no
getent passwd ferry >/dev/null || made_user=yes
made_state=no
[ -e /var/lib/ferry ] || made_state=yes
made_etc=no
[ -e /etc/ferry ] || made_etc=yes

cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  dpkg --purge ferry >/dev/null 2>&1 || true
  [ "$made_etc" = yes ] && rm -rf /etc/ferry
  [ "$made_state" = yes ] && rm -rf /var/lib/ferry
  if [ "$made_user" = yes ] && getent passwd ferry >/dev/null; then
    userdel ferry >/dev/null 2>&1 || true
    getent group ferry >/dev/null && groupdel ferry >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- install; the binary and the unit ---------------------------------------------------------
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i $deb failed"; }
dpkg -L ferry >"$work/files"
version="$(ferry --version)"
case "$version" in
  "ferry "[0-9]*) ;;
  *) fail "the installed ferry answers --version with '$version'" ;;
esac
verify="$(systemd-analyze verify "$unit" 2>&1)" || true
[ -z "$verify" ] || fail "systemd-analyze verify $unit: $verify"
[ "$(stat -c '%U:%G %a' /etc/ferry/ferry.env)" = "root:ferry 640" ] ||
  fail "/etc/ferry/ferry.env is $(stat -c '%U:%G %a' /etc/ferry/ferry.env), not root:ferry 640"

# --- the unit, as systemd would read it -------------------------------------------------------
key() { sed -n "s/^$1=//p" "$unit"; }
exec_start="$(key ExecStart)"
user="$(key User)"
group="$(key Group)"
workdir="$(key WorkingDirectory)"
env_file="$(key EnvironmentFile)"
umask_unit="$(key UMask)"
state="/var/lib/$(key StateDirectory)"
state_mode="$(key StateDirectoryMode)"
read -r -a unit_env <<<"$(key Environment | tr '\n' ' ')"
[ "$(key ExecStart | wc -l)" = 1 ] || fail "$unit has not one ExecStart line"
case "$exec_start$env_file" in
  *[\"\'\\]* | [-+@!:]*) fail "$unit: ExecStart or EnvironmentFile uses syntax this test does not emulate: $exec_start" ;;
esac
# StateDirectory=: systemd makes it, owned by the service's user
install -d -o "$user" -g "$group" -m "$state_mode" "$state"

home="$(getent passwd "$user" | cut -d: -f6)"
# starts the service in the background (output to $log), as systemd would
start() {
  local file_env=()
  mapfile -t file_env < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$env_file")
  (
    cd "$workdir"
    umask "$umask_unit"
    # shellcheck disable=SC2086 # ExecStart's words, as systemd splits them
    exec setpriv --reuid="$user" --regid="$group" --init-groups -- \
      env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" USER="$user" LOGNAME="$user" \
      "${unit_env[@]}" "${file_env[@]}" $exec_start
  ) >"$log" 2>&1 </dev/null &
  pid=$!
}

# the README and the guide it links to are installed together: each relative link resolves
doc=/usr/share/doc/ferry
[ -f "$doc/README.md" ] || fail "the package has no $doc/README.md"
while IFS= read -r link; do
  [ -e "$doc/$link" ] || fail "the installed README links to $link, which the package lacks"
done < <(grep -o '](docs/[^)#]*' "$doc/README.md" | sed 's/^](//' | sort -u)

# --- the README's install steps ---------------------------------------------------------------
# the copy line of the README's "Debian package" block, as written there (without sudo)
copy="$(sed -n 's/^sudo \(cp -r \/usr\/share\/ferry\/[^#]*\).*$/\1/p' "$readme")"
[ "$(wc -l <<<"$copy")" = 1 ] && [ -n "$copy" ] || fail "no single 'sudo cp -r /usr/share/ferry/…' line in the README"
eval "$copy"
for d in flows lookups schemas; do
  [ -d "/etc/ferry/$d" ] || fail "the README's step '$copy' made no /etc/ferry/$d"
done
# the yaml-language-server modelines resolve where the files now are
while IFS= read -r -d '' f; do
  schema="$(sed -n '1s/^# yaml-language-server: \$schema=//p' "$f")"
  [ -z "$schema" ] || [ -f "$(dirname "$f")/$schema" ] || fail "$f: its schema $schema is not there"
done < <(find /etc/ferry -name '*.yaml' -print0)

# as installed, the service refuses to start and says what to set where
start
code=0
timeout 60 tail --pid="$pid" -f /dev/null || fail "the unconfigured service did not exit"
wait "$pid" || code=$?
pid=""
[ "$code" = 2 ] || fail "the unconfigured service exited $code, not 2"
grep -qF "set FERRY_DERMS_TRIGGER_USER and FERRY_DERMS_TRIGGER_PASSWORD in $env_file" "$log" ||
  fail "the unconfigured service does not say to set the trigger credentials in $env_file"

# fill /etc/ferry/ferry.env as an operator would
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
listen="127.0.0.1:$port"
op_user=ops
op_password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
sed -i -e 's/^FERRY_DERMS_TRIGGER_USER=.*/FERRY_DERMS_TRIGGER_USER=derms/' \
  -e "s/^FERRY_DERMS_TRIGGER_PASSWORD=.*/FERRY_DERMS_TRIGGER_PASSWORD=$op_password-derms/" "$env_file"
cat >>"$env_file" <<ENV
FERRY_OPERATOR_USER=$op_user
FERRY_OPERATOR_PASSWORD=$op_password
FERRY_LISTEN=$listen
FERRY_NO_SCHEDULES=true
ENV

# --- the service runs, and runs a flow --------------------------------------------------------
start
url="http://$listen"
for _ in $(seq 1 300); do
  curl -fsS "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "the service exited before answering /healthz on $listen"
  sleep 0.1
done
[ "$(curl -sS "$url/healthz")" = ok ] || fail "/healthz on $listen does not answer ok"

data="$workdir/ferry-data" # ${FERRY_DATA:-./ferry-data} in the shipped connections.yaml
src="$data/dacs-ftp/sploutput/DACSEnv/enroll"
setpriv --reuid="$user" --regid="$group" --init-groups -- mkdir -p "$src"
install -o "$user" -g "$group" -m 0640 "$sample" "$src/$name"

api() { curl -sS -u "$op_user:$op_password" -o "$work/body" -w '%{http_code}' "$@"; }
status="$(api -X POST "$url/api/v1/flows/$flow/runs")"
[ "$status" = 202 ] || fail "POST /api/v1/flows/$flow/runs answered $status: $(cat "$work/body")"
run="$(jq -r .run_id "$work/body")"
outcome=running
for _ in $(seq 1 600); do
  status="$(api "$url/api/v1/runs/$run")"
  [ "$status" = 200 ] || fail "GET /api/v1/runs/$run answered $status: $(cat "$work/body")"
  outcome="$(jq -r .outcome "$work/body")"
  [ "$outcome" = running ] || break
  sleep 0.1
done
[ "$outcome" = succeeded ] || fail "run $run of $flow ended $outcome: $(cat "$work/body")"
target="$data/ouai-os/ouainamespace/OUAIEnrollFolder/$name"
cmp -s "$sample" "$target" || fail "$target does not hold the bytes of $name"
[ ! -e "$src/$name" ] && cmp -s "$sample" "$src/Sent-$name" ||
  fail "the source was not renamed Sent-$name: $(ls -A "$src")"
grep -qlF "process complete" "$data"/outbox/*.eml 2>/dev/null ||
  fail "no 'process complete' email in $data/outbox"

# ProtectSystem=strict lets the service write only its state directory (and a private /tmp)
stray="$(find /etc /usr /var /opt /srv /home /root -xdev \( -path /var/tmp -o -path "$state" \) -prune \
  -o -user "$user" -print 2>/dev/null | head -5)"
[ -z "$stray" ] || fail "the service wrote outside $state: $stray"

# SIGTERM: a graceful stop, exit 0
kill -TERM "$pid"
code=0
timeout 60 tail --pid="$pid" -f /dev/null || fail "the service did not stop within 60 s of SIGTERM"
wait "$pid" || code=$?
pid=""
[ "$code" = 0 ] || fail "the service exited $code after SIGTERM"

# --- purge ---------------------------------------------------------------------------------------
dpkg --purge ferry >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --purge ferry failed"; }
while IFS= read -r f; do
  [ -d "$f" ] && continue
  [ ! -e "$f" ] || fail "dpkg --purge left $f"
done <"$work/files"
[ ! -e /etc/ferry/ferry.env ] || fail "dpkg --purge left /etc/ferry/ferry.env"
left="$(cd /etc/ferry && ls -A | tr '\n' ' ')"
[ "$left" = "flows lookups schemas " ] || fail "after purge /etc/ferry holds '$left', not only what the operator copied"
# kept, as documented (packaging/debian/postrm): the ferry user and the run history
getent passwd ferry >/dev/null || fail "dpkg --purge removed the ferry user"
[ -n "$(ls -A "$state")" ] || fail "dpkg --purge emptied $state"
