import { BlockList, isIP } from 'node:net';

/** The `listen.allow` ranges: clients inside may relay without logging in. */
export class AllowList {
  private readonly list = new BlockList();

  constructor(cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const [address, prefix] = cidr.split('/') as [string, string | undefined];
      const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
      if (prefix === undefined) this.list.addAddress(address, family);
      else this.list.addSubnet(address, Number(prefix), family);
    }
  }

  /** Answers by client address: the legacy systems connect from a few, once per message (BlockList.check builds a SocketAddress each time). */
  private readonly answers = new Map<string, boolean>();

  allows(remoteAddress: string | undefined): boolean {
    if (!remoteAddress) return false;
    let answer = this.answers.get(remoteAddress);
    if (answer === undefined) {
      answer = this.check(remoteAddress);
      // a list lives as long as its config snapshot; bounded anyway, for a relay open to many addresses
      if (this.answers.size >= 10_000) this.answers.clear();
      this.answers.set(remoteAddress, answer);
    }
    return answer;
  }

  private check(remoteAddress: string): boolean {
    // a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
    const address = mapped ? mapped[1]! : remoteAddress;
    const family = isIP(address);
    if (family === 0) return false;
    return this.list.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }
}
