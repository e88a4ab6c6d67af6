# Chapter: campaigns -- 60 lightweight agents (the device protocol over HTTP, outcomes drawn
# per release) on a server of its own (SQLite, local files; MQTT push when Mosquitto is
# there): a bad release is halted by the automatic kill switch inside its first wave, a good
# one goes through every wave. Then the 5 M-vehicle simulation's view of both, plotted, and a
# short report in campaigns-report.md.
chapter "Campaigns: a server, three releases (2.0.0 is bad), 60 vehicles on 1.0.0"
CSRV="$WORK/csrv"
MQTT_ARGS=()
if command -v mosquitto >/dev/null; then
  (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null \
    || mosquitto -d -c /etc/mosquitto/mosquitto.conf 2>/dev/null || true
  for _ in $(seq 20); do
    (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && { MQTT_ARGS=(--mqtt mqtt://127.0.0.1:1883); break; }
    sleep 0.1
  done
fi
otaguard server run --data-dir "$CSRV" --port 0 "${MQTT_ARGS[@]}" > "$WORK/campaign-server.log" 2>&1 &
CSRV_PID=$!
AGENTS_PID=""
trap 'kill $CSRV_PID $AGENTS_PID 2>/dev/null || true' EXIT
CURL=$(server_url "$WORK/campaign-server.log")
cadmin() { otaguard fleet --server "$CURL" --token-file "$CSRV/admin.token" "$@"; }
for k in c-root c-targets c-release; do
  otaguard key generate --algorithm ed25519 --out "$WORK/$k.pem" --public-out "$WORK/$k.pub" >/dev/null
done
otaguard repo init "$WORK/crel" --root-key "$WORK/c-root.pem" --targets-key "$WORK/c-targets.pub" \
  --snapshot-key "$CSRV/online-keys/snapshot.pub" --timestamp-key "$CSRV/online-keys/timestamp.pub" >/dev/null
# each release declares, in the signed targets metadata, the versions it may replace (R156's
# software configuration): campaigns take it from there, and vehicles check it again
for v in 1 2 3; do
  head -c 16384 /dev/urandom > "$WORK/c-$v.bin"
  otaguard sign --key "$WORK/c-release.pem" --version "$v.0.0" --security-counter "$v" \
    --hardware-id acme-ecu-v2 "$WORK/c-$v.bin" "$WORK/c-$v.img" >/dev/null
  replaces=()
  for ((r = 1; r < v; r++)); do replaces+=(--compatible-with "$r.0.0"); done
  otaguard repo add-target "$WORK/crel" "$WORK/c-$v.img" --name "acme-ecu-v2/$v.0.0.img" \
    --trusted-key "$WORK/c-release.pub" "${replaces[@]}" >/dev/null
done
otaguard repo sign "$WORK/crel" --key "$WORK/c-root.pem" --key "$WORK/c-targets.pem" >/dev/null
run cadmin release publish --repo "$WORK/crel"
otaguard pki init-root --out-dir "$WORK/c-devroot" --subject "CN=Acme Vehicles Root" >/dev/null
otaguard pki issue-intermediate --ca "$WORK/c-devroot" --out-dir "$WORK/c-devca" \
  --purpose device-identity >/dev/null
run cadmin enroll --ca "$WORK/c-devca/cert.pem" --hardware-id acme-ecu-v2 --region eu
cadmin token create --role operator --name olga > "$WORK/olga.token" 2>/dev/null
olga() { otaguard fleet --server "$CURL" --token-file "$WORK/olga.token" "$@"; }
PUSH=()
[ ${#MQTT_ARGS[@]} -gt 0 ] && PUSH=(--push)
printf '%s$ otaguard fleet-agents --server %s --device-ca c-devca --count 60 ... &%s\n' \
  "$dim" "$CURL" "$reset"
otaguard fleet-agents --server "$CURL" --device-ca "$WORK/c-devca" --count 60 \
  --hardware-id acme-ecu-v2 --director-root "$CSRV/director-root.json" \
  --repo-metadata "$CSRV/repo/metadata" --factory "acme-ecu-v2/1.0.0.img=$WORK/c-1.img" \
  --release "acme-ecu-v2/2.0.0.img=$WORK/c-2.img" --release "acme-ecu-v2/3.0.0.img=$WORK/c-3.img" \
  --fail "acme-ecu-v2/2.0.0.img=0.6" --poll 0.5 "${PUSH[@]}" --stop-file "$WORK/agents.stop" \
  --seconds 240 > "$WORK/agents.json" &
AGENTS_PID=$!
enrolled() { cadmin devices --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
for _ in $(seq 300); do [ "$(enrolled)" -ge 60 ] && break; sleep 0.2; done
echo "$(enrolled) vehicles enrolled, each reporting 1.0.0"
cat > "$WORK/policy.toml" <<'TOML'
[waves]
fractions = [0.3, 1.0]
min_devices = 1
min_soak_s = 2.0
[advance]
min_confirmed = 5
require_health = false
[halt]
failure_threshold = 0.15
confidence = 0.9
min_sample = 6
methods = ["wilson"]
revert_on_halt = true
TOML
cat > "$WORK/campaign-line.py" <<'PY'
import json, sys
c = json.load(sys.stdin)
w = c["waves"]
line = (f"{c['status']}: wave {c['wave']} of 0-{len(c['plan']) - 1} (cumulative {c['plan']}), "
        f"confirmed {sum(x['confirmed'] for x in w)}, failed {sum(x['failures'] for x in w)}")
print(line + (f" -- {c['end_reason']}" if c["end_reason"] else ""))
PY
# campaign: create (the release manager), approve and start (olga: another person), then
# wait for the evaluator; prints one line per change
campaign() {
  local target=$1 name=$2 id status last=""
  id=$(cadmin campaign create "$target" --name "$name" --hardware-id acme-ecu-v2 \
    --policy "$WORK/policy.toml" --json \
    | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["id"], json.dumps(c["compatible"]))')
  printf '%s$ otaguard fleet campaign create %s --name %s ... ; approve, start (olga)%s\n' \
    "$dim" "$target" "$name" "$reset"
  echo "  installs over ${id#* } (what the release declares)"
  id=${id%% *}
  olga campaign approve "$id" >/dev/null && olga campaign start "$id" >/dev/null
  for _ in $(seq 240); do
    status=$(olga campaign status "$id" --json | python3 "$WORK/campaign-line.py")
    [ "$status" != "$last" ] && echo "  $status" && last=$status
    case "$status" in halted*|completed*|cancelled*) break;; esac
    sleep 0.25
  done
  echo "$id" > "$WORK/$name.id"
  echo "$status" > "$WORK/$name.status"
}

chapter "Campaigns: 2.0.0 fails at boot on 3 vehicles in 5 -- the kill switch halts it in its first wave"
campaign acme-ecu-v2/2.0.0.img bad-2.0.0
sleep 1.5  # the vehicles in flight hear it: abandon their downloads, leave their trials

chapter "Campaigns: 3.0.0 is good -- every wave, every vehicle"
campaign acme-ecu-v2/3.0.0.img good-3.0.0
touch "$WORK/agents.stop"; wait "$AGENTS_PID" 2>/dev/null || true; AGENTS_PID=""
python3 - "$WORK/agents.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"the vehicles: {s['requests']} signed requests, {s['health_reports']} health reports, "
      f"{s['pushed_checkins']} check-ins brought forward by push, errors {s['errors'] or 'none'}")
for key, n in s["outcomes"].items():
    print(f"  {key}: {n}")
PY

chapter "Campaigns: a bad and a good release over 200,000 simulated vehicles (otaguard sim)"
for kind in bad:0.2 good:0.005; do
  printf '%s$ otaguard sim --devices 200000 --bad-release-failure-rate %s --seed 1 --plot sim-%s.png --json%s\n' \
    "$dim" "${kind#*:}" "${kind%%:*}" "$reset"
  otaguard sim --devices 200000 --bad-release-failure-rate "${kind#*:}" --seed 1 \
    --plot "$WORK/sim-${kind%%:*}.png" --json > "$WORK/sim-${kind%%:*}.json"
done
python3 - "$WORK" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
bad, good = (json.loads((w / f"sim-{k}.json").read_text()) for k in ("bad", "good"))
agents = json.loads((w / "agents.json").read_text())
o = agents["outcomes"]
lines = [
    "# Campaigns: the demo's report", "",
    "## Over HTTP: 60 lightweight agents against the real server (SQLite)", "",
    f"- bad release 2.0.0 (fails at boot on 3 vehicles in 5): {(w / 'bad-2.0.0.status').read_text().strip()}",
    f"  - offered to {agents['offered'].get('acme-ecu-v2/2.0.0.img', 0)} vehicles; "
    f"confirmed {o.get('acme-ecu-v2/2.0.0.img:confirmed', 0)}, failed at boot "
    f"{o.get('acme-ecu-v2/2.0.0.img:reverted', 0)}, told to revert "
    f"{o.get('acme-ecu-v2/2.0.0.img:reverted-told', 0)}, abandoned {o.get('acme-ecu-v2/2.0.0.img:abandoned', 0)}",
    f"- good release 3.0.0: {(w / 'good-3.0.0.status').read_text().strip()}",
    f"  - confirmed on {o.get('acme-ecu-v2/3.0.0.img:confirmed', 0)} vehicles", "",
    "## Simulated: 200,000 vehicles, the default policy (`otaguard sim`)", "",
    "| release | halted | halt wave | exposed | installed |", "|---|---|---|---|---|",
    f"| bad (20 % fail) | {bad['halted']} | {bad['halt_wave']} | {bad['exposed']:,} | {bad['installed']:,} |",
    f"| good (0.5 % fail) | {good['halted']} | {good['halt_wave']} | {good['exposed']:,} | {good['installed']:,} |",
    "", "![bad release](sim-bad.png)", "", "![good release](sim-good.png)", "",
]
(w / "campaigns-report.md").write_text("\n".join(lines))
print("\n".join(lines[:12]))
PY
echo "report: $OUT/campaigns-report.md (with sim-bad.png and sim-good.png)"
kill "$CSRV_PID" 2>/dev/null || true
trap - EXIT
