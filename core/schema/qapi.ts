/**
 * Schema builders in QEMU's QAPI vocabulary. Every command argument, driver
 * option and manifest entry is declared with these (TypeBox underneath), so
 * one declaration gives runtime validation (qapi-validator.ts), the static
 * TypeScript type (`Static<typeof schema>`), introspection
 * (`query-qmp-schema`) and the options tables in the READMEs.
 *
 * The annotations (`qapiType`, `qapiEnum`, `discriminator`, `qapiAlternate`,
 * `qapiExpects`, `qemuOptsDefault`, `qemuOptsProtocol`) carry what QEMU's messages and
 * introspection need and plain JSON Schema does not say.
 */
import {
  type SchemaOptions,
  type Static,
  type TArray,
  type TBoolean,
  type TInteger,
  type TLiteral,
  type TNull,
  type TNumber,
  type TObject,
  type TProperties,
  type TRef,
  type TSchema,
  type TString,
  type TUnion,
  type TUnknown,
  Kind,
  Type,
} from '@sinclair/typebox';

export type { Static, TObject, TProperties, TSchema };

/** Annotations this project adds to JSON Schema; read by the validator and introspection. */
export interface QapiAnnotations {
  /** QAPI type name: 'str', 'int', 'uint32', 'size', or a struct/enum/union name. */
  qapiType?: string;
  /** A union of string literals (a QAPI enum). */
  qapiEnum?: boolean;
  /** A flat union: the member that selects the branch. */
  discriminator?: string;
  /** An alternate: the branch is chosen by the JSON type of the value. */
  qapiAlternate?: boolean;
  /** What QEMU says a bad value "expects", e.g. `uint32_t`. */
  qapiExpects?: string;
  /**
   * A creation option's default as QEMU's option list holds it (its
   * def_value_str): qemu-img create prints it when the option is not given.
   */
  qemuOptsDefault?: string;
  /** A creation option QEMU's format takes from its protocol driver's list (nocow): not the format's own. */
  qemuOptsProtocol?: boolean;
}

export function annotations(schema: TSchema): QapiAnnotations {
  return schema as QapiAnnotations;
}

type Opts = SchemaOptions & { default?: unknown; qemuOptsDefault?: string; qemuOptsProtocol?: boolean };

/** A union that stays one with a single branch (TypeBox would collapse it to the branch, losing the annotations). */
function union<T extends TSchema[]>(branches: [...T], opts: Opts): TUnion<T> {
  return { ...opts, [Kind]: 'Union', anyOf: branches } as unknown as TUnion<T>;
}

const INT64_MIN = -(2 ** 63);
const INT64_MAX = 2 ** 63 - 1;

export const Qapi = {
  str: (opts: Opts = {}): TString => Type.String({ qapiType: 'str', ...opts }),
  bool: (opts: Opts = {}): TBoolean => Type.Boolean({ qapiType: 'bool', ...opts }),
  number: (opts: Opts = {}): TNumber => Type.Number({ qapiType: 'number', ...opts }),
  any: (opts: Opts = {}): TUnknown => Type.Unknown({ qapiType: 'any', ...opts }),
  null: (opts: Opts = {}): TNull => Type.Null({ qapiType: 'null', ...opts }),
  int: (opts: Opts = {}): TInteger =>
    Type.Integer({ qapiType: 'int', minimum: INT64_MIN, maximum: INT64_MAX, qapiExpects: 'int64_t', ...opts }),
  int64: (opts: Opts = {}): TInteger =>
    Type.Integer({ qapiType: 'int', minimum: INT64_MIN, maximum: INT64_MAX, qapiExpects: 'int64_t', ...opts }),
  uint8: (opts: Opts = {}): TInteger =>
    Type.Integer({ qapiType: 'uint8', minimum: 0, maximum: 0xff, qapiExpects: 'uint8_t', ...opts }),
  uint16: (opts: Opts = {}): TInteger =>
    Type.Integer({ qapiType: 'uint16', minimum: 0, maximum: 0xffff, qapiExpects: 'uint16_t', ...opts }),
  uint32: (opts: Opts = {}): TInteger =>
    Type.Integer({ qapiType: 'uint32', minimum: 0, maximum: 0xffffffff, qapiExpects: 'uint32_t', ...opts }),
  /** QAPI 'uint64'. JavaScript numbers are exact to 2^53, which bounds every size we handle. */
  uint64: (opts: Opts = {}): TInteger =>
    Type.Integer({ qapiType: 'uint64', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, qapiExpects: 'uint64', ...opts }),
  /** QAPI 'size': a byte count. */
  size: (opts: Opts = {}): TInteger =>
    Type.Integer({
      qapiType: 'size',
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      qapiExpects: 'a non-negative number below 2^64',
      ...opts,
    }),

  /** A QAPI enum: one of `values`. */
  enum: <V extends string>(name: string, values: readonly V[], opts: Opts = {}): TUnion<TLiteral<V>[]> =>
    union(
      values.map((v) => Type.Literal(v)),
      { qapiType: name, qapiEnum: true, ...opts },
    ),

  /** A QAPI struct: known members only, in declaration order (the order QEMU reports errors in). */
  struct: <P extends TProperties>(name: string, properties: P, opts: Opts = {}): TObject<P> =>
    Type.Object(properties, { additionalProperties: false, qapiType: name, ...opts }),

  list: <T extends TSchema>(item: T, opts: Opts = {}): TArray<T> => Type.Array(item, opts),

  optional: <T extends TSchema>(schema: T) => Type.Optional(schema),

  /**
   * A flat union: `branches` are structs that all start with the base
   * members, the `tag` member first, each with a literal tag value.
   */
  flatUnion: <T extends TObject[]>(name: string, tag: string, branches: [...T], opts: Opts = {}): TUnion<T> =>
    union(branches, { qapiType: name, discriminator: tag, ...opts }),

  /** An alternate: the JSON type of the value picks the branch (e.g. BlockdevRef = object | str). */
  alternate: <T extends TSchema[]>(name: string, branches: [...T], opts: Opts = {}): TUnion<T> =>
    union(branches, { qapiType: name, qapiAlternate: true, ...opts }),

  /** A reference to a named type resolved at validation time (recursive or plugin-built types). */
  ref: <T = unknown>(name: string): TSchema & { static: T } =>
    Type.Unsafe<T>(Type.Ref(name)) as unknown as TSchema & { static: T },

  literal: <V extends string>(value: V): TLiteral<V> => Type.Literal(value),
};

export function isRef(schema: TSchema): schema is TRef {
  return typeof (schema as { $ref?: unknown }).$ref === 'string';
}
