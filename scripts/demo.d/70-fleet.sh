# Chapter: the fleet -- a server on SQLite, three enrolled vehicles, one release over HTTP,
# one vehicle behind a link that the fault proxy keeps cutting. Uses chapter 1's release
# key and the repository chapter's alice/bob keys.
chapter "Fleet: the server initialises itself; release managers sign 2.0.0 offline"
SRV="$WORK/srv"
otaguard server run --data-dir "$SRV" --port 0 > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID $PROXY_PID 2>/dev/null || true' EXIT
PROXY_PID=""
URL=$(server_url "$WORK/server.log")
cat "$WORK/server.log"
fleet() { otaguard fleet --server "$URL" --token-file "$SRV/admin.token" "$@"; }
otaguard key generate --algorithm ed25519 --out "$WORK/fleet-root.pem" >/dev/null
run otaguard repo init "$WORK/rel" --root-key "$WORK/fleet-root.pem" \
  --targets-key "$WORK/alice.pub" --targets-key "$WORK/bob.pub" --targets-threshold 2 \
  --snapshot-key "$SRV/online-keys/snapshot.pub" --timestamp-key "$SRV/online-keys/timestamp.pub"
for version in 1.0.0 2.0.0; do
  head -c 98304 /dev/urandom > "$WORK/app-$version.bin"
  otaguard sign --key "$WORK/release.pem" --version "$version" --security-counter "${version%%.*}" \
    --hardware-id acme-ecu-v2 "$WORK/app-$version.bin" "$WORK/app-$version.img" >/dev/null
  run otaguard repo add-target "$WORK/rel" "$WORK/app-$version.img" \
    --name "acme-ecu-v2/$version.img" --trusted-key "$WORK/release.pub"
done
run otaguard repo sign "$WORK/rel" --key "$WORK/fleet-root.pem" --key "$WORK/alice.pem" \
  --key "$WORK/bob.pem"

chapter "Fleet: the operator uploads the release (the server checks every signature first)"
run fleet release publish --repo "$WORK/rel"
run otaguard pki init-root --out-dir "$WORK/devroot" --subject "CN=Acme Vehicles Root"
run otaguard pki issue-intermediate --ca "$WORK/devroot" --out-dir "$WORK/devca" \
  --purpose device-identity
run fleet enroll --ca "$WORK/devca/cert.pem" --hardware-id acme-ecu-v2 --region eu

chapter "Fleet: three vehicles leave the factory with 1.0.0, an identity and their trust anchors"
for n in 1 2 3; do
  otaguard device init "$WORK/car$n" --trusted-key "$WORK/release.pub" --hardware-id acme-ecu-v2 >/dev/null
  otaguard device install "$WORK/car$n" "$WORK/app-1.0.0.img" >/dev/null
  otaguard device boot "$WORK/car$n" >/dev/null && otaguard device confirm "$WORK/car$n" >/dev/null
  run otaguard pki issue-device --ca "$WORK/devca" --out-dir "$WORK/id$n" --device-id "WVW00000$n"
  run otaguard agent provision --device-dir "$WORK/car$n" \
    --repo-root "$SRV/repo/metadata/1.root.json" --director-root "$SRV/director-root.json"
done
printf '{"chunk_size": 16384, "backoff": {"network": {"base": 0.1, "cap": 1, "attempts": 40}}}\n' \
  > "$WORK/agent.json"
# agent: one check-in; its JSON log to a file, the events it reported on screen
agent() {
  local n=$1 url=$2
  printf '%s$ otaguard agent run --device-dir car%s --server %s --identity id%s --once%s\n' \
    "$dim" "$n" "$url" "$n" "$reset"
  otaguard agent run --device-dir "$WORK/car$n" --server "$url" --identity "$WORK/id$n" --once \
    --config "$WORK/agent.json" > "$WORK/agent$n.log"
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event"] == "event":
        print("  reported:", e["kind"], e["target"] or "")
    elif e["event"] in ("enrolled", "cycle"):
        print("  " + e["event"] + ":", ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("time", "event")))
    elif e["event"] == "failed":
        print("  retry:", e["failure"], "attempt", e["attempt"])
' "$WORK/agent$n.log"
}
for n in 1 2 3; do agent "$n" "$URL"; done
run fleet devices

chapter "Fleet: deploy 2.0.0 to the group; car3's link is cut again and again (fault proxy)"
run fleet deploy acme-ecu-v2/2.0.0.img --group acme-ecu-v2-eu
agent 1 "$URL"
agent 2 "$URL"
python3 -m otaguard.tools.faultproxy --upstream "${URL#http://}" --seed 7 --cut 0.8 \
  --max-offset 40000 --port-file "$WORK/proxy.port" > "$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 100); do [ -s "$WORK/proxy.port" ] && break; sleep 0.1; done
agent 3 "http://127.0.0.1:$(cat "$WORK/proxy.port")"
kill -TERM "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
tail -1 "$WORK/proxy.log"
run fleet device WVW000003
run otaguard device status "$WORK/car3"
kill "$SERVER_PID" 2>/dev/null || true
trap - EXIT
