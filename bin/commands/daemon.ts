/** `blocklayer daemon`: qemu-storage-daemon's options, plus --qmp and --manifest. */
import type { Command } from 'commander';
import { type DaemonOptions, runDaemon } from '../daemon/run-daemon.js';
import { daemonize, isDaemonChild } from '../daemon/daemonize.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function daemonCommand(program: Command): void {
  program
    .command('daemon')
    .description('run the block layer daemon (accepts qemu-storage-daemon options)')
    .option('--object <options>', 'add an object: [qom-type=]tls-creds-psk|tls-creds-x509,id=ID,dir=DIR[,endpoint=server] (or JSON)', collect, [])
    .option('--blockdev <options>', 'add a node: JSON or key=value (as qemu-storage-daemon --blockdev)', collect, [])
    .option('--nbd-server <options>', 'start the NBD server: addr.type=unix,addr.path=PATH or addr.type=inet,addr.host=H,addr.port=P [,tls-creds=ID][,max-connections=N]', collect, [])
    .option('--export <options>', 'export a node: [type=]nbd,id=ID,node-name=NODE[,name=NAME][,writable=on][,description=TEXT][,bitmaps.0=B][,allocation-depth=on]', collect, [])
    .option('--chardev <options>', 'a character device: socket,id=ID,path=PATH,server=on,wait=off (or stdio,id=ID)', collect, [])
    .option('--monitor <options>', 'a QMP monitor on a chardev: [chardev=]ID', collect, [])
    .option('--qmp <path>', 'shorthand: a QMP monitor on a unix socket at PATH', collect, [])
    .option('--pidfile <path>', 'write the process id to PATH')
    .option('--daemonize', 'run in the background; the command returns once startup is complete')
    .option('--manifest <path>', 'plugin manifest (default: the package plugin-manifest.json)')
    .option('--embedded-default', 'serve a default raw disk DIR/disk0.raw and QMP on DIR/qmp.sock')
    .option('--data-dir <dir>', 'the directory of --embedded-default', 'data')
    .action(async (options: DaemonOptions & { daemonize?: boolean }) => {
      if (options.daemonize && !isDaemonChild()) await daemonize(process.argv.slice(1));
      await runDaemon(options);
    });
}
