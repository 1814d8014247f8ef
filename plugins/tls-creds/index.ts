/** Plugin: the TLS credentials object types, tls-creds-psk and tls-creds-x509 (object-add, --object). */
import { ContainerModule } from 'inversify';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { tlsCredsPsk } from './tls-creds-psk.js';
import { tlsCredsX509 } from './tls-creds-x509.js';

const plugin: Plugin = {
  name: 'tls-creds',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.ObjectTypeContribution).toConstantValue(tlsCredsPsk);
    bind(TOKENS.ObjectTypeContribution).toConstantValue(tlsCredsX509);
  }),
};

export default plugin;
