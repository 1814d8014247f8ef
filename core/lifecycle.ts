/**
 * Shutdown of a layer. `quit` asks for it; jobs tap `beforeShutdown` to
 * cancel themselves first (QEMU cancels running jobs on quit); front ends
 * (the daemon) tap `shutdownRequested` to stop serving and close the layer,
 * which happens after the quit reply has been sent. Plugins that serve
 * (the NBD server) tap `close` to stop before the layer's nodes close.
 */
import { injectable } from 'inversify';
import { AsyncSeriesHook, SyncHook } from 'tapable';

@injectable()
export class Lifecycle {
  readonly hooks = Object.freeze({
    /** Runs before the reply to `quit`: stop what must stop cleanly (cancel jobs). */
    beforeShutdown: new AsyncSeriesHook<[string]>(['reason'], 'beforeShutdown'),
    /** Shutdown was requested; runs once, after the current command's reply is out. */
    shutdownRequested: new SyncHook<[string]>(['reason'], 'shutdownRequested'),
    /** The layer is closing (`layer.close()`): stop serving and drop users of nodes, before the nodes close. */
    close: new AsyncSeriesHook<[]>([], 'close'),
  });

  private requested = false;

  get shutdownPending(): boolean {
    return this.requested;
  }

  async requestShutdown(reason: string): Promise<void> {
    await this.hooks.beforeShutdown.promise(reason);
    if (this.requested) return;
    this.requested = true;
    setImmediate(() => this.hooks.shutdownRequested.call(reason));
  }
}
