import { createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { DEFAULTS } from './defaults.js';
import type { ReportIssue } from './issues.js';
import { isRecord, listenEntries, listenPath } from './raw.js';
import { isLoopbackHost } from './relations.js';
import { secretAt, type SecretReference } from './secret-refs.js';
import type { ConfigWarning } from './types.js';

/**
 * Rules over the listeners and the monitoring port that need the resolved secrets: a TLS
 * listener has a certificate and a key that belong together, two listeners don't share a socket,
 * and what is reachable beyond this host without protection is said at start and by `check`.
 */
export function checkListeners(raw: Record<string, unknown>, secrets: readonly SecretReference[], at: ReportIssue): ConfigWarning[] {
  const warnings: ConfigWarning[] = [];
  const secret = secretAt(secrets);
  const bound: { path: string; host: string; port: number }[] = [];

  for (const [path, l] of listenEntries<unknown>(raw.listen)) {
    if (!isRecord(l)) continue;
    const where = listenPath(path);
    const tls = typeof l.tls === 'string' ? l.tls.toLowerCase() : DEFAULTS.listen.tls;
    const host = typeof l.host === 'string' ? l.host : DEFAULTS.listen.host;
    const port = l.port === undefined ? DEFAULTS.listen.port : l.port;

    if (tls === 'starttls' || tls === 'implicit') {
      const missing = (['cert', 'key'] as const).filter((k) => l[k] === undefined);
      if (missing.length > 0) {
        at([...where, 'tls'], `tls ${tls} needs ${missing.map((k) => `\`${k}:\``).join(' and ')} (PEM text, {env: NAME} or {file: PATH})`);
      }
      const cert = secret(`${path}.cert`)?.reveal();
      const key = secret(`${path}.key`)?.reveal();
      if (cert !== undefined && !cert.includes('-----BEGIN CERTIFICATE-----')) at([...where, 'cert'], 'is not a PEM certificate (it should start with -----BEGIN CERTIFICATE-----)');
      else if (key !== undefined && !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) at([...where, 'key'], 'is not a PEM private key (it should start with -----BEGIN PRIVATE KEY-----)');
      else if (cert !== undefined && key !== undefined) {
        const problem = pairProblem(cert, key);
        if (problem) at([...where, 'key'], problem);
        else {
          const expired = expiry(cert);
          if (expired) warnings.push({ path: `${path}.cert`, message: expired });
        }
      }
    } else if (l.cert !== undefined || l.key !== undefined) {
      warnings.push({ path, message: `${path} has a certificate but tls: none, so it is not used; set tls: starttls or implicit` });
    }
    if (l.allow_plaintext_auth === true && tls !== 'implicit' && !isLoopbackHost(host)) {
      warnings.push({ path: `${path}.allow_plaintext_auth`, message: `${path} (${host}:${port}) accepts relay passwords without TLS from any client: they cross the network in clear text` });
    }

    // port 0 is "any free port": several of them never collide; a port that is no number is the schema's to report
    if (typeof port !== 'number') continue;
    const clash = port === 0 ? undefined : bound.find((b) => b.port === port && (b.host === host || isWildcard(b.host) || isWildcard(host)));
    if (clash) at([...where, 'port'], `${host}:${port} is already taken by ${clash.path} (${clash.host}:${clash.port}): each listener needs its own address and port`);
    bound.push({ path, host, port });
  }

  const http = raw.http === undefined || raw.http === null ? {} : raw.http;
  if (isRecord(http)) {
    const host = typeof http.host === 'string' ? http.host : DEFAULTS.http.host;
    if (!isLoopbackHost(host) && http.token === undefined) {
      warnings.push({
        path: 'http.host',
        message: `the monitoring port listens on ${host}, beyond this host, without \`token:\`: anyone who reaches it can read /status and /metrics; set http.token or bind it to 127.0.0.1`,
      });
    }
  }
  return warnings;
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]';
}

/** OpenSSL's verdict on the pair, in an admin's words; never quotes the key. */
export function pairProblem(cert: string, key: string): string | undefined {
  try {
    createSecureContext({ cert, key });
    // OpenSSL drops a key that doesn't match the certificate loaded after it instead of failing, so ask directly
    if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) return 'does not belong to the certificate in `cert:` (key values mismatch)';
    return undefined;
  } catch (err) {
    const text = String((err as Error).message);
    if (/key values mismatch/i.test(text)) return 'does not belong to the certificate in `cert:` (key values mismatch)';
    if (/bad password|encrypted/i.test(text)) return 'is encrypted: give the key without a passphrase';
    // OpenSSL's reason ("error:…:DECODER routines::unsupported") names the routine, not the content
    return `the certificate and key cannot be used (${text.replace(/^error:[0-9A-F]+:/i, '')})`;
  }
}

function expiry(cert: string): string | undefined {
  try {
    const validTo = new Date(new X509Certificate(cert).validTo);
    return validTo.getTime() < Date.now() ? `the certificate expired on ${validTo.toISOString().slice(0, 10)}: clients that verify it will refuse to connect` : undefined;
  } catch {
    return undefined;
  }
}
