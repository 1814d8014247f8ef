/**
 * Validates values against QAPI schemas and reports the first problem the way
 * QEMU's QObject input visitor does: members are visited in schema order, a
 * missing member or a wrong type is reported at the first offending member,
 * unexpected members only after all known ones, enum errors name the bare
 * member. TypeBox decides what is valid; this file only chooses which of
 * TypeBox's findings QEMU would have reported first, and words it.
 */
import { type TSchema, TypeGuard } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import { BlockLayerError } from '../errors.js';
import { annotations, isRef, type Static } from './qapi.js';
import { injectable } from 'inversify';

/** Where a value sits, as QEMU names it: `actions[0].data`. */
class MemberPath {
  constructor(
    private readonly parts: readonly (string | number)[] = [],
    private readonly prefix = '',
  ) {}

  member(name: string): MemberPath {
    return new MemberPath([...this.parts, name], this.prefix);
  }

  element(index: number): MemberPath {
    return new MemberPath([...this.parts, index], this.prefix);
  }

  /** QEMU's full_name(): dotted members, `[i]` for list elements. */
  get full(): string {
    let out = this.prefix;
    for (const part of this.parts) {
      if (typeof part === 'number') out += `[${part}]`;
      else out += out === '' ? part : `.${part}`;
    }
    return out === '' ? 'null' : out;
  }

  /** The bare member name QEMU uses in enum errors; list elements have none ('null'). */
  get bare(): string {
    const last = this.parts[this.parts.length - 1];
    if (last === undefined) return this.prefix === '' ? 'null' : (this.prefix.split('.').pop() ?? 'null');
    return typeof last === 'number' ? 'null' : last;
  }
}

type JsonKind = 'object' | 'array' | 'string' | 'number' | 'boolean' | 'null';

function jsonKind(value: unknown): JsonKind | undefined {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  switch (typeof value) {
    case 'object':
      return 'object';
    case 'string':
      return 'string';
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    default:
      return undefined;
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return jsonKind(value) === 'object';
}

@injectable()
export class QapiValidator {
  private readonly compiled = new WeakMap<TSchema, TypeCheck<TSchema>>();
  /** Schemas checked once so far: interpreted, not compiled (see `check`). */
  private readonly checkedOnce = new WeakSet<TSchema>();
  private named = new Map<string, TSchema>();
  private references: TSchema[] = [];

  /** Registers named types (`$id`) that `Qapi.ref()` points at; replaces one of the same name. */
  define(schema: TSchema): void {
    const id = schema.$id;
    if (id === undefined) throw new Error('a named QAPI type needs an $id');
    this.named.set(id, schema);
    this.references = [...this.named.values()];
    this.compiled.delete(schema);
  }

  lookup(name: string): TSchema | undefined {
    return this.named.get(name);
  }

  /** Named types, for introspection. */
  definitions(): readonly TSchema[] {
    return this.references;
  }

  /**
   * Returns a copy of `value` with schema defaults filled in, or throws a
   * GenericError worded as QEMU would. `prefix` names where the value sits
   * (e.g. 'file' for a nested node's options).
   */
  validate<T extends TSchema>(schema: T, value: unknown, prefix = ''): Static<T> {
    this.assert(schema, value, prefix);
    return Value.Default(schema, this.references, Value.Clone(value)) as Static<T>;
  }

  /** Like `validate`, but returns the value as given: absent members stay absent. */
  assert<T extends TSchema>(schema: T, value: unknown, prefix = ''): Static<T> {
    if (!this.check(schema, value)) {
      const message = this.firstError(schema, value, new MemberPath([], prefix));
      throw new BlockLayerError(message ?? `Invalid parameter value for '${prefix || 'null'}'`);
    }
    return value as Static<T>;
  }

  /**
   * Compiling a schema costs more than interpreting it once, and most are
   * checked once per process (the manifest, each plugin's options, a CLI
   * run's image): a schema is interpreted the first time and compiled when
   * it is checked again (a command's arguments, a driver's options).
   */
  check(schema: TSchema, value: unknown): boolean {
    let check = this.compiled.get(schema);
    if (check === undefined) {
      if (!this.checkedOnce.has(schema)) {
        this.checkedOnce.add(schema);
        return Value.Check(schema, this.references, value);
      }
      check = TypeCompiler.Compile(schema, this.references);
      this.compiled.set(schema, check);
    }
    return check.Check(value);
  }

  private deref(schema: TSchema): TSchema {
    if (!isRef(schema)) return schema;
    const target = this.named.get(schema.$ref);
    if (target === undefined) throw new Error(`QAPI type '${schema.$ref}' is not defined`);
    return target;
  }

  private subCheck(schema: TSchema, value: unknown): boolean {
    return Value.Check(schema, this.references, value);
  }

  private firstError(schema: TSchema, value: unknown, path: MemberPath): string | undefined {
    const s = this.deref(schema);
    if (TypeGuard.IsUnion(s)) return this.unionError(s, value, path);
    if (TypeGuard.IsObject(s)) return this.objectError(s, value, path);
    if (TypeGuard.IsArray(s)) {
      if (!Array.isArray(value)) return typeError(path, 'array');
      for (const [i, item] of value.entries()) {
        if (!this.subCheck(s.items, item)) return this.firstError(s.items, item, path.element(i));
      }
      return undefined;
    }
    return this.leafError(s, value, path);
  }

  private objectError(s: TSchema & { properties: Record<string, TSchema> }, value: unknown, path: MemberPath) {
    if (!isPlainObject(value)) return typeError(path, 'object');
    const required = new Set<string>((s as { required?: string[] }).required ?? []);
    for (const [key, member] of Object.entries(s.properties)) {
      const memberValue = value[key];
      if (memberValue === undefined) {
        if (required.has(key)) return `Parameter '${path.member(key).full}' is missing`;
        continue;
      }
      if (!this.subCheck(member, memberValue)) return this.firstError(member, memberValue, path.member(key));
    }
    if ((s as { additionalProperties?: unknown }).additionalProperties === false) {
      for (const key of Object.keys(value)) {
        if (!(key in s.properties)) return `Parameter '${path.member(key).full}' is unexpected`;
      }
    }
    return undefined;
  }

  private unionError(s: TSchema & { anyOf: TSchema[] }, value: unknown, path: MemberPath): string | undefined {
    const a = annotations(s);
    if (a.qapiEnum) {
      if (typeof value !== 'string') return typeError(path, 'string');
      return `Parameter '${path.bare}' does not accept value '${value}'`;
    }
    if (a.discriminator !== undefined) {
      const tag = a.discriminator;
      if (!isPlainObject(value)) return typeError(path, 'object');
      const tagValue = value[tag];
      if (tagValue === undefined) return `Parameter '${path.member(tag).full}' is missing`;
      if (typeof tagValue !== 'string') return typeError(path.member(tag), 'string');
      const branch = s.anyOf.find((b) => {
        const literal = (b as { properties?: Record<string, { const?: unknown }> }).properties?.[tag];
        return literal?.const === tagValue;
      });
      if (branch === undefined) return `Parameter '${tag}' does not accept value '${tagValue}'`;
      return this.firstError(branch, value, path);
    }
    const kind = jsonKind(value);
    const branch = s.anyOf.find((b) => this.acceptsKind(b, kind));
    // QEMU's generated alternate visitors name the bare member, as enum errors do.
    if (branch === undefined) return typeError(path, a.qapiType ?? this.kindNames(s.anyOf), path.bare);
    return this.firstError(branch, value, path);
  }

  private acceptsKind(schema: TSchema, kind: JsonKind | undefined): boolean {
    const s = this.deref(schema);
    if (TypeGuard.IsUnion(s)) {
      const a = annotations(s);
      if (a.qapiEnum) return kind === 'string';
      if (a.discriminator !== undefined) return kind === 'object';
      return s.anyOf.some((b) => this.acceptsKind(b, kind));
    }
    return schemaKind(s) === kind;
  }

  private kindNames(branches: TSchema[]): string {
    return branches.map((b) => schemaKind(this.deref(b)) ?? 'value').join(' or ');
  }

  private leafError(s: TSchema, value: unknown, path: MemberPath): string | undefined {
    const kind = schemaKind(s);
    if (TypeGuard.IsLiteral(s)) {
      if (typeof value !== typeof s.const) return typeError(path, kind ?? 'value');
      return `Parameter '${path.bare}' does not accept value '${String(value)}'`;
    }
    const integer = TypeGuard.IsInteger(s);
    const { qapiExpects: expects, qapiType } = annotations(s);
    // QEMU visits every unsigned type through its uint64 visitor, which words a value of the wrong JSON type as a bad value.
    const unsigned = expects === 'uint64' || (qapiType !== undefined && UNSIGNED_TYPES.has(qapiType));
    if (integer && unsigned && !Number.isInteger(value)) return `Parameter '${path.full}' expects uint64`;
    if (kind !== undefined && jsonKind(value) !== kind) return typeError(path, integer ? 'integer' : kind);
    if (integer && !Number.isInteger(value)) return typeError(path, 'integer');
    const first = Value.Errors(s, this.references, value).First();
    if (first === undefined) return undefined;
    return `Parameter '${path.full}' expects ${expects ?? first.message.toLowerCase()}`;
  }
}

const UNSIGNED_TYPES = new Set(['uint8', 'uint16', 'uint32', 'uint64']);

function typeError(path: MemberPath, expected: string, name = path.full): string {
  return `Invalid parameter type for '${name}', expected: ${expected}`;
}

/** The JSON type a non-union schema accepts, in QEMU's words. */
function schemaKind(s: TSchema): JsonKind | undefined {
  if (TypeGuard.IsObject(s)) return 'object';
  if (TypeGuard.IsArray(s)) return 'array';
  if (TypeGuard.IsString(s)) return 'string';
  if (TypeGuard.IsInteger(s) || TypeGuard.IsNumber(s)) return 'number';
  if (TypeGuard.IsBoolean(s)) return 'boolean';
  if (TypeGuard.IsNull(s)) return 'null';
  if (TypeGuard.IsLiteral(s)) return jsonKind(s.const);
  return undefined;
}
