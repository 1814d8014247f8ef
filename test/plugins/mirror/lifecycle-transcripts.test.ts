/**
 * blockdev-mirror and drive-mirror against QEMU 7.2's transcript s6 (M1–M6):
 * every reply, each job's events and the mirrored data. The sections run in
 * order against one layer, as QEMU's did. QEMU's harness exported the
 * source over NBD (`exp0`) and wrote to it with qemu-io; here a stand-in
 * export (a user of the node that drains hold and pivots move, as an NBD
 * export is) plays that part, `query-block-exports` reports it as QEMU
 * does, and the guest write of M2 goes through it.
 * See test/helpers/job-transcripts.ts for what is compared and how.
 */
import { execFileSync } from 'node:child_process';
import test from 'ava';
import type { QmpMessage } from '../../../core/qmp/qmp-client.js';
import { Replay, progressDependsOnTiming, readSection, type TranscriptRequest, waitForProgress } from '../../helpers/job-transcripts.js';
import { assertIdentical, havePeers, type MirrorSession, MiB, openSession, SOURCE_DATA } from './mirror-session.js';

let session: Promise<MirrorSession> | undefined;

/** One layer for the whole transcript: its setup (src exported as exp0), plus msmall and m6, which QEMU's harness added quietly. */
function s6(): Promise<MirrorSession> {
  session ??= (async () => {
    const s = await openSession([
      { kind: 'raw', name: 'src', data: SOURCE_DATA },
      ...['m1', 'm2', 'm3', 'm4', 'm5', 'm6'].map((name) => ({ kind: 'raw' as const, name })),
      { kind: 'raw', name: 'msmall', size: '8M' },
    ]);
    s.exportNode('exp0', 'src');
    return s;
  })();
  return session;
}
test.after.always(async () => (await session)?.close());

/** Implicit node names (the mirror_top filter's) depend on how many nodes were opened before. */
function implicitNames(reply: QmpMessage): unknown {
  return JSON.parse(JSON.stringify(reply).replace(/#block\d+/g, '#blockNNN'));
}

test.serial('s6 M1: blockdev-mirror sync=full, READY, pause (standby) and resume, job-complete pivots the export', async (t) => {
  if (!havePeers(t)) return;
  const s = await s6();
  await new Replay(t, await s.client(), readSection('s6.txt', 'M1:')).run();
  t.is(s.exports.get('exp0')!.nodeName, 'm1', 'the export now uses the target');
  assertIdentical(t, s.image('src'), s.image('m1'));
});

test.serial('s6 M2: complete before READY is refused; a guest write after READY; block-job-cancel after READY completes without pivot', async (t) => {
  if (!havePeers(t)) return;
  const s = await s6();
  const client = await s.client();
  const exp0 = s.exports.get('exp0')!;
  await new Replay(t, client, readSection('s6.txt', 'M2:'), {
    // At 1 MiB/s QEMU had copied 12 MiB of its first 16 MiB burst when queried.
    normalise: { 2: progressDependsOnTiming() },
    // The harness's qemu-io write of 64 KiB at 2 MiB through the export, after READY.
    before: { 5: () => exp0.edge.write(2 * MiB, Buffer.alloc(64 * 1024, 0x5a)) },
  }).run();
  t.is(exp0.nodeName, 'm1', 'no pivot: the export stays on the source');
  assertIdentical(t, s.image('m1'), s.image('m2'));
});

test.serial('s6 M3: block-job-cancel force=true after READY', async (t) => {
  if (!havePeers(t)) return;
  const s = await s6();
  await new Replay(t, await s.client(), readSection('s6.txt', 'M3:')).run();
  t.is(s.exports.get('exp0')!.nodeName, 'm1');
});

test.serial('s6 M4: cancel before READY', async (t) => {
  if (!havePeers(t)) return;
  const s = await s6();
  const client = await s.client();
  // QEMU cancelled 200 ms in, its first 16 MiB burst copied and the rate limit holding it back for 16 s.
  await new Replay(t, client, readSection('s6.txt', 'M4:'), { before: { 1: () => waitForProgress(client, 'mir4', 16 * MiB) } }).run();
  t.is(s.exports.get('exp0')!.nodeName, 'm1');
});

test.serial('s6 M5: auto-finalize=false: complete, PENDING with the export still on the filter, job-finalize pivots', async (t) => {
  if (!havePeers(t)) return;
  const s = await s6();
  await new Replay(t, await s.client(), readSection('s6.txt', 'M5:'), { normalise: { 2: implicitNames } }).run();
  t.is(s.exports.get('exp0')!.nodeName, 'm5');
  assertIdentical(t, s.image('m1'), s.image('m5'));
});

test.serial('s6 M6: argument errors; a target of another size fails the job; drive-mirror creates a qcow2 target', async (t) => {
  if (!havePeers(t)) return;
  const s = await s6();
  const section = readSection('s6.txt', 'M6:');
  const withDir = (value: unknown): unknown => JSON.parse(JSON.stringify(value).replaceAll('$IMG', s.dir));
  const withoutDir = (reply: QmpMessage): unknown => JSON.parse(JSON.stringify(reply).replaceAll(s.dir, '$IMG'));
  const queryNodes = section.steps.findIndex((step) => step.request.execute === 'query-named-block-nodes');
  await new Replay(t, await s.client(), section, {
    rewrite: (request) => withDir(request) as TranscriptRequest,
    normalise: Object.fromEntries(section.steps.map((_, i) => [i, withoutDir])),
    // QEMU's job x had failed (its events came before the next reply) before the next command ran.
    before: { 1: () => s.log.status('x', 'null').then(() => undefined) },
    // The harness cut the reply short: the newest node, the mirror's filter above m5.
    summary: {
      [queryNodes]: (reply, summary) => {
        const filter = (reply.return as Record<string, unknown>[]).find((n) => n.drv === 'mirror_top') as Record<string, any> | undefined;
        const pick = (n: Record<string, any>) => ({ drv: n.drv, format: n.image.format, filename: n.image.filename, size: n.image['virtual-size'], ro: n.ro });
        const qemu = {
          drv: /"drv": "([^"]+)"/.exec(summary)![1],
          format: /"format": "([^"]+)"/.exec(summary)![1],
          filename: /"filename": "([^"]+)"/.exec(summary)![1],
          size: Number(/"virtual-size": (\d+)/.exec(summary)![1]),
          ro: /"ro": (\w+)/.exec(summary)![1] === 'true',
        };
        return { ours: filter === undefined ? 'no mirror_top node' : withoutDir({ return: pick(filter) }), qemu: { return: qemu } };
      },
    },
  }).run();
  // QEMU: qemu-img info dm.qcow2: file format: qcow2 | virtual size: 16 MiB (16777216 bytes).
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', s.image('dm', 'qcow2')], { encoding: 'utf8' })) as Record<string, unknown>;
  t.like(info, { format: 'qcow2', 'virtual-size': 16 * MiB });
  assertIdentical(t, s.image('m5'), s.image('dm', 'qcow2'), 'raw', 'qcow2');
});
