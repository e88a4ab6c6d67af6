# Chapter: an offline root, a regional intermediate, a short-lived signer; revocation.
chapter "PKI: offline root -> EU release CA -> 90-day signer"
run otaguard pki init-root --out-dir "$WORK/pki/root" --subject "CN=Acme Root CA,O=Acme"
run otaguard pki issue-intermediate --ca "$WORK/pki/root" --out-dir "$WORK/pki/eu" \
  --region eu --hardware-id acme-ecu-v2
run otaguard pki issue-signer --ca "$WORK/pki/eu" --out-dir "$WORK/pki/release-2026q4" \
  --name release-2026q4 --days 90
run openssl verify -CAfile "$WORK/pki/root/cert.pem" -untrusted "$WORK/pki/eu/cert.pem" \
  "$WORK/pki/release-2026q4/cert.pem"
run otaguard sign --key "$WORK/pki/release-2026q4/key.pem" --cert-chain "$WORK/pki/release-2026q4/chain.pem" \
  --version 1.5.0 --security-counter 8 --hardware-id acme-ecu-v2 "$WORK/firmware-1.4.0.bin" "$WORK/fw-1.5.0-pki.img"
run otaguard verify --trusted-root "$WORK/pki/root/cert.pem" --region eu "$WORK/fw-1.5.0-pki.img"
refuse 1 otaguard verify --trusted-root "$WORK/pki/root/cert.pem" --region us "$WORK/fw-1.5.0-pki.img"

chapter "PKI: the signer's key leaks -> revoke, publish the CRL, the image is refused"
serial=$(openssl x509 -in "$WORK/pki/release-2026q4/cert.pem" -noout -serial)
run otaguard pki revoke --ca "$WORK/pki/eu" "$serial" --reason key-compromise
run otaguard pki crl --ca "$WORK/pki/eu" --out "$WORK/pki/eu.crl"
refuse 1 otaguard verify --trusted-root "$WORK/pki/root/cert.pem" --region eu \
  --crl "$WORK/pki/eu.crl" "$WORK/fw-1.5.0-pki.img"

chapter "PKI: the whole compromise drill (signer, intermediate, root rotation)"
run otaguard pki drill --out-dir "$WORK/pki/drill"
