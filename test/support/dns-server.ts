/**
 * A small authoritative DNS server for tests, on loopback, serving a zone given as plain records.
 * UDP and TCP on the same port (picked free at run time): an answer over 512 bytes goes out over
 * UDP truncated (TC set, no answers), so the resolver asks again over TCP, as it does for the
 * long TXT records of RSA DKIM keys in real DNS.
 *
 * Names are matched case-insensitively, without the trailing dot. A CNAME is followed inside the
 * zone. A name with no record at all answers NXDOMAIN; a name with records of other types answers
 * NOERROR with no answers (Node reports ENOTFOUND and ENODATA).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import dnsPacket, { type Answer, type DecodedPacket, type Packet } from 'dns-packet';

export type ZoneRecord =
  | { name: string; type: 'A' | 'AAAA' | 'CNAME'; data: string }
  /** One TXT record; text longer than 255 bytes is split into character strings of 255. */
  | { name: string; type: 'TXT'; data: string }
  | { name: string; type: 'MX'; data: { preference: number; exchange: string } };

export interface TestDnsServer {
  readonly port: number;
  /** "127.0.0.1:PORT", for --dns-server and `deliverability.dns_servers`. */
  readonly address: string;
  /** Questions asked so far, "TXT acme.example over tcp". */
  readonly queries: string[];
  /** Replaces the zone (the next question sees the new records). */
  setZone(records: readonly ZoneRecord[]): void;
  close(): Promise<void>;
}

const NXDOMAIN = 3;

export async function startDnsServer(records: readonly ZoneRecord[]): Promise<TestDnsServer> {
  let zone = [...records];
  const queries: string[] = [];
  const norm = (n: string) => n.toLowerCase().replace(/\.$/, '');

  const answer = (query: DecodedPacket, transport: 'udp' | 'tcp'): Buffer => {
    const q = query.questions?.[0];
    const answers: Answer[] = [];
    let rcode = 0;
    if (q) {
      queries.push(`${q.type} ${norm(q.name)} over ${transport}`);
      let name = norm(q.name);
      // follow CNAMEs inside the zone, as a recursive resolver would
      for (let hops = 0; hops < 8; hops++) {
        const here = zone.filter((r) => norm(r.name) === name);
        const cname = here.find((r) => r.type === 'CNAME');
        if (cname && q.type !== 'CNAME') {
          answers.push({ type: 'CNAME', name, ttl: 60, data: norm(cname.data as string) });
          name = norm(cname.data as string);
          continue;
        }
        for (const r of here.filter((r) => r.type === q.type)) answers.push(toAnswer(name, r));
        if (answers.length === 0 && here.length === 0 && !zone.some((r) => norm(r.name).endsWith(`.${name}`))) rcode = NXDOMAIN;
        break;
      }
    }
    const response: Packet = {
      type: 'response',
      id: query.id,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0) | dnsPacket.RECURSION_AVAILABLE | rcode,
      questions: query.questions,
      answers,
    };
    const full = dnsPacket.encode(response);
    if (transport === 'udp' && full.length > 512) {
      return dnsPacket.encode({ ...response, answers: [], flags: (response.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE });
    }
    return full;
  };

  const udp: UdpSocket = createSocket('udp4');
  udp.on('message', (msg, peer) => {
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    udp.send(answer(query, 'udp'), peer.port, peer.address);
  });

  const tcpSockets = new Set<Socket>();
  const tcp: Server = createServer((socket) => {
    tcpSockets.add(socket);
    socket.on('close', () => tcpSockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.length < 2 + length) break;
        const msg = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        let query: DecodedPacket;
        try {
          query = dnsPacket.decode(msg);
        } catch {
          socket.destroy();
          return;
        }
        const out = answer(query, 'tcp');
        const prefix = Buffer.alloc(2);
        prefix.writeUInt16BE(out.length);
        socket.write(Buffer.concat([prefix, out]));
      }
    });
  });

  // the same port for both: bind UDP on a free port, then TCP on it (a new pair if another took it)
  const port = await new Promise<number>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(0, '127.0.0.1', () => resolve(udp.address().port));
  });
  const bound = await new Promise<boolean>((resolve) => {
    tcp.once('error', () => resolve(false));
    tcp.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (!bound) {
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    return startDnsServer(records);
  }

  return {
    port,
    address: `127.0.0.1:${port}`,
    queries,
    setZone(next) {
      zone = [...next];
    },
    async close() {
      for (const s of tcpSockets) s.destroy();
      await Promise.all([new Promise<void>((resolve) => tcp.close(() => resolve())), new Promise<void>((resolve) => udp.close(() => resolve()))]);
    },
  };
}

function toAnswer(name: string, r: ZoneRecord): Answer {
  switch (r.type) {
    case 'TXT': {
      const parts: string[] = [];
      for (let i = 0; i < r.data.length; i += 255) parts.push(r.data.slice(i, i + 255));
      return { type: 'TXT', name, ttl: 60, data: parts.length ? parts : [''] };
    }
    case 'MX':
      return { type: 'MX', name, ttl: 60, data: r.data };
    default:
      return { type: r.type, name, ttl: 60, data: r.data } as Answer;
  }
}
