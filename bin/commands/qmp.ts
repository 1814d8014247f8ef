/** `blocklayer qmp SOCKET COMMAND [JSON]`: one command against a running daemon (ours or QEMU's). */
import type { Command } from 'commander';
import { BlockLayerError } from '../../core/errors.js';
import { QmpClient, type QmpMessage } from '../../core/qmp/qmp-client.js';
import type { QmpAddress } from '../../core/qmp/qmp-server.js';

function address(socket: string): QmpAddress {
  const tcp = /^(?<host>[^/]*):(?<port>\d+)$/.exec(socket);
  if (tcp?.groups !== undefined) return { type: 'inet', host: tcp.groups.host || 'localhost', port: Number(tcp.groups.port) };
  return { type: 'unix', path: socket };
}

function parseArguments(json: string | undefined): Record<string, unknown> | undefined {
  if (json === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (error) {
    throw new BlockLayerError(`arguments are not JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new BlockLayerError('arguments must be a JSON object');
  }
  return value as Record<string, unknown>;
}

export function qmpCommand(program: Command): void {
  program
    .command('qmp')
    .description('send one QMP command and print the reply')
    .argument('<socket>', 'unix socket path, or HOST:PORT')
    .argument('<command>', 'QMP command name')
    .argument('[arguments]', 'arguments as a JSON object')
    .option('--wait-event <name>', 'after the reply, wait for this event and print it')
    .option('--timeout <seconds>', 'give up after this many seconds', '30')
    .action(async (socket: string, command: string, json: string | undefined, options: { waitEvent?: string; timeout: string }) => {
      const args = parseArguments(json);
      const seconds = Number(options.timeout);
      const timer = setTimeout(() => {
        process.stderr.write(`blocklayer qmp: no answer within ${options.timeout} s\n`);
        process.exit(1);
      }, seconds * 1000);
      const client = await QmpClient.connect(address(socket), { negotiate: true });
      const reply: QmpMessage = await client.execute(command, args);
      print(reply);
      const failed = 'error' in reply;
      if (!failed && options.waitEvent !== undefined) print(await client.waitEvent(options.waitEvent));
      clearTimeout(timer);
      await client.close();
      if (failed) process.exitCode = 1;
    });
}

function print(message: QmpMessage): void {
  process.stdout.write(`${JSON.stringify(message, null, 2)}\n`);
}
