/**
 * Renders a struct schema as the Markdown options table of a README, so the
 * table comes from the schema that validates the options and cannot drift.
 */
import { type TSchema, TypeGuard } from '@sinclair/typebox';
import { annotations, isRef, type TObject } from './qapi.js';

function typeName(schema: TSchema): string {
  const a = annotations(schema);
  if (isRef(schema)) return String(schema.$ref);
  if (TypeGuard.IsUnion(schema) && a.qapiEnum) {
    const values = schema.anyOf.map((b) => `\`${String((b as { const?: unknown }).const)}\``).join(', ');
    return `${a.qapiType ?? 'enum'} (${values})`;
  }
  if (TypeGuard.IsArray(schema)) return `list of ${typeName(schema.items)}`;
  return a.qapiType ?? String((schema as { type?: unknown }).type ?? 'any');
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|');
}

export function renderOptionsTable(schema: TObject): string {
  const required = new Set(schema.required ?? []);
  const rows = Object.entries(schema.properties).map(([name, member]) => {
    const fallback = required.has(name)
      ? 'required'
      : member.default === undefined
        ? '—'
        : `\`${JSON.stringify(member.default)}\``;
    return `| \`${name}\` | ${cell(typeName(member))} | ${fallback} | ${cell(member.description ?? '')} |`;
  });
  return ['| name | type | default | description |', '|---|---|---|---|', ...rows].join('\n');
}

/** Markers between which a README's generated table lives. */
export function tableMarkers(id: string): { begin: string; end: string } {
  return { begin: `<!-- ${id}: generated from the schema, npm run docs -->`, end: `<!-- /${id} -->` };
}

/** Replaces the text between the markers of `id` with `table`. */
export function withTable(readme: string, id: string, table: string): string {
  const { begin, end } = tableMarkers(id);
  const from = readme.indexOf(begin);
  const to = readme.indexOf(end);
  if (from < 0 || to < from) throw new Error(`README has no ${id} markers`);
  return `${readme.slice(0, from + begin.length)}\n${table}\n${readme.slice(to)}`;
}
