# Chapter 1: keys, a signed image, verification, and a tampered copy refused.
chapter "1. Keys and a signed firmware image"
run otaguard key generate --algorithm ed25519 --out "$WORK/release.pem" --public-out "$WORK/release.pub"
head -c 262144 /dev/urandom > "$WORK/firmware-1.4.0.bin"
run otaguard sign --key "$WORK/release.pem" --version 1.4.0 --security-counter 7 \
  --hardware-id acme-ecu-v2 --annotate git=4f2a9c1 "$WORK/firmware-1.4.0.bin" "$WORK/fw-1.4.0.img"
run otaguard inspect "$WORK/fw-1.4.0.img"
run otaguard verify --trusted-key "$WORK/release.pub" --hardware-id acme-ecu-v2 \
  --min-security-counter 7 "$WORK/fw-1.4.0.img"

chapter "2. An attacker flips one byte of the payload"
cp "$WORK/fw-1.4.0.img" "$WORK/fw-tampered.img"
printf '\x42' | dd of="$WORK/fw-tampered.img" bs=1 seek=4096 conv=notrunc status=none
refuse 1 otaguard verify --trusted-key "$WORK/release.pub" "$WORK/fw-tampered.img"
run otaguard key generate --algorithm ecdsa-p256 --out "$WORK/attacker.pem"
run otaguard sign --key "$WORK/attacker.pem" --version 9.9.9 --security-counter 99 \
  --hardware-id acme-ecu-v2 "$WORK/firmware-1.4.0.bin" "$WORK/fw-forged.img"
refuse 1 otaguard verify --trusted-key "$WORK/release.pub" "$WORK/fw-forged.img"
refuse 1 otaguard verify --trusted-key "$WORK/release.pub" --hardware-id acme-ecu-v3 "$WORK/fw-1.4.0.img"
