/**
 * Python's smtplib as a second real SMTP client for e2e tests: plain, `starttls()` or `SMTP_SSL`,
 * with the server certificate verified against a CA file or not at all. One python3 process per
 * session; it reports what it saw as JSON (EHLO replies, the peer certificate's SHA-256
 * fingerprint, the AUTH and the end-of-data replies). Needs python3 (standard library only).
 */
import { spawn } from 'node:child_process';

export interface SmtplibSession {
  host?: string;
  port: number;
  /** plain: no TLS; starttls: smtplib.SMTP + starttls(); ssl: smtplib.SMTP_SSL (implicit TLS) */
  mode: 'plain' | 'starttls' | 'ssl';
  /** verify the server certificate (and name) against this CA file; without it nothing is verified */
  ca?: string;
  /** smtp.login(user, password): AUTH as smtplib chooses it (it needs AUTH in the EHLO reply) */
  login?: { user: string; password: string };
  /** instead of login: one raw `AUTH …` line, e.g. "PLAIN AGNybQBzZWNyZXQ=", sent whatever EHLO said (before STARTTLS when `authBeforeTls`) */
  rawAuth?: string;
  /** with mode starttls and rawAuth: send the AUTH line on the plain connection, before STARTTLS */
  authBeforeTls?: boolean;
  /** send this message (CRLF text) from `from` to `to` */
  send?: { from: string; to: string[]; data: string };
  timeoutSec?: number;
  /** the newest TLS version the client offers, e.g. TLSv1_2 (Python's ssl.TLSVersion names) */
  maxTlsVersion?: 'TLSv1_2' | 'TLSv1_3';
}

export interface SmtplibResult {
  /** EHLO replies' text, before and (after STARTTLS) after the upgrade */
  ehlo: string[];
  /** colon-separated upper-case hex, as X509Certificate.fingerprint256 writes it; null without TLS */
  fingerprint: string | null;
  tlsVersion: string | null;
  auth: { code: number | null; text: string } | null;
  sent: { code: number | null; text: string } | null;
  /** an exception outside the steps above (connection refused, handshake failure) */
  error: string | null;
}

const SCRIPT = String.raw`
import hashlib, json, smtplib, ssl, sys
a = json.load(sys.stdin)
out = {"ehlo": [], "fingerprint": None, "tlsVersion": None, "auth": None, "sent": None, "error": None}
def reply(code, msg):
    return {"code": code, "text": msg.decode() if isinstance(msg, bytes) else str(msg)}
try:
    if a.get("ca"):
        ctx = ssl.create_default_context(cafile=a["ca"])
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if a.get("maxTlsVersion"):
        ctx.maximum_version = getattr(ssl.TLSVersion, a["maxTlsVersion"])
    host, port, t = a.get("host", "127.0.0.1"), a["port"], a.get("timeoutSec", 10)
    s = smtplib.SMTP_SSL(host, port, context=ctx, timeout=t) if a["mode"] == "ssl" else smtplib.SMTP(host, port, timeout=t)
    code, msg = s.ehlo("python.test")
    out["ehlo"].append(msg.decode())
    if a.get("rawAuth") and a.get("authBeforeTls"):
        out["auth"] = reply(*s.docmd("AUTH", a["rawAuth"]))
    if a["mode"] == "starttls":
        s.starttls(context=ctx)
        code, msg = s.ehlo("python.test")
        out["ehlo"].append(msg.decode())
    if a["mode"] != "plain":
        der = s.sock.getpeercert(binary_form=True)
        out["fingerprint"] = ":".join("%02X" % b for b in hashlib.sha256(der).digest())
        out["tlsVersion"] = s.sock.version()
    if a.get("rawAuth") and not a.get("authBeforeTls"):
        out["auth"] = reply(*s.docmd("AUTH", a["rawAuth"]))
    elif a.get("login"):
        try:
            out["auth"] = reply(*s.login(a["login"]["user"], a["login"]["password"]))
        except smtplib.SMTPResponseException as e:
            out["auth"] = reply(e.smtp_code, e.smtp_error)
        except smtplib.SMTPException as e:
            out["auth"] = reply(None, e)
    if a.get("send"):
        m = a["send"]
        try:
            s.sendmail(m["from"], m["to"], m["data"].encode())
            out["sent"] = reply(250, "sent")
        except smtplib.SMTPResponseException as e:
            out["sent"] = reply(e.smtp_code, e.smtp_error)
        except smtplib.SMTPRecipientsRefused as e:
            code, msg = list(e.recipients.values())[0]
            out["sent"] = reply(code, msg)
    try:
        s.quit()
    except Exception:
        pass
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
`;

export function smtplib(session: SmtplibSession, timeoutMs = 20_000): Promise<SmtplibResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(stdout) as SmtplibResult);
      } catch {
        reject(new Error(`python3 smtplib session failed (exit ${code}): ${stderr || stdout}`));
      }
    });
    child.stdin.end(JSON.stringify(session));
  });
}
