/** The wall-clock time in nanoseconds, to the microsecond: QEMU's g_get_real_time() * 1000, what a new snapshot records. */
export function realTimeNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
}
