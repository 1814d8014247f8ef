import test from 'ava';
import { README_TABLES, regenerated } from '../helpers/readme-tables.js';

for (const readme of new Set(README_TABLES.map((t) => t.readme))) {
  test(`${readme}: options tables match the schemas (npm run docs)`, async (t) => {
    const { current, expected } = await regenerated(readme);
    t.is(current, expected);
  });
}
