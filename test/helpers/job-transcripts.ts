/**
 * Replays a section of a QEMU 7.2 job transcript (test/fixtures/qemu-
 * transcripts/s*.txt: `###` headings, `->` sent, `<-` received) against
 * our daemon and compares:
 *
 * - every reply, exactly and in order (a step may normalise a value QEMU
 *   reports that depends on timing, on both sides);
 * - for each job, the exact sequence of its events (timestamps aside).
 *   Interleaving between jobs, and whether an event comes before or after
 *   a reply, is scheduling and is not compared.
 *
 * Before sending a request, the replay waits until our daemon has sent, for
 * each job, as many events as QEMU had sent before the harness sent that
 * request (the harness waited for them, or they had arrived): so a step
 * that QEMU ran after a job concluded runs after ours concluded too. A job
 * whose `null` status has been seen sends nothing more; a wait that times
 * out goes on, and the final comparison shows what is missing.
 */
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecutionContext } from 'ava';
import type { QmpClient, QmpEventMessage, QmpMessage } from '../../core/qmp/qmp-client.js';
import { TRANSCRIPT_DIR } from './transcripts.js';

export interface TranscriptRequest {
  execute: string;
  arguments?: Record<string, unknown>;
}

export interface TranscriptStep {
  request: TranscriptRequest;
  /** QEMU's reply; undefined where the transcript only has a harness summary. */
  reply: QmpMessage | undefined;
  /** A harness summary line (`<- (…) …`, or a reply cut short with ` ...`) in place of the reply. */
  summary: string | undefined;
}

/** An event without its timestamp. */
export interface JobEvent {
  event: string;
  data: Record<string, unknown>;
}

export interface TranscriptEvent extends JobEvent {
  /** How many requests of the section had been sent when QEMU sent it. */
  afterRequests: number;
}

export interface TranscriptSection {
  title: string;
  steps: TranscriptStep[];
  events: TranscriptEvent[];
}

/** The section of `file` whose `###` heading starts with `title`. */
export function readSection(file: string, title: string): TranscriptSection {
  const lines = readFileSync(`${TRANSCRIPT_DIR}${file}`, 'utf8').split('\n');
  let section: TranscriptSection | undefined;
  for (const line of lines) {
    if (line.startsWith('### ')) {
      if (section !== undefined) break;
      const heading = line.slice(4);
      if (heading.startsWith(title)) section = { title: heading, steps: [], events: [] };
      continue;
    }
    if (section === undefined) continue;
    if (line.startsWith('-> ')) {
      section.steps.push({ request: JSON.parse(line.slice(3)) as TranscriptRequest, reply: undefined, summary: undefined });
    } else if (line.startsWith('<- (') || (line.startsWith('<- ') && line.endsWith(' ...'))) {
      // A harness summary, or a reply the harness cut short (s6's query-named-block-nodes).
      section.steps[section.steps.length - 1]!.summary = line.slice(3);
    } else if (line.startsWith('<- ')) {
      const message = JSON.parse(line.slice(3)) as QmpMessage;
      if (typeof message.event === 'string') {
        section.events.push({ event: message.event, data: (message.data ?? {}) as Record<string, unknown>, afterRequests: section.steps.length });
      } else {
        section.steps[section.steps.length - 1]!.reply = message;
      }
    }
  }
  if (section === undefined) throw new Error(`${file}: no section '${title}'`);
  return section;
}

/** The job an event is about: JOB_STATUS_CHANGE's `id`, BLOCK_JOB_*'s `device` (BLOCK_JOB_PENDING's `id`). */
export function jobOf(event: JobEvent): string | undefined {
  const { data } = event;
  if (event.event === 'JOB_STATUS_CHANGE' || event.event === 'BLOCK_JOB_PENDING') return data.id as string;
  if (event.event.startsWith('BLOCK_JOB_')) return data.device as string;
  return undefined;
}

export function statuses(events: readonly JobEvent[]): string[] {
  return events.map((e) => (e.event === 'JOB_STATUS_CHANGE' ? String(e.data.status) : e.event));
}

/**
 * Removes the `paused`, `running` pairs that follow a job's start
 * (`created, running, paused, running`): pauses by drains another job or
 * command caused, which depend on whether this job was still running then.
 */
export function withoutDrainPauses(events: readonly JobEvent[]): JobEvent[] {
  const out = events.slice(0, 4);
  for (let i = 4; i < events.length; i++) {
    const here = events[i]!;
    const next = events[i + 1];
    if (isStatus(here, 'paused') && next !== undefined && isStatus(next, 'running')) i++;
    else out.push(here);
  }
  return out;
}

function isStatus(event: JobEvent, status: string): boolean {
  return event.event === 'JOB_STATUS_CHANGE' && event.data.status === status;
}

export interface ReplayOptions {
  /** Runs before step i is sent (after the event wait): e.g. wait for progress. */
  before?: Record<number, () => Promise<void>>;
  /** Step i's replies (ours and QEMU's) are compared after this. */
  normalise?: Record<number, (reply: QmpMessage, side: 'ours' | 'qemu') => unknown>;
  /** Steps not compared (and not sent), with the reason, logged. */
  skip?: (step: TranscriptStep) => string | undefined;
  /** For a step whose reply the transcript summarises: what to compare of ours, and of the summary. */
  summary?: Record<number, (reply: QmpMessage, summary: string) => { ours: unknown; qemu: unknown }>;
  /** Jobs whose drain pauses after the start depend on timing (see withoutDrainPauses). */
  drainPausesVary?: readonly string[];
  /** Longest wait for events, in ms. */
  eventTimeoutMs?: number;
  /** Rewrites each request before it is sent (e.g. `$IMG` to the image directory); replies are compared as recorded. */
  rewrite?: (request: TranscriptRequest) => TranscriptRequest;
}

export interface ReplayResult {
  replies: QmpMessage[];
  events: JobEvent[];
}

/** Collects a client's events as they come. */
export class EventLog {
  readonly events: JobEvent[] = [];

  constructor(private readonly client: QmpClient) {}

  collect(): JobEvent[] {
    for (const e of this.client.takeEvents() as QmpEventMessage[]) this.events.push({ event: e.event, data: e.data ?? {} });
    return this.events;
  }
}

export class Replay {
  readonly log: EventLog;
  private readonly varying: Set<string>;

  constructor(
    private readonly t: ExecutionContext,
    private readonly client: QmpClient,
    private readonly section: TranscriptSection,
    private readonly options: ReplayOptions = {},
  ) {
    this.log = new EventLog(client);
    this.varying = new Set(options.drainPausesVary ?? []);
  }

  /** A job's events as compared: drain pauses removed where they depend on timing. */
  private compared(id: string, events: readonly JobEvent[]): JobEvent[] {
    const own = events.filter((e) => jobOf(e) === id);
    return this.varying.has(id) ? withoutDrainPauses(own) : own;
  }

  private jobs(): string[] {
    const ids = new Set<string>();
    for (const e of this.section.events) ids.add(jobOf(e) ?? `(${e.event})`);
    for (const e of this.log.collect()) ids.add(jobOf(e) ?? `(${e.event})`);
    return [...ids];
  }

  /** Waits until ours has sent, per job, what QEMU had sent after `requests` requests. */
  async waitForEvents(requests: number): Promise<boolean> {
    const expected = this.section.events.filter((e) => e.afterRequests <= requests);
    const ids = [...new Set(expected.map((e) => jobOf(e)).filter((id): id is string => id !== undefined))];
    // Generous: it only runs out when an event is missing, and with other test files beside it a job's
    // end can wait long on the disk (closing a filter flushes the chain below it, fdatasync included).
    const deadline = Date.now() + (this.options.eventTimeoutMs ?? 60_000);
    for (;;) {
      const ours = this.log.collect();
      const done = ids.every((id) => {
        const mine = this.compared(id, ours);
        return mine.length >= this.compared(id, expected).length || mine.some((e) => isStatus(e, 'null'));
      });
      if (done) return true;
      if (Date.now() > deadline) return false;
      await sleep(5);
    }
  }

  /**
   * Sends every step, then compares the replies and each job's events. All
   * differences are reported at once, in one assertion (an assertion that
   * fails ends the test, and a section left half-way would disturb the
   * next one on the same daemon).
   */
  async run(): Promise<ReplayResult> {
    const { t, section, options } = this;
    const replies: QmpMessage[] = [];
    const actual: Record<string, unknown> = {};
    const expected: Record<string, unknown> = {};
    for (const [i, step] of section.steps.entries()) {
      const label = `#${i} ${JSON.stringify(step.request)}`;
      const skipped = options.skip?.(step);
      if (skipped !== undefined) {
        t.log(`not compared: ${section.title} ${label}: ${skipped}`);
        continue;
      }
      if (!(await this.waitForEvents(i))) t.log(`${section.title} ${label}: events QEMU had sent by then did not all come`);
      await options.before?.[i]?.();
      const request = options.rewrite?.(step.request) ?? step.request;
      const reply = await this.client.execute(request.execute, request.arguments);
      replies.push(reply);
      const summarise = options.summary?.[i];
      const normalise = options.normalise?.[i] ?? ((r: QmpMessage) => r);
      const { ours, qemu } =
        summarise !== undefined && step.summary !== undefined
          ? summarise(reply, step.summary)
          : { ours: normalise(reply, 'ours'), qemu: step.reply === undefined ? '(no reply in the transcript)' : normalise(step.reply, 'qemu') };
      if (!isDeepStrictEqual(ours, qemu)) {
        actual[`reply to ${label}`] = ours;
        expected[`reply to ${label}`] = qemu;
      }
    }
    await this.waitForEvents(section.steps.length);
    const events = this.log.collect();
    for (const id of this.jobs()) {
      const other = id.startsWith('(');
      const ours = (other ? events.filter((e) => `(${e.event})` === id) : this.compared(id, events)).map(strip);
      const qemu = (other ? section.events.filter((e) => `(${e.event})` === id) : this.compared(id, section.events)).map(strip);
      if (!isDeepStrictEqual(ours, qemu)) {
        actual[`events of ${id}`] = ours;
        expected[`events of ${id}`] = qemu;
      }
    }
    t.deepEqual(actual, expected, `${section.title}: replies and job events that differ from QEMU's`);
    return { replies, events };
  }
}

function strip(event: JobEvent): JobEvent {
  return { event: event.event, data: event.data };
}

/** Polls query-jobs until job `id` has copied at least `bytes` (or `timeoutMs` passed). */
export async function waitForProgress(client: QmpClient, id: string, bytes: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const reply = await client.execute('query-jobs');
    const job = (reply.return as Record<string, unknown>[]).find((j) => j.id === id);
    if (job === undefined || (job['current-progress'] as number) >= bytes) return;
    await sleep(5);
  }
}

/**
 * For query-jobs / query-block-jobs replies whose progress QEMU reported at a
 * moment that depends on timing: replaces the value on both sides, if ours
 * is within [0, total]; `only`: of these jobs only.
 */
export function progressDependsOnTiming(only?: readonly string[]) {
  return (reply: QmpMessage, side: 'ours' | 'qemu'): unknown => {
    if (!Array.isArray(reply.return)) return reply;
    const jobs = (reply.return as Record<string, unknown>[]).map((job) => {
      const copy = { ...job };
      if (only !== undefined && !only.includes(String(job.id ?? job.device))) return copy;
      for (const [done, total] of [['current-progress', 'total-progress'], ['offset', 'len']] as const) {
        if (!(done in copy)) continue;
        const value = copy[done] as number;
        // Out of range, ours stays as it is, and shows as a difference.
        if (side === 'qemu' || (value >= 0 && value <= (copy[total] as number))) copy[done] = '(depends on timing)';
      }
      return copy;
    });
    return { ...reply, return: jobs };
  };
}
