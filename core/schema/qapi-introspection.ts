/**
 * Builds `query-qmp-schema` output (QEMU's SchemaInfo list) from the same
 * schemas that validate the commands. As QEMU does, type names other than
 * the builtins are masked as numbers; the empty struct is "0".
 */
import { type TSchema, TypeGuard } from '@sinclair/typebox';
import { annotations, isRef } from './qapi.js';

export type SchemaInfo = Record<string, unknown>;

export interface IntrospectedCommand {
  name: string;
  args?: TSchema | undefined;
  returns?: TSchema | undefined;
  allowOob?: boolean | undefined;
}

export interface IntrospectedEvent {
  name: string;
  data?: TSchema;
}

const BUILTINS: Record<string, string> = {
  str: 'string',
  any: 'value',
  bool: 'boolean',
  int: 'int',
  null: 'null',
  number: 'number',
};

type Resolver = (name: string) => TSchema | undefined;

export class QapiIntrospection {
  private readonly infos: SchemaInfo[] = [];
  private readonly names = new Map<TSchema, string>();
  private readonly builtinsUsed = new Set<string>();
  private counter = 1;

  constructor(private readonly resolve: Resolver) {
    this.infos.push({ name: '0', members: [], 'meta-type': 'object' });
  }

  /** The whole SchemaInfo list for these commands and events. */
  static build(commands: IntrospectedCommand[], events: IntrospectedEvent[], resolve: Resolver): SchemaInfo[] {
    const introspection = new QapiIntrospection(resolve);
    const entities: SchemaInfo[] = [];
    for (const command of commands) {
      const info: SchemaInfo = {
        name: command.name,
        'ret-type': command.returns === undefined ? '0' : introspection.typeName(command.returns),
        'meta-type': 'command',
        'arg-type': command.args === undefined ? '0' : introspection.typeName(command.args),
      };
      if (command.allowOob) info['allow-oob'] = true;
      entities.push(info);
    }
    for (const event of events) {
      entities.push({
        name: event.name,
        'meta-type': 'event',
        'arg-type': event.data === undefined ? '0' : introspection.typeName(event.data),
      });
    }
    const builtins = [...introspection.builtinsUsed].map((name) => ({
      name,
      'json-type': BUILTINS[name],
      'meta-type': 'builtin',
    }));
    return [...entities, ...introspection.infos, ...builtins];
  }

  /** The (masked) name of `schema`'s type, describing it on first sight. */
  private typeName(schema: TSchema): string {
    const target = isRef(schema) ? this.resolve(schema.$ref) : schema;
    if (target === undefined) throw new Error(`QAPI type '${String(schema.$ref)}' is not defined`);
    const builtin = builtinName(target);
    if (builtin !== undefined) {
      this.builtinsUsed.add(builtin);
      return builtin;
    }
    const known = this.names.get(target);
    if (known !== undefined) return known;
    if (TypeGuard.IsObject(target) && Object.keys(target.properties).length === 0) return '0';
    if (TypeGuard.IsArray(target)) {
      const element = this.typeName(target.items);
      const name = `[${element}]`;
      this.names.set(target, name);
      if (!this.infos.some((i) => i.name === name)) this.infos.push({ name, 'element-type': element, 'meta-type': 'array' });
      return name;
    }
    const name = String(this.counter++);
    this.names.set(target, name);
    const info: SchemaInfo = { name };
    this.infos.push(info);
    Object.assign(info, this.describe(target));
    return name;
  }

  private describe(schema: TSchema): SchemaInfo {
    const a = annotations(schema);
    if (TypeGuard.IsUnion(schema)) {
      if (a.qapiEnum) {
        const values = schema.anyOf.map((b) => String((b as { const?: unknown }).const));
        return { members: values.map((v) => ({ name: v })), 'meta-type': 'enum', values };
      }
      if (a.discriminator !== undefined) return this.describeFlatUnion(schema.anyOf, a.discriminator);
      return { members: schema.anyOf.map((b) => ({ type: this.typeName(b) })), 'meta-type': 'alternate' };
    }
    if (TypeGuard.IsObject(schema)) {
      return { members: this.members(schema.properties, schema.required ?? []), 'meta-type': 'object' };
    }
    throw new Error(`cannot introspect schema ${JSON.stringify(schema)}`);
  }

  /** Base members (shared by every branch, the tag first), then one variant struct per tag value. */
  private describeFlatUnion(branches: TSchema[], tag: string): SchemaInfo {
    const objects = branches.filter(TypeGuard.IsObject);
    const first = objects[0];
    if (first === undefined) return { members: [], 'meta-type': 'object' };
    const shared = Object.keys(first.properties).filter(
      (key) => key === tag || objects.every((o) => o.properties[key] === first.properties[key]),
    );
    const tags = objects.map((o) => String((o.properties[tag] as { const?: unknown }).const));
    const tagType = String(this.counter++);
    this.infos.push({ name: tagType, members: tags.map((t) => ({ name: t })), 'meta-type': 'enum', values: tags });
    const base = Object.fromEntries(shared.filter((k) => k !== tag).map((k) => [k, first.properties[k]!]));
    const members = [{ name: tag, type: tagType }, ...this.members(base, first.required ?? [])];
    const variants = objects.map((o, i) => {
      const own = Object.fromEntries(Object.entries(o.properties).filter(([k]) => !shared.includes(k)));
      const required = (o.required ?? []).filter((k) => !shared.includes(k));
      const type = Object.keys(own).length === 0 ? '0' : this.anonymousStruct(own, required);
      return { case: tags[i], type };
    });
    return { tag, variants, members, 'meta-type': 'object' };
  }

  private anonymousStruct(properties: Record<string, TSchema>, required: string[]): string {
    const name = String(this.counter++);
    const info: SchemaInfo = { name };
    this.infos.push(info);
    Object.assign(info, { members: this.members(properties, required), 'meta-type': 'object' });
    return name;
  }

  private members(properties: Record<string, TSchema>, required: readonly string[]): SchemaInfo[] {
    return Object.entries(properties).map(([name, member]) =>
      required.includes(name) ? { name, type: this.typeName(member) } : { name, default: null, type: this.typeName(member) },
    );
  }
}

function builtinName(schema: TSchema): string | undefined {
  if (TypeGuard.IsString(schema)) return 'str';
  if (TypeGuard.IsBoolean(schema)) return 'bool';
  if (TypeGuard.IsInteger(schema)) return 'int';
  if (TypeGuard.IsNumber(schema)) return 'number';
  if (TypeGuard.IsNull(schema)) return 'null';
  if (TypeGuard.IsUnknown(schema) || TypeGuard.IsAny(schema)) return 'any';
  return undefined;
}
