import { serverOf, type ConfigSnapshot, type IdentityConfig, type ServerConfig } from './types.js';

/** The channels and agents that send through a server: the "used by" column of admin consoles. */
export function usedBy(snapshot: ConfigSnapshot, server: ServerConfig): { channels: IdentityConfig[]; agents: IdentityConfig[] } {
  const users = snapshot.identities.filter((i) => serverOf(snapshot, i) === server);
  return { channels: users.filter((i) => i.kind === 'channel'), agents: users.filter((i) => i.kind === 'agent') };
}
