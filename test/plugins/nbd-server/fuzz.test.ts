/**
 * Random and malformed handshakes and requests thrown at our server over
 * raw sockets, many connections at once, while a well-behaved client (our
 * own nbd driver) keeps writing and reading back on another export. The
 * seed is printed; NBD_FUZZ_SEED=N replays a run. Nothing may crash, no
 * connection may hang once its client has hung up, the bystander must
 * never see a wrong byte, and nothing may leak an unhandled rejection.
 */
import test from 'ava';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_NAME,
  NBD_OPT_GO,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REQUEST_MAGIC,
} from '../../../core/protocols/nbd/constants.js';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../../core/protocols/nbd/handshake.js';
import { randomFloats } from '../../helpers/prng.js';
import { KiB, MiB, serverFixture } from './fixture.js';
import { RawNbdClient } from './raw-client.js';

const CONNECTIONS = Number(process.env.NBD_FUZZ_CONNECTIONS ?? 160);
const PARALLEL = 8;
const EXPORTS = ['m', 'ro', '', 'nope', 'good'];

class Fuzzer {
  constructor(private readonly rnd: () => number) {}

  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }

  chance(p: number): boolean {
    return this.rnd() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  bytes(n: number): Buffer {
    return Buffer.from(Array.from({ length: n }, () => this.int(256)));
  }

  /** An option: well-formed, well-formed with a bad length, or noise. */
  option(): Buffer {
    const name = this.pick(EXPORTS);
    const data = this.pick([
      () => Buffer.alloc(0),
      () => this.bytes(this.int(40)),
      () => encodeInfoRequest(name, [NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME, this.int(70000) & 0xffff]),
      () => encodeMetaContextRequest(name, this.pick([[], ['base:allocation'], ['qemu:', 'base:'], [this.bytes(8).toString('latin1')]])),
    ])();
    const option = encodeOption(this.chance(0.8) ? this.int(13) : this.int(2 ** 32), data);
    if (this.chance(0.15)) option.writeUInt32BE(this.chance(0.5) ? this.int(data.length + 8) : this.int(2 ** 32), 12);
    if (this.chance(0.05)) option.writeUInt32BE(this.int(2 ** 32), this.int(2) * 4);
    if (this.chance(0.05)) return this.bytes(this.int(64));
    return option;
  }

  /** A request header (mostly valid magic), and maybe a payload that may fall short. */
  request(size: number): Buffer[] {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(this.chance(0.95) ? NBD_REQUEST_MAGIC : this.int(2 ** 32), 0);
    header.writeUInt16BE(this.chance(0.8) ? 0 : this.chance(0.5) ? 1 << this.int(16) : this.int(65536), 4);
    const type = this.chance(0.85) ? this.pick([0, 1, 1, 3, 4, 5, 6, 7]) : this.int(65536);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(BigInt(this.int(2 ** 32)) * BigInt(this.int(2 ** 32)), 8);
    const offset = this.chance(0.8) ? this.int(size) : this.int(2 ** 32) * 2 ** this.int(21);
    header.writeBigUInt64BE(BigInt(offset), 16);
    const length = this.chance(0.8) ? this.int(256 * KiB) : this.pick([0, 32 * MiB, 32 * MiB + 1, this.int(2 ** 32)]);
    header.writeUInt32BE(length, 24);
    if (type !== 1) return [header];
    const sent = this.chance(0.9) ? length : this.int(length + 1);
    return [header, Buffer.alloc(Math.min(sent, 4 * MiB), this.int(256))];
  }
}

/** One hostile connection; resolves when the server has closed it after we hung up (or it hung up first). */
async function hostile(socket: string, fuzz: Fuzzer, size: number): Promise<void> {
  const c = await RawNbdClient.connect(socket);
  const scenario = fuzz.int(3);
  try {
    if (scenario === 0) {
      c.send(fuzz.bytes(fuzz.int(200)));
    } else {
      await c.reader.read(18);
      c.send(Buffer.from([0, 0, 0, fuzz.chance(0.9) ? NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES : fuzz.int(256)]));
      if (scenario === 1) {
        for (let i = fuzz.int(12); i > 0; i--) c.send(fuzz.option());
      } else {
        if (fuzz.chance(0.7)) c.send(encodeOption(NBD_OPT_STRUCTURED_REPLY));
        c.send(encodeOption(NBD_OPT_GO, encodeInfoRequest(fuzz.pick(['m', 'ro', 'm', 'nope']), [])));
        for (let i = fuzz.int(20); i > 0; i--) c.send(...fuzz.request(size));
      }
    }
  } catch {
    // The server hung up on us first: fine.
  }
  if (fuzz.chance(0.5)) c.end();
  else c.destroy();
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the server kept a connection open after its client hung up (scenario ${scenario})`)), 15_000);
  });
  await Promise.race([c.closed, hang]).finally(() => clearTimeout(timer));
}

test('random and malformed handshakes and requests: no crash, no hang, a concurrent client unaffected', async (t) => {
  const seed = Number(process.env.NBD_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
  t.log(`NBD_FUZZ_SEED=${seed}`);
  const fuzz = new Fuzzer(randomFloats(seed));
  const unhandled: unknown[] = [];
  const onRejection = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onRejection);
  t.teardown(() => process.off('unhandledRejection', onRejection));

  const f = await serverFixture(t, ['memory', 'nbd']);
  f.server.handshakeLimitMs = 2000;
  const size = 8 * MiB;
  for (const [node, writable] of [['m', true], ['ro', false], ['good', true]] as const) {
    await f.execute('blockdev-add', { driver: 'memory', 'node-name': node, size });
    await f.execute('block-export-add', { type: 'nbd', id: node, 'node-name': node, writable });
  }
  // The bystander: our nbd driver as a client of export 'good', writing and reading back all along.
  const client = (await f.layer.graph.add({ driver: 'nbd', 'node-name': 'client', server: { type: 'unix', path: f.socket }, export: 'good' }));
  let running = true;
  let rounds = 0;
  const bystander = (async () => {
    for (let i = 0; running; i++) {
      const data = Buffer.alloc(64 * KiB, (i % 251) + 1);
      const offset = (i * 64 * KiB) % size;
      await client.write(offset, data);
      const back = Buffer.alloc(data.length);
      await client.read(offset, back);
      if (!back.equals(data)) throw new Error(`bystander read back wrong data at ${offset} (round ${i})`);
      rounds++;
    }
  })();

  let next = 0;
  const worker = async () => {
    while (next < CONNECTIONS) {
      next++;
      await hostile(f.socket, fuzz, size);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  running = false;
  await bystander;
  t.true(rounds > 0, `the bystander kept working (${rounds} rounds)`);

  await f.layer.graph.del('client');
  for (let i = 0; i < 500 && f.server.clientCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.is(f.server.clientCount, 0, 'every connection ended');
  const after = await RawNbdClient.connect(f.socket);
  await after.handshake('good');
  after.request({ type: 0, offset: 0, length: 4096 });
  t.is(RawNbdClient.errorOf(await after.reply()), 0, 'the server still serves');
  after.destroy();
  t.is((await f.execute('query-block-exports') as unknown[]).length, 3);
  t.deepEqual(unhandled, []);
});
