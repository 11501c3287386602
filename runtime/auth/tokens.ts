import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { and, desc, eq } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../db/client.ts';
import { apiTokens, tenants } from '../../db/schema.ts';
import { newId } from '../ids.ts';

export const SCOPES = ['deploy', 'invoke', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];
export const scopeList = z.array(z.enum(SCOPES)).min(1);

export interface Principal {
  tokenId: string;
  tenantId: string;
  tenantName: string;
  scopes: Scope[];
}

export interface IssuedToken {
  id: string;
  tenantId: string;
  tenant: string;
  name: string;
  scopes: Scope[];
  expiresAt: number | null;
  /** Shown once; only its hash is stored. */
  token: string;
}

const tokenPattern = /^ebcc_(tok_[0-9a-z]+)_([A-Za-z0-9_-]{43})$/;
const hashSecret = (secret: string) => createHash('sha256').update(secret).digest('hex');

/** Admin implies every other scope of the same tenant. */
export const hasScope = (principal: Principal, scope: Scope) =>
  principal.scopes.includes(scope) || principal.scopes.includes('admin');

export async function ensureTenant(db: Db, name: string): Promise<{ id: string; name: string }> {
  const existing = await db.query.tenants.findFirst({ where: eq(tenants.name, name) });
  if (existing) return existing;
  const id = newId('ten');
  await db.insert(tenants).values({ id, name }).onConflictDoNothing();
  const row = await db.query.tenants.findFirst({ where: eq(tenants.name, name) });
  if (!row) throw new Error(`could not create tenant ${name}`);
  return row;
}

export async function issueToken(
  db: Db,
  opts: { tenantId: string; name: string; scopes: Scope[]; expiresAt?: number | null },
): Promise<IssuedToken> {
  const tenant = await db.query.tenants.findFirst({ where: eq(tenants.id, opts.tenantId) });
  if (!tenant) throw new Error(`tenant ${opts.tenantId} does not exist`);
  const id = newId('tok');
  const secret = randomBytes(32).toString('base64url');
  const scopes = [...new Set(opts.scopes)];
  await db.insert(apiTokens).values({
    id,
    tenantId: tenant.id,
    name: opts.name,
    secretHash: hashSecret(secret),
    scopes,
    expiresAt: opts.expiresAt ?? null,
  });
  return {
    id,
    tenantId: tenant.id,
    tenant: tenant.name,
    name: opts.name,
    scopes,
    expiresAt: opts.expiresAt ?? null,
    token: `ebcc_${id}_${secret}`,
  };
}

export type AuthFailure = 'malformed' | 'unknown' | 'revoked' | 'expired';

export async function authenticate(
  db: Db,
  bearer: string,
  now = Date.now(),
): Promise<Principal | AuthFailure> {
  const match = tokenPattern.exec(bearer);
  if (!match) return 'malformed';
  const [, id, secret] = match as unknown as [string, string, string];
  const row = await db
    .select({ token: apiTokens, tenantName: tenants.name })
    .from(apiTokens)
    .innerJoin(tenants, eq(tenants.id, apiTokens.tenantId))
    .where(eq(apiTokens.id, id))
    .get();
  if (!row) return 'unknown';
  const expected = Buffer.from(row.token.secretHash, 'hex');
  if (!timingSafeEqual(expected, Buffer.from(hashSecret(secret), 'hex'))) return 'unknown';
  if (row.token.revokedAt !== null) return 'revoked';
  if (row.token.expiresAt !== null && row.token.expiresAt <= now) return 'expired';
  return {
    tokenId: id,
    tenantId: row.token.tenantId,
    tenantName: row.tenantName,
    scopes: row.token.scopes as Scope[],
  };
}

/** Revokes a token; with a tenant given, only that tenant's tokens can be revoked. */
export async function revokeToken(db: Db, id: string, tenantId?: string): Promise<boolean> {
  const where = tenantId ? and(eq(apiTokens.id, id), eq(apiTokens.tenantId, tenantId)) : eq(apiTokens.id, id);
  const result = await db
    .update(apiTokens)
    .set({ revokedAt: Date.now() })
    .where(where)
    .returning({ id: apiTokens.id });
  return result.length > 0;
}

export async function listTokens(db: Db, tenantId?: string) {
  const rows = await db
    .select({
      id: apiTokens.id,
      tenant: tenants.name,
      name: apiTokens.name,
      scopes: apiTokens.scopes,
      expiresAt: apiTokens.expiresAt,
      revokedAt: apiTokens.revokedAt,
      createdAt: apiTokens.createdAt,
    })
    .from(apiTokens)
    .innerJoin(tenants, eq(tenants.id, apiTokens.tenantId))
    .where(tenantId ? eq(apiTokens.tenantId, tenantId) : undefined)
    .orderBy(desc(apiTokens.createdAt));
  return rows;
}

/** Parses "30d", "12h", "15m" or an ISO date into an absolute expiry in ms. */
export function parseExpiry(text: string, now = Date.now()): number {
  const rel = /^(\d+)([smhd])$/.exec(text);
  if (rel) {
    const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[rel[2] as 's' | 'm' | 'h' | 'd'];
    return now + Number(rel[1]) * unit;
  }
  const at = Date.parse(text);
  if (Number.isNaN(at)) throw new Error(`invalid expiry "${text}": use e.g. 30d, 12h, 15m or an ISO date`);
  if (at <= now) throw new Error(`invalid expiry "${text}": it is in the past`);
  return at;
}
