/** Runs a program to its end (from the repository root unless told), with its exit code and output, failed or not. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ROOT } from './daemons.js';

const execFileAsync = promisify(execFile);

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function commandResult(command: string, args: readonly string[], cwd = ROOT): Promise<CommandResult> {
  try {
    const { stdout, stderr } = await execFileAsync(command, args, { cwd, maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** The program's output; a failure throws, naming the command line and what it printed on stderr. */
export async function mustSucceed(cwd: string, command: string, ...args: string[]): Promise<string> {
  const result = await commandResult(command, args, cwd);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}
