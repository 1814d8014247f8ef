/**
 * The command seam. A command is contributed by a plugin (bound to
 * TOKENS.CommandContribution) and served by one registry to QMP clients and
 * to `layer.execute()` alike. Its arguments are validated against `args`
 * before `execute` runs, so handlers trust them; they arrive as sent, an
 * absent optional member absent (the schema's `default` documents what the
 * handler assumes). A handler reports failure by throwing (a
 * BlockLayerError carries QEMU's error class).
 */
import type { TSchema } from '@sinclair/typebox';

/** What a command can do to the QMP connection it came from. */
export interface QmpSessionControl {
  /** True once capabilities negotiation is done. */
  readonly negotiated: boolean;
  /** Ends negotiation with these capabilities enabled. */
  completeNegotiation(capabilities: readonly string[]): void;
}

export interface CommandContext {
  /** The QMP connection; absent for calls through the API. */
  readonly session?: QmpSessionControl;
}

export interface QmpCommand<A = any, R = unknown> {
  /** The QMP command name. */
  readonly name: string;
  /** One line for introspection and documentation. */
  readonly summary: string;
  /** Argument schema: a struct, or a named type for boxed commands (blockdev-add). None: no arguments. */
  readonly args?: TSchema;
  /** Result schema, for introspection. None: `{}`. */
  readonly returns?: TSchema;
  /** May be sent with `exec-oob`. */
  readonly allowOob?: boolean;
  /** Accepted during capabilities negotiation (only qmp_capabilities). */
  readonly allowInNegotiation?: boolean;
  /** Runs the command with validated arguments; `undefined` is returned to clients as `{}`. */
  execute(args: A, context: CommandContext): Promise<R> | R;
}
