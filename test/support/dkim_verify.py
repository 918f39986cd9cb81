"""Verifies the DKIM signatures of a message with python3-dkim (dkimpy), an implementation
independent of sendas's. The public keys come from argv instead of DNS:
    dkim_verify.py RECORDS_JSON < message.eml
RECORDS_JSON maps "selector._domainkey.domain" to the TXT record's text ("v=DKIM1; k=rsa; p=...").
Prints one JSON line: {"ok": bool, "signatures": N, "d": ..., "s": ..., "a": ..., "h": ..., "error": ...}."""
import json
import sys

import dkim

records = json.loads(sys.argv[1])
message = sys.stdin.buffer.read()
asked = []


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    name = name.rstrip(".")
    asked.append(name)
    txt = records.get(name)
    return txt.encode() if txt is not None else None


d = dkim.DKIM(message)
result = {"signatures": 0, "ok": False}
try:
    result["ok"] = bool(d.verify(dnsfunc=dnsfunc))
except Exception as e:  # a malformed signature is a failed verification, said why
    result["error"] = repr(e)
fields = d.signature_fields or {}
for tag in ("d", "s", "a", "h", "c"):
    if tag.encode() in fields:
        result[tag] = fields[tag.encode()].decode()
result["signatures"] = sum(1 for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
result["asked"] = asked
print(json.dumps(result))
