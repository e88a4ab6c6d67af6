# Chapter: MCUboot images, interoperable with MCUboot's own imgtool in both directions.
chapter "3. MCUboot images: we sign, imgtool checks; imgtool signs, we check"
run otaguard key generate --algorithm ecdsa-p256 --out "$WORK/mcu.pem" --public-out "$WORK/mcu.pub"
head -c 65536 /dev/urandom > "$WORK/zephyr.bin"
run otaguard sign --format mcuboot --key "$WORK/mcu.pem" --version 1.2.3+4 --security-counter 7 \
  --hardware-id acme-ecu-v2 --header-size 0x200 --pad-header --slot-size 0x20000 --pad --align 8 \
  "$WORK/zephyr.bin" "$WORK/zephyr-signed.bin"
run imgtool verify -k "$WORK/mcu.pem" "$WORK/zephyr-signed.bin"
run imgtool sign -k "$WORK/mcu.pem" -v 1.2.4 --security-counter 8 --header-size 0x200 --pad-header \
  -S 0x20000 "$WORK/zephyr.bin" "$WORK/zephyr-imgtool.bin"
run otaguard verify --trusted-key "$WORK/mcu.pub" --min-security-counter 8 "$WORK/zephyr-imgtool.bin"
run imgtool sign -v 1.2.4 --header-size 0x200 --pad-header -S 0x20000 \
  "$WORK/zephyr.bin" "$WORK/zephyr-hash-only.bin"
refuse 1 otaguard verify --trusted-key "$WORK/mcu.pub" "$WORK/zephyr-hash-only.bin"
