# Chapter: the device side -- verify-before-boot, A/B slots, trial and confirm,
# anti-rollback fuses, automatic revert, power loss. Uses chapter 1's release key
# and fw-1.4.0.img (hardware id acme-ecu-v2, security counter 7).
chapter "Device: manufacture, first install, trial boot, confirm"
run otaguard device init "$WORK/ecu" --trusted-key "$WORK/release.pub" --hardware-id acme-ecu-v2 \
  --geometry nor-4k --fuse-bits 64
run otaguard device install "$WORK/ecu" "$WORK/fw-1.4.0.img"
run otaguard device boot "$WORK/ecu"
run otaguard device confirm "$WORK/ecu"

chapter "Device: update to 1.5.0 (counter 8); the fuses follow only after confirm"
head -c 262144 /dev/urandom > "$WORK/firmware-1.5.0.bin"
run otaguard sign --key "$WORK/release.pem" --version 1.5.0 --security-counter 8 \
  --hardware-id acme-ecu-v2 "$WORK/firmware-1.5.0.bin" "$WORK/fw-1.5.0.img"
run otaguard device install "$WORK/ecu" "$WORK/fw-1.5.0.img"
run otaguard device boot "$WORK/ecu"
run otaguard device confirm "$WORK/ecu"
run otaguard device status "$WORK/ecu"

chapter "Device: an attacker brings back the validly signed 1.4.0 (rollback)"
refuse 1 otaguard device install "$WORK/ecu" "$WORK/fw-1.4.0.img"
refuse 1 otaguard device install "$WORK/ecu" "$WORK/fw-forged.img"
# With physical access: straight into the other slot, boot control pointed at it.
run otaguard device flash-raw "$WORK/ecu" --slot a --activate "$WORK/fw-1.4.0.img"
run otaguard device boot "$WORK/ecu"

chapter "Device: 1.6.0 crash-loops (never confirmed) and the device reverts by itself"
head -c 262144 /dev/urandom > "$WORK/firmware-1.6.0.bin"
run otaguard sign --key "$WORK/release.pem" --version 1.6.0 --security-counter 9 \
  --hardware-id acme-ecu-v2 "$WORK/firmware-1.6.0.bin" "$WORK/fw-1.6.0.img"
run otaguard device install "$WORK/ecu" "$WORK/fw-1.6.0.img"
for attempt in 1 2 3 4; do
  run otaguard device boot "$WORK/ecu"
done
run otaguard device status "$WORK/ecu"

chapter "Device: the power fails half-way through an install"
run otaguard device install "$WORK/ecu" "$WORK/fw-1.6.0.img" --power-cut-at 600
run otaguard device boot "$WORK/ecu"
