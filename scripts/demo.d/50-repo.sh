# Chapter: the TUF image repository, two of three release managers, a real HTTP client.
chapter "Repository: a release goes live only when 2 of 3 release managers signed"
for who in alice bob carol; do
  otaguard key generate --algorithm ed25519 --out "$WORK/$who.pem" --public-out "$WORK/$who.pub" >/dev/null
done
run otaguard repo init "$WORK/repo" --root-key "$WORK/release.pem" \
  --targets-key "$WORK/alice.pub" --targets-key "$WORK/bob.pub" --targets-key "$WORK/carol.pub" \
  --targets-threshold 2
run otaguard repo add-target "$WORK/repo" "$WORK/fw-1.5.0.img" --name acme-ecu-v2/1.5.0.img \
  --trusted-key "$WORK/release.pub"
run otaguard repo sign "$WORK/repo" --key "$WORK/alice.pem"
refuse 1 otaguard repo publish "$WORK/repo"
run otaguard repo sign "$WORK/repo" --key "$WORK/bob.pem"
run otaguard repo publish "$WORK/repo"

chapter "Repository: a vehicle's TUF client over HTTP; a mirror serving other bytes is caught"
python3 -m http.server 0 --bind 127.0.0.1 --directory "$WORK/repo" > "$WORK/http.log" 2>&1 &
HTTP_PID=$!
trap 'kill $HTTP_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "port" "$WORK/http.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$WORK/http.log" | head -1)
URL="http://127.0.0.1:$PORT"
mkdir -p "$WORK/car/meta" "$WORK/car/dl"
run otaguard tuf-client --metadata-dir "$WORK/car/meta" init "$WORK/repo/metadata/1.root.json"
run otaguard tuf-client --metadata-dir "$WORK/car/meta" --metadata-url "$URL/metadata/" \
  --target-name acme-ecu-v2/1.5.0.img --target-base-url "$URL/targets/" --target-dir "$WORK/car/dl" download
ls "$WORK/car/dl"
served=$(ls "$WORK"/repo/targets/acme-ecu-v2/*.1.5.0.img)
printf '\x42' | dd of="$served" bs=1 seek=1000 conv=notrunc status=none
rm -f "$WORK"/car/dl/*
refuse 1 otaguard tuf-client --metadata-dir "$WORK/car/meta" --metadata-url "$URL/metadata/" \
  --target-name acme-ecu-v2/1.5.0.img --target-base-url "$URL/targets/" --target-dir "$WORK/car/dl" download

chapter "Repository: a bad release is pulled; the vehicle no longer finds it"
run otaguard repo remove-target "$WORK/repo" acme-ecu-v2/1.5.0.img
run otaguard repo sign "$WORK/repo" --key "$WORK/alice.pem"
run otaguard repo sign "$WORK/repo" --key "$WORK/carol.pem"
run otaguard repo publish "$WORK/repo"
refuse 1 otaguard tuf-client --metadata-dir "$WORK/car/meta" --metadata-url "$URL/metadata/" \
  --target-name acme-ecu-v2/1.5.0.img --target-base-url "$URL/targets/" --target-dir "$WORK/car/dl" download
kill $HTTP_PID 2>/dev/null || true
trap - EXIT
