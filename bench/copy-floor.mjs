#!/usr/bin/env node
/**
 * The floor under a conversion in Node: a bare Node process that does only
 * the file I/O a convert must do, with no block layer, no format and no
 * zero detection. It copies the listed extents from SOURCE to TARGET the
 * way qemu-img convert and ours do (2 MiB requests, 8 in flight, writes in
 * order, each once the one before has completed) through the same fs
 * calls as the file driver. The list is worked out before the clock (from
 * `qemu-img map` of the images), so this is a lower bound for any Node
 * converter on this machine, start-up included; bench/qcow2.ts times it
 * beside the two tools. Plain JavaScript, so it starts as plain node.
 *
 *   node bench/copy-floor.mjs SOURCE TARGET TARGET-LENGTH LIST.json
 *
 * LIST: [[sourceOffset, targetOffset, length], ...], in target order.
 */
import { closeSync, ftruncateSync, openSync, read, readFileSync, write } from 'node:fs';

const CHUNK = 2 * 1024 * 1024;
const IN_FLIGHT = 8;

const [sourcePath, targetPath, targetLength, listPath] = process.argv.slice(2);
if (listPath === undefined) throw new Error('usage: copy-floor.mjs SOURCE TARGET TARGET-LENGTH LIST.json');
const pieces = [];
for (const [from, to, length] of JSON.parse(readFileSync(listPath, 'utf8'))) {
  for (let done = 0; done < length; done += CHUNK) pieces.push([from + done, to + done, Math.min(CHUNK, length - done)]);
}

const source = openSync(sourcePath, 'r');
const target = openSync(targetPath, 'w');
ftruncateSync(target, Number(targetLength));

const transfer = (call, fd, buf, length, position) =>
  new Promise((resolve, reject) =>
    call(fd, buf, 0, length, position, (error, bytes) => (error ? reject(error) : bytes === length ? resolve() : reject(new Error('short transfer')))),
  );

let next = 0;
let turn = Promise.resolve();
await Promise.all(
  Array.from({ length: IN_FLIGHT }, async () => {
    const buf = Buffer.allocUnsafeSlow(CHUNK);
    while (next < pieces.length) {
      const [from, to, length] = pieces[next++];
      const previous = turn;
      let done;
      turn = new Promise((resolve) => (done = resolve));
      await transfer(read, source, buf, length, from);
      await previous;
      await transfer(write, target, buf, length, to);
      done();
    }
  }),
);
closeSync(source);
closeSync(target);
