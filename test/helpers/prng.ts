/**
 * mulberry32: a small seeded generator for tests, so that a failing seed
 * reproduces. `mulberry32` gives integers in [0, 2^32), `randomFloats` the
 * same sequence as numbers in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

export function randomFloats(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 2 ** 32;
}
