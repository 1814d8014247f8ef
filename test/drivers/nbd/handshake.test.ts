/** Handshake fallbacks, against the fake server (no reference server can leave out just GO). */
import test from 'ava';
import {
  NBD_CMD_DISC,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ERR_TLS_REQD,
} from '../../../core/protocols/nbd/constants.js';
import { nbdDriver, type NbdState } from '../../../drivers/nbd/driver.js';
import { FakeNbdServer, type FakeServerOptions } from './fake-server.js';
import { filled, KiB, nbdFixture, readNode, sameBytes } from './fixture.js';

async function setUp(t: Parameters<typeof nbdFixture>[0], opts: FakeServerOptions) {
  const f = await nbdFixture(t);
  const fake = await FakeNbdServer.start(f.dir, opts);
  t.teardown(() => fake.close());
  const add = (extra: Record<string, unknown> = {}) => f.graph.add({ driver: 'nbd', 'node-name': 'n', server: fake.address, ...extra });
  return { f, fake, add };
}

test('a fixed-newstyle server without GO: falls back to NBD_OPT_EXPORT_NAME, keeping structured replies', async (t) => {
  const { f, fake, add } = await setUp(t, { size: 64 * KiB, go: false });
  fake.data.fill(0x3c, 0, 4 * KiB);
  const node = await add();
  t.deepEqual(fake.options, [NBD_OPT_STRUCTURED_REPLY, NBD_OPT_SET_META_CONTEXT, NBD_OPT_GO, NBD_OPT_EXPORT_NAME]);
  const { info } = (node.driverState as NbdState).client;
  t.like(info, { style: 'fixed-newstyle', structured: true, size: 64 * KiB, blockSize: undefined });
  t.is(node.length, 64 * KiB);
  sameBytes(t, await readNode(node, 0, 8 * KiB), Buffer.concat([filled(4 * KiB, 0x3c), filled(4 * KiB, 0)]));
  await node.write(8 * KiB, filled(512, 9));
  sameBytes(t, fake.data.subarray(8 * KiB, 8 * KiB + 512), filled(512, 9));
  t.deepEqual(await node.blockStatus(0, 4096), [{ offset: 0, length: 4096, data: true, zero: false, allocated: true, hostOffset: 0 }]);
  await f.graph.del('n');
  await fake.settled();
  t.is(fake.requests.at(-1)?.type, NBD_CMD_DISC, 'closing the node sends NBD_CMD_DISC');
});

test('a plain newstyle server (no fixed newstyle, no NO_ZEROES): EXPORT_NAME and its 124 bytes of padding', async (t) => {
  const { fake, add } = await setUp(t, { size: 32 * KiB, handshakeFlags: 0 });
  fake.data.fill(0x11);
  const node = await add({ export: 'anything' });
  t.deepEqual(fake.options, [NBD_OPT_EXPORT_NAME]);
  t.like((node.driverState as NbdState).client.info, { style: 'newstyle', structured: false, contextId: undefined });
  t.is(node.limits.requestAlignment, 512, 'no block sizes, no block status: sectors, as QEMU');
  sameBytes(t, await readNode(node, 100, 1000), filled(1000, 0x11));
});

test('a server without structured replies gets no SET_META_CONTEXT, and block status is all data', async (t) => {
  const { fake, add } = await setUp(t, { size: 16 * KiB, structured: false });
  const node = await add();
  t.deepEqual(fake.options, [NBD_OPT_STRUCTURED_REPLY, NBD_OPT_GO]);
  t.deepEqual(await node.blockStatus(0, node.length), [{ offset: 0, length: 16 * KiB, data: true, zero: false, allocated: true, hostOffset: 0 }]);
  t.false(fake.requests.some((r) => r.type === 7), 'no NBD_CMD_BLOCK_STATUS sent');
});

test('structured replies but no meta context (nbdkit 1.32 has no --no-mc): block status is all data', async (t) => {
  const { fake, add } = await setUp(t, { size: 16 * KiB, metaContext: false });
  const node = await add();
  t.like((node.driverState as NbdState).client.info, { structured: true, contextId: undefined });
  t.deepEqual(await node.blockStatus(0, node.length), [{ offset: 0, length: 16 * KiB, data: true, zero: false, allocated: true, hostOffset: 0 }]);
  t.false(fake.requests.some((r) => r.type === 7));
});

test('TCP: host and port, and the nbd:// filename, with or without an export', async (t) => {
  const { f, fake, add } = await setUp(t, { size: 16 * KiB, tcp: true });
  const { port } = fake.address as { port: string };
  const node = await add({ export: 'exp' });
  await node.write(0, filled(4096, 0x5e));
  sameBytes(t, await readNode(node, 0, 4096), filled(4096, 0x5e));
  t.deepEqual(await nbdDriver.describe!(node.driverState as NbdState), { filename: `nbd://127.0.0.1:${port}/exp` });
  const plain = await f.graph.add({ driver: 'nbd', 'node-name': 'm', server: fake.address });
  t.deepEqual(await nbdDriver.describe!(plain.driverState as NbdState), { filename: `nbd://127.0.0.1:${port}` });
});

test('advertised block sizes become the node limits; unaligned writes reach the server aligned', async (t) => {
  const { fake, add } = await setUp(t, { size: 64 * KiB, blockSize: { minimum: 4096, preferred: 8192, maximum: 16384 } });
  const node = await add();
  t.is(node.limits.requestAlignment, 4096);
  t.is(node.limits.maxTransfer, 16384);
  await node.write(100, filled(200, 0xaa));
  await readNode(node, 0, 40 * KiB);
  t.true(fake.requests.every((r) => r.offset % 4096 === 0 && r.length % 4096 === 0 && r.length <= 16384));
  sameBytes(t, fake.data.subarray(100, 300), filled(200, 0xaa));
});

test('a failed handshake is reported and the client leaves politely (OPT_ABORT, or CMD_DISC after GO)', async (t) => {
  const { fake, add } = await setUp(t, { size: 4096, blockSize: { minimum: 3000, preferred: 4096, maximum: 8192 } });
  await t.throwsAsync(add(), { message: /server minimum block size 3000 is not a power of two/ });
  await fake.settled();
  t.is(fake.requests.at(-1)?.type, NBD_CMD_DISC, 'GO was acknowledged: the server is transmitting');
  const old = await setUp(t, { size: 4096, handshakeFlags: NBD_FLAG_FIXED_NEWSTYLE, structured: false });
  await t.throwsAsync(old.add({ 'x-dirty-bitmap': 'qemu:dirty-bitmap:b' }), { message: /not found/ });
  await old.fake.settled();
  t.is(old.fake.requests.at(-1)?.type, NBD_CMD_DISC, 'the driver refused the export after the handshake');
  const refused = await setUp(t, { size: 4096, goError: { type: NBD_REP_ERR_TLS_REQD, message: 'TLS is required' } });
  await t.throwsAsync(refused.add(), { message: 'TLS negotiation required before option 7 (go); server reported: TLS is required' });
  await refused.fake.settled();
  t.is(refused.fake.options.at(-1), NBD_OPT_ABORT, 'still negotiating: OPT_ABORT');
});

test('x-dirty-bitmap that the server does not know fails the open', async (t) => {
  const { add } = await setUp(t, { size: 4096, transmissionFlags: NBD_FLAG_HAS_FLAGS });
  await t.throwsAsync(add({ 'x-dirty-bitmap': 'qemu:dirty-bitmap:nope' }), {
    message: 'requested x-dirty-bitmap qemu:dirty-bitmap:nope not found',
  });
});

test('tls-creds naming no object fails before connecting, as in QEMU (the TLS tests are in tls.test.ts)', async (t) => {
  const { add, fake } = await setUp(t, { size: 4096, handshakeFlags: NBD_FLAG_FIXED_NEWSTYLE });
  await t.throwsAsync(add({ 'tls-creds': 'tls0' }), { message: "No TLS credentials with id 'tls0'" });
  t.deepEqual(fake.options, []);
});
