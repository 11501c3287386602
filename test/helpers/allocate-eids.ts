// Run as its own process by tests: allocates EIDs from the database at argv[2] and prints them as JSON.
import { openDatabase } from '../../db/client.ts';
import { EidAllocator } from '../../runtime/stages/eid-allocator.ts';

const [url, owner, count, blockSize] = process.argv.slice(2) as [string, string, string, string];
const database = await openDatabase(url);
const allocator = new EidAllocator(database.db, owner, Number(blockSize));
const eids: number[] = [];
for (let i = 0; i < Number(count); i++) eids.push(await allocator.allocate());
database.close();
process.stdout.write(JSON.stringify(eids));
