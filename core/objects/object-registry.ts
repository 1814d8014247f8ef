/**
 * The layer's user-creatable objects (QEMU's /objects container) and the
 * object types plugins contribute. Builds ObjectOptions, the flat union
 * (tag `qom-type`) that `object-add` and `--object` are validated against,
 * from the contributed types' schemas. Errors are worded as QEMU 7.2's.
 */
import { inject, injectable } from 'inversify';
import { BlockLayerError } from '../errors.js';
import { NamedRegistry, type Disposable } from '../plugin/named-registry.js';
import { Qapi } from '../schema/qapi.js';
import type { QapiValidator } from '../schema/qapi-validator.js';
import { TOKENS } from '../tokens.js';
import type { ObjectTypeContribution } from './object-type-contribution.js';
import { isTlsCreds, type TlsCreds, type UserObject } from './user-object.js';

export const OBJECT_OPTIONS = 'ObjectOptions';

/** QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
const ID_PATTERN = /^[A-Za-z][A-Za-z0-9._-]*$/;

@injectable()
export class ObjectRegistry {
  private readonly types = new NamedRegistry<ObjectTypeContribution>('object type');
  private readonly objects = new Map<string, UserObject>();
  /** Ids being created (create is async): a second add of the same id must fail at once. */
  private readonly pending = new Set<string>();

  constructor(@inject(TOKENS.QapiValidator) private readonly validator: QapiValidator) {
    this.publishSchema();
  }

  /** Registers a type (the plugin loader does this for every ObjectTypeContribution). */
  registerType(type: ObjectTypeContribution, plugin: string): Disposable {
    const registration = this.types.register(type.qomType, type, plugin);
    this.publishSchema();
    return {
      dispose: () => {
        registration.dispose();
        this.publishSchema();
      },
    };
  }

  /** The contributed types. */
  listTypes(): ObjectTypeContribution[] {
    return this.types.values();
  }

  /**
   * Creates an object of `qomType` from `props` (which include `id`) and
   * adds it. `props` are validated against the type's schema here, so the
   * API path checks what `object-add` checks.
   */
  async add(qomType: string, props: Record<string, unknown>): Promise<UserObject> {
    const type = this.types.get(qomType);
    if (type === undefined) throw new BlockLayerError(`invalid object type: ${qomType}`);
    this.validator.assert(this.branch(type), { 'qom-type': qomType, ...props });
    const id = props.id as string;
    if (!ID_PATTERN.test(id)) throw new BlockLayerError("Parameter 'id' expects an identifier");
    if (this.objects.has(id) || this.pending.has(id)) {
      throw new BlockLayerError(`attempt to add duplicate property '${id}' to object (type 'container')`);
    }
    this.pending.add(id);
    try {
      const object = await type.create({ ...props, id } as Record<string, unknown> & { id: string }, { id });
      this.objects.set(id, object);
      return object;
    } finally {
      this.pending.delete(id);
    }
  }

  get(id: string): UserObject | undefined {
    return this.objects.get(id);
  }

  /** Removes and closes the object; users that hold it keep it working (QEMU keeps a reference). */
  async del(id: string): Promise<void> {
    const object = this.objects.get(id);
    if (object === undefined) throw new BlockLayerError(`object '${id}' not found`);
    this.objects.delete(id);
    await object.close?.();
  }

  /** The objects, in creation order. */
  list(): UserObject[] {
    return [...this.objects.values()];
  }

  /**
   * TLS credentials by id for one side of a connection, or QEMU's error
   * (block/nbd.c and blockdev-nbd.c word them the same way; checked with
   * qemu-img, qemu-nbd and qemu-storage-daemon 7.2).
   */
  tlsCreds(id: string, endpoint: 'client' | 'server'): TlsCreds {
    const object = this.objects.get(id);
    if (object === undefined) throw new BlockLayerError(`No TLS credentials with id '${id}'`);
    if (!isTlsCreds(object)) throw new BlockLayerError(`Object with id '${id}' is not TLS credentials`);
    if (object.endpoint !== endpoint) throw new BlockLayerError(`Expected TLS credentials for a ${endpoint} endpoint`);
    return object;
  }

  /** Deletes every object, newest first (when the layer closes). */
  async closeAll(): Promise<void> {
    for (const id of [...this.objects.keys()].reverse()) await this.del(id);
  }

  private branch(type: ObjectTypeContribution) {
    const name = (type.schema as { qapiType?: string }).qapiType ?? `q_obj_${type.qomType}-props`;
    return Qapi.struct(name, { 'qom-type': Qapi.literal(type.qomType), id: Qapi.str(), ...type.schema.properties });
  }

  private publishSchema(): void {
    const branches = this.types.values().map((t) => this.branch(t));
    this.validator.define({ ...Qapi.flatUnion(OBJECT_OPTIONS, 'qom-type', branches), $id: OBJECT_OPTIONS });
  }
}
