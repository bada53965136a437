# ruff: noqa: F821 - local, log, succeeds, fails, envvars and absjoin are nixtest's globals
# A classic nixtest script: openssl encrypts, decrypts, signs and verifies.
from plumbum.cmd import openssl

secret = "nixtest secret message\n" * 10
with open("plain.txt", "w") as f:
    f.write(secret)

log.info("%s", openssl("version").strip())
enc = ["enc", "-aes-256-cbc", "-pbkdf2", "-salt", "-pass", "pass:hunter2"]
openssl[enc + ["-e", "-in", "plain.txt", "-out", "cipher.bin"]] & succeeds("encrypt with AES-256-CBC")
with open("cipher.bin", "rb") as f:
    cipher = f.read()
assert cipher.startswith(b"Salted__") and secret.encode() not in cipher, cipher[:32]
out = openssl[enc + ["-d", "-in", "cipher.bin"]] & succeeds("decrypt with the right password")
assert out == secret, out
bad = ["enc", "-aes-256-cbc", "-pbkdf2", "-pass", "pass:wrong", "-d", "-in", "cipher.bin", "-out", "x"]
openssl[bad] & fails("decrypt with a wrong password")

b64 = openssl["base64", "-in", "plain.txt"] & succeeds("base64 encode")
with open("plain.b64", "w") as f:
    f.write(b64)
assert (openssl["base64", "-d", "-in", "plain.b64"] & succeeds("base64 decode")) == secret

openssl["genpkey", "-algorithm", "ED25519", "-out", "key.pem"] & succeeds("generate an Ed25519 key")
openssl["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"] & succeeds("extract the public key")
sign = ["pkeyutl", "-sign", "-inkey", "key.pem", "-rawin", "-in", "plain.txt", "-out", "sig.bin"]
openssl[sign] & succeeds("sign")
verify = ["pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-sigfile", "sig.bin"]
openssl[verify + ["-in", "plain.txt"]] & succeeds("verify the signature")
with open("tampered.txt", "w") as f:
    f.write(secret.replace("secret", "public"))
openssl[verify + ["-in", "tampered.txt"]] & fails("a tampered message does not verify")
