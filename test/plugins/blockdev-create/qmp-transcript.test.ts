/**
 * blockdev-create over QMP, against QEMU 7.2's transcript
 * (test/fixtures/qemu-transcripts/blockdev-create.txt, `$IMG` standing for
 * the image directory): every reply (query-jobs with each job's error
 * included) and each job's JOB_STATUS_CHANGE sequence, as in QEMU —
 * created, running, then waiting, pending, concluded or aborting,
 * concluded, and null at job-dismiss; no BLOCK_JOB_* events. Section D
 * lists what QEMU makes and blocklayer refuses: there, ours must refuse,
 * each with its own message, where QEMU's job succeeded.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpClient, type QmpMessage } from '../../../core/qmp/qmp-client.js';
import { type RunningDaemon, startDaemon } from '../../helpers/daemons.js';
import { Replay, readSection, type TranscriptSection } from '../../helpers/job-transcripts.js';

const FILE = 'blockdev-create.txt';

/** One daemon for all sections, as QEMU's session was one; the image directory is $IMG. */
class Session {
  private started: Promise<{ daemon: RunningDaemon; client: QmpClient; dir: string }> | undefined;

  get() {
    this.started ??= (async () => {
      const dir = await mkdtemp(join(tmpdir(), 'blocklayer-bdc-transcript-'));
      const daemon = await startDaemon('ours', []);
      const client = await QmpClient.connect(daemon.socket, { negotiate: true });
      return { daemon, client, dir };
    })();
    return this.started;
  }

  async close(): Promise<void> {
    const session = await this.started?.catch(() => undefined);
    if (session === undefined) return;
    await session.client.close().catch(() => undefined);
    await session.daemon.stop();
    await rm(session.dir, { recursive: true, force: true });
  }
}

/** query-jobs once no job is running any more (or after 5 s). */
async function whenConcluded(client: QmpClient): Promise<QmpMessage> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const reply = await client.execute('query-jobs');
    const jobs = reply.return as { status: string }[];
    if (jobs.every((j) => j.status === 'concluded') || Date.now() > deadline) return reply;
    await sleep(10);
  }
}

const session = new Session();
test.after.always(() => session.close());

/** The section with $IMG replaced by `dir` in requests, replies and events alike. */
function section(title: string, dir: string): TranscriptSection {
  return JSON.parse(JSON.stringify(readSection(FILE, title)).replaceAll('$IMG', dir)) as TranscriptSection;
}

test.serial('A: a file, then qcow2 on its node; a create job answers block-job-* as no block job', async (t) => {
  const { client, dir } = await session.get();
  await new Replay(t, client, section('A:', dir)).run();
});

test.serial('B: argument errors, with QEMU class and text', async (t) => {
  const { client, dir } = await session.get();
  await new Replay(t, client, section('B:', dir)).run();
});

test.serial('C: failures inside the job conclude it with its error', async (t) => {
  const { client, dir } = await session.get();
  await new Replay(t, client, section('C:', dir)).run();
});

test.serial('D: what QEMU makes and blocklayer refuses, each with a message saying so; zstd, falloc and full made as QEMU makes them', async (t) => {
  const { client, dir } = await session.get();
  const qemu = section('D:', dir);
  const made = new Set(['u1', 'u2', 'u3']);
  const refused: Record<string, string> = {
    u0: "blocklayer's qcow2 driver cannot create images with extended L2 entries (subclusters)",
    u4: "blocklayer's qcow2 driver cannot create images with encryption",
    u5: "blocklayer's qcow2 driver cannot create images with an external data file",
    u6: `Could not create '${dir}/c.qcow2': the image is open as node 'f2'`,
  };
  const ours: Record<string, unknown> = {};
  const expected: Record<string, unknown> = {};
  for (const step of qemu.steps) {
    // Like QEMU's harness, which waited for the job's events: act on a job once it has concluded.
    if (step.request.execute === 'job-dismiss') await whenConcluded(client);
    const reply = step.request.execute === 'query-jobs' ? await whenConcluded(client) : await client.execute(step.request.execute, step.request.arguments);
    if (step.request.execute !== 'query-jobs') {
      t.deepEqual(reply, step.reply, JSON.stringify(step.request));
      continue;
    }
    const [job] = reply.return as Record<string, unknown>[];
    const [theirs] = step.reply!.return as Record<string, unknown>[];
    const id = String(job?.id);
    if (made.has(id)) t.deepEqual(job, theirs, id);
    if (id in refused) {
      ours[id] = job;
      expected[id] = { ...theirs, error: refused[id] };
      // QEMU made these (u4 and u5 fail later, on their secret and on its lock of the one file).
      if (id !== 'u4' && id !== 'u5') t.is(theirs?.error, undefined);
    }
  }
  t.deepEqual(ours, expected);
});
