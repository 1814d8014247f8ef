/** The nbd options (QEMU's BlockdevOptionsNbd), `--blockdev` keyval parsing, NBD URIs and the filename QEMU prints. */
import test from 'ava';
import { BLOCKDEV_OPTIONS } from '../../../core/block/blockdev-ref.js';
import { DriverRegistry } from '../../../core/block/driver-registry.js';
import { parseJsonOrKeyval } from '../../../core/schema/keyval.js';
import { QapiValidator } from '../../../core/schema/qapi-validator.js';
import { nbdDriver } from '../../../drivers/nbd/driver.js';
import { nbdFilename, parseNbdUri } from '../../../drivers/nbd/nbd-uri.js';

function validator(): QapiValidator {
  const v = new QapiValidator();
  new DriverRegistry(v).register(nbdDriver, 'nbd');
  return v;
}

test('members in QEMU order, with QEMU defaults', (t) => {
  t.deepEqual(Object.keys(nbdDriver.options.properties), [
    'server',
    'export',
    'tls-creds',
    'tls-hostname',
    'x-dirty-bitmap',
    'reconnect-delay',
    'open-timeout',
  ]);
  const v = validator();
  const options = v.validate(v.lookup(BLOCKDEV_OPTIONS)!, { driver: 'nbd', server: { type: 'inet', host: '::1', port: '10809' } });
  t.like(options, { export: '', 'reconnect-delay': 0, 'open-timeout': 0 });
});

test('--blockdev keyval: server.type selects the SocketAddress branch; errors are worded as QEMU', (t) => {
  const v = validator();
  const schema = v.lookup(BLOCKDEV_OPTIONS)!;
  const parse = (text: string) => v.validate(schema, parseJsonOrKeyval(text, schema, v, 'driver'));
  t.deepEqual(parse('driver=nbd,server.type=unix,server.path=/run/s.sock,export=exp,reconnect-delay=5'), {
    driver: 'nbd',
    server: { type: 'unix', path: '/run/s.sock' },
    export: 'exp',
    'reconnect-delay': 5,
    'open-timeout': 0,
    discard: 'ignore',
    'read-only': false,
    'auto-read-only': false,
    'force-share': false,
    'detect-zeroes': 'off',
  });
  t.like(parse('driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=10811'), { server: { type: 'inet', host: '127.0.0.1', port: '10811' } });
  t.throws(() => parse('driver=nbd,server.type=vsock,server.cid=3'), { message: "Parameter 'type' does not accept value 'vsock'" });
  t.throws(() => parse('driver=nbd,export=x'), { message: "Parameter 'server' is missing" });
  t.throws(() => v.validate(schema, { driver: 'nbd', server: { type: 'inet', host: 'h', port: 10809 } }), {
    message: "Invalid parameter type for 'server.port', expected: string",
  });
});

test('parseNbdUri: TCP and Unix forms, default port, IPv6, percent-decoding, one leading slash dropped', (t) => {
  t.deepEqual(parseNbdUri('nbd://example.com/disk'), { server: { type: 'inet', host: 'example.com', port: '10809' }, export: 'disk' });
  t.deepEqual(parseNbdUri('nbd+tcp://127.0.0.1:10811'), { server: { type: 'inet', host: '127.0.0.1', port: '10811' } });
  t.deepEqual(parseNbdUri('nbd://[::1]:10812/x'), { server: { type: 'inet', host: '::1', port: '10812' }, export: 'x' });
  t.deepEqual(parseNbdUri('nbd://h//disk'), { server: { type: 'inet', host: 'h', port: '10809' }, export: '/disk' });
  t.deepEqual(parseNbdUri('nbd://h/'), { server: { type: 'inet', host: 'h', port: '10809' } });
  t.deepEqual(parseNbdUri('nbd+unix:///exp?socket=/tmp/a+b.sock'), { server: { type: 'unix', path: '/tmp/a+b.sock' }, export: 'exp' });
  t.deepEqual(parseNbdUri('nbd+unix:///hello%20world?socket=/s&x-foo=1'), { server: { type: 'unix', path: '/s' }, export: 'hello world' });
  t.deepEqual(parseNbdUri('nbd+unix://?socket=%2Ftmp%2Fs'), { server: { type: 'unix', path: '/tmp/s' } });
  t.deepEqual(parseNbdUri('nbd+unix:////slash?socket=/s'), { server: { type: 'unix', path: '/s' }, export: '/slash' });
});

test('parseNbdUri refuses what QEMU and libnbd refuse', (t) => {
  const refused: [string, RegExp][] = [
    ['nbd+unix:///exp', /nbd\+unix needs '\?socket=PATH'/],
    ['nbd+unix://host/exp?socket=/s', /a host is not allowed with nbd\+unix/],
    ['nbd://h/exp?socket=/s', /the socket parameter is incompatible with nbd:/],
    ['nbds://h/exp', /TLS \(nbds\) URIs are not supported \(QEMU has none either\): use tls-creds/],
    ['http://h/exp', /unknown scheme 'http'/],
    ['nbd:unix:/tmp/s', /not of the form/],
    ['nbd:///exp', /no host given/],
    ['nbd://h:99999/', /bad port '99999'/],
    ['nbd://h/%zz', /bad percent-encoding/],
  ];
  for (const [uri, message] of refused) t.throws(() => parseNbdUri(uri), { message }, uri);
});

test('the filename QEMU prints for a node, with and without an export', (t) => {
  t.is(nbdFilename({ type: 'unix', path: '/run/s' }, 'exp'), 'nbd+unix:///exp?socket=/run/s');
  t.is(nbdFilename({ type: 'unix', path: '/run/s' }, undefined), 'nbd+unix://?socket=/run/s');
  t.is(nbdFilename({ type: 'inet', host: '127.0.0.1', port: '10809' }, 'exp'), 'nbd://127.0.0.1:10809/exp');
  t.is(nbdFilename({ type: 'inet', host: 'h', port: '1' }, undefined), 'nbd://h:1');
  const { server, export: name } = parseNbdUri('nbd+unix:///exp?socket=/run/s');
  t.is(nbdFilename(server, name), 'nbd+unix:///exp?socket=/run/s');
});
