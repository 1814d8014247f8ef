/**
 * A Unix socket path as Node's net module must be given it. Node reads a
 * string that is a non-negative number (`12345`, `1.5`, `0x10`) as a TCP
 * port, in listen() and connect() alike: `--qmp 12345` would listen on port
 * 12345 of every interface instead of making the socket file `12345`.
 * `./12345` names the same file; abstract names (a leading NUL) and other
 * paths are left as they are.
 */
export function unixSocketPath(path: string): string {
  return !path.startsWith('/') && !path.startsWith('\0') && Number(path) >= 0 ? `./${path}` : path;
}
