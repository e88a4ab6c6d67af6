# Chapter: the audit log of the story the fleet server told. It restarts the server of the
# fleet chapter (or, without one, starts its own and takes a few actions), exports the whole
# log as static files, verifies it offline, then edits one entry in the database: the
# verifier names it. Uses chapter 1's release key and image and the repository chapter's alice.
chapter "Audit: everything the server did is in its log, signed by its audit key"
SRV="$WORK/srv"
FRESH=0
[ -f "$SRV/server.db" ] || FRESH=1
otaguard server run --data-dir "$SRV" --port 0 > "$WORK/audit-server.log" 2>&1 &
AUDIT_PID=$!
trap 'kill $AUDIT_PID 2>/dev/null || true' EXIT
URL=$(server_url "$WORK/audit-server.log")
admin() { otaguard fleet --server "$URL" --token-file "$SRV/admin.token" "$@"; }
if [ "$FRESH" = 1 ]; then  # no fleet chapter before this one: a few actions of our own
  cat "$WORK/audit-server.log"
  otaguard pki init-root --out-dir "$WORK/audit-devroot" --subject "CN=Acme Vehicles Root" >/dev/null
  otaguard pki issue-intermediate --ca "$WORK/audit-devroot" --out-dir "$WORK/audit-devca" \
    --purpose device-identity >/dev/null
  run admin enroll --ca "$WORK/audit-devca/cert.pem" --hardware-id acme-ecu-v2 --region eu
  otaguard repo init "$WORK/audit-rel" --root-key "$WORK/release.pem" --targets-key "$WORK/alice.pub" \
    --snapshot-key "$SRV/online-keys/snapshot.pub" --timestamp-key "$SRV/online-keys/timestamp.pub" >/dev/null
  otaguard repo add-target "$WORK/audit-rel" "$WORK/fw-1.4.0.img" --name acme-ecu-v2/1.4.0.img \
    --trusted-key "$WORK/release.pub" >/dev/null
  otaguard repo sign "$WORK/audit-rel" --key "$WORK/release.pem" --key "$WORK/alice.pem" >/dev/null
  run admin release publish --repo "$WORK/audit-rel"
fi
admin token create --role auditor --name auditor > "$WORK/auditor.token"
auditor() { otaguard fleet --server "$URL" --token-file "$WORK/auditor.token" "$@"; }
run auditor audit export --out "$WORK/audit-export" --trusted-key "$SRV/audit.pub"
run otaguard audit verify --log "$WORK/audit-export" --trusted-key "$SRV/audit.pub"
cp "$WORK/audit-export/checkpoint" "$WORK/auditor-held.checkpoint"   # the auditor keeps it
if [ "$FRESH" = 0 ]; then
  run auditor audit vehicle WVW000003 --trusted-key "$SRV/audit.pub"
fi

if [ -f "$WORK/csrv/server.db" ]; then  # the campaigns chapter's server: its decisions, proven
  chapter "Audit: who approved each campaign, and why the kill switch halted 2.0.0"
  otaguard server run --data-dir "$WORK/csrv" --port 0 > "$WORK/campaign-audit.log" 2>&1 &
  CAUDIT_PID=$!
  trap 'kill $AUDIT_PID $CAUDIT_PID 2>/dev/null || true' EXIT
  for _ in $(seq 200); do grep -q "listening on" "$WORK/campaign-audit.log" && break; sleep 0.1; done
  CURL=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$WORK/campaign-audit.log" | head -1)
  otaguard fleet --server "$CURL" --token-file "$WORK/csrv/admin.token" \
    token create --role auditor --name auditor > "$WORK/c-auditor.token"
  cauditor() { otaguard fleet --server "$CURL" --token-file "$WORK/c-auditor.token" "$@"; }
  run cauditor audit export --out "$WORK/c-audit-export" --trusted-key "$WORK/csrv/audit.pub"
  run otaguard audit verify --log "$WORK/c-audit-export" --trusted-key "$WORK/csrv/audit.pub"
  run cauditor audit release acme-ecu-v2/2.0.0.img --trusted-key "$WORK/csrv/audit.pub"
  kill "$CAUDIT_PID" 2>/dev/null || true
  trap 'kill $AUDIT_PID 2>/dev/null || true' EXIT
fi

chapter "Audit: one entry edited in the database; the verifier names it"
command -v sqlite3 >/dev/null || sqlite3() {  # no sqlite3 shell: Python's module does the same
  python3 -c 'import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for row in db.execute(sys.argv[2]): print("|".join(map(str, row)))
db.commit()' "$@"
}
IDX=$(sqlite3 "$SRV/server.db" \
  "SELECT idx FROM audit_entries WHERE action = 'release.upload' ORDER BY idx LIMIT 1")
EDIT="UPDATE audit_entries SET data = CAST(REPLACE(CAST(data AS TEXT), '\"id\":\"admin\"', \
'\"id\":\"mallory\"') AS BLOB) WHERE idx = $IDX"
run sqlite3 "$SRV/server.db" "$EDIT"   # who published the release: now "mallory"
run auditor audit export --out "$WORK/audit-export-2" --trusted-key "$SRV/audit.pub"
refuse 1 otaguard audit verify --log "$WORK/audit-export-2" --trusted-key "$SRV/audit.pub" \
  --checkpoint "$WORK/auditor-held.checkpoint"
kill "$AUDIT_PID" 2>/dev/null || true
trap - EXIT
