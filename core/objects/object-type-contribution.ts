/**
 * An object type a plugin contributes (QEMU's user-creatable QOM types):
 * bound to TOKENS.ObjectTypeContribution and collected into the
 * ObjectRegistry, which builds `object-add`'s ObjectOptions union from the
 * types' schemas. Types are unique by `qomType`.
 */
import type { TObject } from '@sinclair/typebox';
import type { UserObject } from './user-object.js';

/** What `create` receives besides the properties. */
export interface ObjectCreateContext {
  /** The object's id (also in the properties). */
  readonly id: string;
}

export interface ObjectTypeContribution<P = any> {
  /** The `qom-type` value, as QEMU names it. */
  readonly qomType: string;
  /** One line for introspection and documentation. */
  readonly summary: string;
  /**
   * The type's own properties (without `qom-type` and `id`), a Qapi struct;
   * validated before `create`, which gets them as sent (defaults are its own
   * to apply).
   */
  readonly schema: TObject;
  /** Makes the object; throws (with QEMU's text) when the properties cannot be used. */
  create(props: P & { id: string }, ctx: ObjectCreateContext): Promise<UserObject> | UserObject;
}
