/** query-version: the QEMU QMP level spoken and this package's version. */
import { injectable } from 'inversify';
import { Qapi } from '../../schema/qapi.js';
import { QMP_VERSION } from '../../version.js';
import type { QmpCommand } from '../qmp-command.js';

const returns = Qapi.struct('VersionInfo', {
  qemu: Qapi.struct('VersionTriple', { major: Qapi.int(), minor: Qapi.int(), micro: Qapi.int() }),
  package: Qapi.str(),
});

@injectable()
export class QueryVersionCommand implements QmpCommand {
  readonly name = 'query-version';
  readonly summary = 'Report the QMP version';
  readonly returns = returns;

  execute(): typeof QMP_VERSION {
    return QMP_VERSION;
  }
}
