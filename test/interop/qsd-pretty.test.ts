/** `--monitor …,pretty=on`: replies laid out byte for byte as qemu-storage-daemon lays them out. */
import net from 'node:net';
import test from 'ava';
import { startDaemon } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

/** Sends each request and collects the raw bytes of its reply (the greeting comes first). */
async function rawConversation(socket: string, requests: string[]): Promise<string[]> {
  const connection = net.connect(socket);
  let buffer = '';
  const waitForReply = async (): Promise<string> => {
    // A pretty reply ends with a line holding only the closing brace.
    for (let i = 0; i < 200 && !/\r\n\}\r\n$/.test(buffer); i++) await new Promise((r) => setTimeout(r, 10));
    const reply = buffer;
    buffer = '';
    return reply;
  };
  connection.on('data', (chunk: Buffer) => (buffer += chunk.toString('latin1')));
  const replies = [await waitForReply()];
  for (const request of requests) {
    connection.write(`${request}\n`);
    replies.push(await waitForReply());
  }
  connection.destroy();
  return replies;
}

test('pretty=on replies match QEMU byte for byte', async (t) => {
  if (!requirePeer(t, 'qemu-storage-daemon')) return;
  const requests = [
    '{"execute": "qmp_capabilities", "id": 1}',
    '{"execute": "nope", "id": [1, {}]}',
    '{"execute": "blockdev-del", "arguments": {"node-name": "x"}}',
    '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0"}, "id": "a"}',
  ];
  const qemu = await startDaemon('qemu', [], ',pretty=on');
  const ours = await startDaemon('ours', [], ',pretty=on');
  try {
    const [expected, actual] = await Promise.all([rawConversation(qemu.socket, requests), rawConversation(ours.socket, requests)]);
    t.regex(actual[0]!, /^\{\r\n {4}"QMP": \{\r\n {8}"version": \{\r\n/);
    t.deepEqual(actual.slice(1), expected.slice(1));
  } finally {
    await Promise.all([qemu.stop(), ours.stop()]);
  }
});
