# Chapter: differential updates. Ships a small fix to 1.5.0 (chapter 30's release) as a signed
# delta: the device rebuilds the signed 1.5.1 image from its active slot and verifies it.
chapter "Delta: ship 1.5.1 as a signed delta to a device running 1.5.0"
run otaguard device init "$WORK/ecu-delta" --trusted-key "$WORK/release.pub" \
  --hardware-id acme-ecu-v2 --geometry nor-4k
run otaguard device install "$WORK/ecu-delta" "$WORK/fw-1.5.0.img"
run otaguard device boot "$WORK/ecu-delta"
run otaguard device confirm "$WORK/ecu-delta"
# 1.5.1 = 1.5.0 with a small fix: a few bytes inserted, everything after them moves.
{ head -c 100000 "$WORK/firmware-1.5.0.bin"; printf 'if (len > CAN_MAX_DLEN) return -EINVAL;'
  tail -c +100001 "$WORK/firmware-1.5.0.bin"; } > "$WORK/firmware-1.5.1.bin"
run otaguard sign --key "$WORK/release.pem" --version 1.5.1 --security-counter 9 \
  --hardware-id acme-ecu-v2 "$WORK/firmware-1.5.1.bin" "$WORK/fw-1.5.1.img"
run otaguard delta create --key "$WORK/release.pem" "$WORK/fw-1.5.0.img" "$WORK/fw-1.5.1.img" \
  "$WORK/fw-1.5.0-to-1.5.1.delta"
full=$(wc -c < "$WORK/fw-1.5.1.img"); delta=$(wc -c < "$WORK/fw-1.5.0-to-1.5.1.delta")
printf '%sfull image %s bytes, delta %s bytes: %s bytes saved over the air%s\n' \
  "$green" "$full" "$delta" "$((full - delta))" "$reset"

chapter "Delta: one made for another base is refused before anything is written"
run otaguard delta create --key "$WORK/release.pem" "$WORK/fw-1.4.0.img" "$WORK/fw-1.5.1.img" \
  "$WORK/fw-1.4.0-to-1.5.1.delta"
refuse 1 otaguard device install "$WORK/ecu-delta" "$WORK/fw-1.4.0-to-1.5.1.delta"
refuse 1 otaguard delta apply "$WORK/fw-1.4.0.img" "$WORK/fw-1.5.0-to-1.5.1.delta" "$WORK/x.img"

chapter "Delta: the device applies it from its active slot; the result is the signed image"
run otaguard device install "$WORK/ecu-delta" "$WORK/fw-1.5.0-to-1.5.1.delta"
run otaguard device boot "$WORK/ecu-delta"
run otaguard delta apply --trusted-key "$WORK/release.pub" "$WORK/fw-1.5.0.img" \
  "$WORK/fw-1.5.0-to-1.5.1.delta" "$WORK/fw-1.5.1-rebuilt.img"
run cmp "$WORK/fw-1.5.1-rebuilt.img" "$WORK/fw-1.5.1.img"
