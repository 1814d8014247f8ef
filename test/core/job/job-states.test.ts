/**
 * Walks every cell of the two lifecycle tables against QEMU 7.2's
 * (qemu-block-reference §2.3 transitions, §2.4 verbs), written out here
 * independently as the expected matrices.
 */
import test from 'ava';
import type { JobStatus } from '../../../core/job/job-handle.js';
import { JOB_TRANSITIONS, JOB_VERBS, type JobVerb, transitionAllowed, verbAllowed } from '../../../core/job/job-states.js';

const STATUSES: JobStatus[] = ['undefined', 'created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending', 'aborting', 'concluded', 'null'];

// Rows: from; columns: to, in STATUSES order (1 = allowed).
const EXPECTED_TRANSITIONS: Record<JobStatus, string> = {
  undefined: '0 1 0 0 0 0 0 0 0 0 0',
  created: '0 0 1 0 0 0 0 0 1 0 1',
  running: '0 0 0 1 1 0 1 0 1 0 0',
  paused: '0 0 1 0 0 0 0 0 0 0 0',
  ready: '0 0 0 0 0 1 1 0 1 0 0',
  standby: '0 0 0 0 1 0 0 0 0 0 0',
  waiting: '0 0 0 0 0 0 0 1 1 0 0',
  pending: '0 0 0 0 0 0 0 0 1 1 0',
  aborting: '0 0 0 0 0 0 0 0 1 1 0',
  concluded: '0 0 0 0 0 0 0 0 0 0 1',
  null: '0 0 0 0 0 0 0 0 0 0 0',
};

const VERB_STATUSES: JobStatus[] = ['created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending', 'aborting', 'concluded'];
// Rows: verb; columns: VERB_STATUSES.
const EXPECTED_VERBS: Record<JobVerb, string> = {
  cancel: '1 1 1 1 1 1 1 0 0',
  pause: '1 1 1 1 1 0 0 0 0',
  resume: '1 1 1 1 1 0 0 0 0',
  'set-speed': '1 1 1 1 1 0 0 0 0',
  complete: '0 0 0 1 1 0 0 0 0',
  finalize: '0 0 0 0 0 0 1 0 0',
  dismiss: '0 0 0 0 0 0 0 0 1',
};

test('every cell of the transition table is QEMU 7.2s', (t) => {
  for (const from of STATUSES) {
    const row = EXPECTED_TRANSITIONS[from].split(' ');
    STATUSES.forEach((to, i) => t.is(transitionAllowed(from, to), row[i] === '1', `${from} -> ${to}`));
  }
  t.deepEqual(Object.keys(JOB_TRANSITIONS).sort(), [...STATUSES].sort());
});

test('every cell of the verb table is QEMU 7.2s', (t) => {
  for (const verb of Object.keys(EXPECTED_VERBS) as JobVerb[]) {
    const row = EXPECTED_VERBS[verb].split(' ');
    VERB_STATUSES.forEach((status, i) => t.is(verbAllowed(verb, status), row[i] === '1', `${verb} in ${status}`));
    t.false(verbAllowed(verb, 'null'));
    t.false(verbAllowed(verb, 'undefined'));
  }
  t.deepEqual(Object.keys(JOB_VERBS).sort(), Object.keys(EXPECTED_VERBS).sort());
});
