import { createPublicKey, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { configureAdapters, trustAnchors } from '../adapters/index.ts';
import { migrateDatabase, openDatabase } from '../db/client.ts';
import { ensureTenant, issueToken } from '../runtime/auth/tokens.ts';
import { checkSealedExecution, SealedClient } from '../runtime/client/index.ts';
import { parseTrustAnchor } from '../runtime/evidence/index.ts';
import { api, cleanupAll, sampleBundle, sampleOrder, tempDir, upload } from './helpers/env.ts';
import { commandLine, descendants, scanFiles, scanProcessMemory, scanRedis } from './helpers/host-scan.ts';
import { spawnServer, type ServerProcess } from './helpers/process.ts';
import { ed25519FromSeed, putSecret } from './helpers/secrets.ts';

let server: ServerProcess | undefined;
afterAll(async () => {
  if (server) {
    server.child.kill('SIGTERM');
    await server.exited;
  }
  await cleanupAll();
});

/**
 * The rule of issue 5: with a sealed request, the host sees ciphertext, digests and evidence, and
 * nothing more. A full invocation carries a random marker inside its sealed input (in a field the
 * manifest does not make public, and which the stage writes to its log); then the marker is looked for
 * everywhere the host keeps or holds anything: every file under the EBCC home (the libSQL database with
 * its WAL, which also holds the blobs; extracted bundles; caches), the gateway's own log output at debug
 * level, every Redis key and value, and the memory of the gateway process and of every process of the
 * anchor's sandbox. It must be in none. As a control that the memory scan can find what is there, the
 * same marker must be found in the enclave (the sim shim and its stage), where the plaintext is meant to
 * be: with sim, a root-level host can read it there (docs/security.md).
 *
 * The same holds for a secret released after attestation: the tenant's signing key, uploaded sealed to
 * the key broker and released sealed to the stage enclave's key, is looked for in the same places (raw
 * and in its text encodings) and must be in none but the enclave, whose stage must have signed with it.
 */
describe('host blindness for a sealed invocation', () => {
  it('leaves no plaintext, and no released secret, in the database, blobs, files, logs, Redis, or the anchor and gateway memory', async () => {
    const home = await tempDir('ebcc-blind-');
    const database = await openDatabase(`file:${join(home, 'ebcc.db')}`);
    await migrateDatabase(database);
    const tenant = await ensureTenant(database.db, 'acme');
    const { token } = await issueToken(database.db, { tenantId: tenant.id, name: 't', scopes: ['admin'] });
    database.close();
    const redisUrl = inject('redisUrl');
    server = await spawnServer(home, { EBCC_LOG_LEVEL: 'debug', REDIS_URL: redisUrl });
    const deployed = await upload(server.url, token, await sampleBundle());
    expect(deployed.status).toBe(201);
    // The tenant's signing key, sealed to the key broker and released only to the measured stage.
    const seed = randomBytes(32);
    const policy = { stage: 'sign', measurements: [deployed.body.stages[0].measurement.value as string] };
    expect((await putSecret(server.url, token, 'order-signer', 'signing-key', seed, policy)).status).toBe(
      201,
    );

    // The first key request makes the instance, the enclave and (once) the sim device root.
    expect((await api(server.url, token, 'GET', '/v1/functions/order-signer/stages/sign/key')).status).toBe(
      200,
    );
    configureAdapters({ dataDir: home });
    const client = new SealedClient({
      url: server.url,
      token,
      trustAnchors: [parseTrustAnchor(trustAnchors()[0]!.anchor)],
      allowSim: true,
    });

    const marker = `MARK${randomBytes(16).toString('hex')}`;
    const order = { ...sampleOrder(marker), items: [{ sku: `sku-${marker}`, qty: 1 }] };
    const result = await client.invoke('order-signer', 'sign', order);
    expect(result.status, result.body.toString()).toBe(200);
    expect(result.sealed).toBe(true);
    const bundle = await client.evidence(result.invocationId!);
    const check = checkSealedExecution(bundle, result.exchange, result.body);
    expect(check.reasons).toEqual([]);
    // The stage did log the marker: the log exists, sealed to the client.
    expect(check.log?.toString()).toContain(marker);
    // And it signed with the released key, not one of its own.
    const signed = JSON.parse(result.body.toString()) as { publicKey: string; keySource: string };
    expect(signed.keySource).toBe('tenant');
    expect(signed.publicKey).toBe(
      createPublicKey(ed25519FromSeed(seed))
        .export({ format: 'der', type: 'spki' })
        .subarray(-32)
        .toString('hex'),
    );
    // The released secret is looked for wherever the marker is: raw, and in each text encoding.
    const secretForms = [
      seed.toString('latin1'),
      seed.toString('base64url'),
      seed.toString('base64'),
      seed.toString('hex'),
    ];
    const needles = [marker, ...secretForms];

    // Processes: the anchor's sandbox (from the instance record) and the enclave's (the shim's tree).
    const instances = (await api(server.url, token, 'GET', '/v1/instances')).body.instances;
    expect(instances).toHaveLength(1);
    const anchorPids = descendants(instances[0].pid as number);
    const all = descendants(server.gatewayPid);
    const shims = all.filter((pid) => commandLine(pid).includes('sim-shim.mjs'));
    expect(shims.length).toBeGreaterThan(0);
    const enclavePids = new Set(shims.flatMap((pid) => descendants(pid)));
    const anchorNode = anchorPids.filter((pid) => commandLine(pid).includes('harness.mjs'));
    expect(anchorNode.length, 'the anchor harness process is found').toBeGreaterThan(0);

    let anchorScanned = 0;
    for (const pid of [...anchorPids, server.gatewayPid]) {
      if (enclavePids.has(pid)) continue;
      const scan = scanProcessMemory(pid, needles);
      expect(scan.found, `marker or secret in the memory of pid ${pid} (${commandLine(pid)})`).toBe(false);
      if (pid === server.gatewayPid) expect(scan.scanned).toBeGreaterThan(16 * 1024 * 1024);
      else anchorScanned += scan.scanned;
    }
    // The anchor's sandbox holds a whole Node process (bwrap and tini besides): its memory was read.
    expect(anchorScanned).toBeGreaterThan(16 * 1024 * 1024);
    const enclaveHolds = [...enclavePids].some((pid) => scanProcessMemory(pid, marker).found);
    expect(enclaveHolds, 'control: the plaintext is in the enclave, where the scan finds it').toBe(true);
    const secretInEnclave = [...enclavePids].some((pid) => scanProcessMemory(pid, secretForms[1]!).found);
    expect(secretInEnclave, 'control: the released secret is in the enclave (the stage has it)').toBe(true);

    // Files: the database (and its WAL: committed artifacts are durable before the reply), blobs, caches.
    const files = scanFiles(home, marker);
    expect(files.files).toBeGreaterThan(2);
    expect(files.hits).toEqual([]);
    expect(scanFiles(home, secretForms).hits).toEqual([]);
    // Control: the same scan finds what is stored in clear (the invocation id is a row key).
    expect(scanFiles(home, result.invocationId!).hits.length).toBeGreaterThan(0);

    // The gateway's own output, at debug level.
    expect(server.output().length).toBeGreaterThan(0);
    const output = server.output();
    for (const needle of needles) expect(output.includes(needle)).toBe(false);

    // Redis, every key and every value.
    const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      expect((await scanRedis(redis, needles)).hits).toEqual([]);
    } finally {
      redis.disconnect();
    }
  }, 120_000); // memory scans of several processes take a while on a loaded 2-CPU host
});
