import { asArray, isRecord } from './raw.js';
import type { Decryption } from './decrypt.js';
import { KEY_FILE_ENV } from './secret-key.js';
import type { ConfigWarning } from './types.js';

/**
 * `cluster:` with an OAuth server but no secret key: the relay starts, but its OAuth tokens are
 * not shared (they would be in Redis in clear), so each replica refreshes on its own and a
 * provider that rotates refresh tokens strictly can refuse the replicas' older ones.
 */
export function clusterTokenWarnings(raw: Record<string, unknown>, decryption: Decryption | undefined): ConfigWarning[] {
  if (!isRecord(raw.cluster) || decryption?.key) return [];
  if (!asArray(raw.servers).some((s) => isRecord(s) && isRecord(s.oauth))) return [];
  return [
    {
      path: 'secrets.key_file',
      message: `cluster is set but no secret key is: OAuth tokens are not shared between the replicas (each asks the token endpoint on its own); set secrets.key_file (or ${KEY_FILE_ENV}) so they are shared, encrypted to it`,
    },
  ];
}
