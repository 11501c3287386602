import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { manifestJsonSchema } from '../runtime/manifest/index.ts';

// The published JSON Schema is generated from the zod schema; a test fails when the two drift apart.
const out = join(import.meta.dirname, '..', 'docs', 'composite.schema.json');
writeFileSync(out, `${JSON.stringify(manifestJsonSchema(), null, 2)}\n`);
console.log(`wrote ${out}`);
