// Mutation fuzzing of sealed-request and sealed-reply envelopes (runtime/seal/envelope.ts): they come
// from clients (and, for replies, through the untrusted host). A mutated envelope is plain input, or
// refused with a SealError, or opens to exactly what was sealed; nothing else.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  LOG_FORMAT,
  openReply,
  openRequest,
  parseSealedRequest,
  RESPONSE_FORMAT,
  SealError,
  sealReplies,
  sealRequest,
} from '../../runtime/seal/envelope.ts';
import { generateX25519 } from '../../runtime/seal/hpke.ts';
import { fuzz, fuzzTimeout, mutationsOf } from '../helpers/fuzz.ts';

const enclave = generateX25519();
const plaintext = Buffer.from(JSON.stringify({ orderId: 'o-1', amountCents: 990, currency: 'EUR' }));
const exchange = sealRequest(enclave.publicKey, plaintext, { public: { currency: 'EUR' } });
const original = JSON.parse(exchange.envelope.toString()) as Record<string, unknown>;
const replies = sealReplies(
  Buffer.from('the answer'),
  Buffer.from('the log'),
  exchange.responseKey.publicKey,
  exchange.requestDigest,
);

/** Runs `fn`; a SealError is an answer, any other exception is a failure. */
function sealOutcome<T>(fn: () => T): T | SealError {
  try {
    return fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SealError);
    return error as SealError;
  }
}

/** Field-level edits of the recorded envelope: the JSON stays valid, so they reach the checks. */
const fieldEdit = fc
  .tuple(
    fc.constantFrom('format', 'suite', 'kid', 'responseKey', 'public', 'enc', 'ct', 'extra'),
    fc.oneof(
      fc.jsonValue({ maxDepth: 2 }),
      fc.constantFrom('', 'AAAA', 'A'.repeat(43), '-_-_', '0'.repeat(32)),
      fc.uint8Array({ maxLength: 48 }).map((b) => Buffer.from(b).toString('base64url')),
      fc.constant({ currency: 'USD' }),
      fc.constantFrom({ toString: false }, { valueOf: 1 }, [], null),
    ),
  )
  .map(([field, value]) => Buffer.from(JSON.stringify({ ...original, [field]: value })));

describe('sealed envelopes under mutation', () => {
  // Found by the request property (seed -1709348416, after 111,758 runs): a suite of
  // {"toString": false} made the error message itself throw a TypeError instead of a SealError.
  it('regression: a suite that cannot be turned into a string is a SealError', () => {
    const hostile = Buffer.from(JSON.stringify({ ...original, suite: { toString: false } }));
    expect(() => parseSealedRequest(hostile)).toThrow(SealError);
    const reply = JSON.parse(replies.response.toString()) as Record<string, unknown>;
    const badReply = Buffer.from(JSON.stringify({ ...reply, suite: { toString: false } }));
    expect(() => openReply(badReply, exchange, RESPONSE_FORMAT)).toThrow(SealError);
  });

  it(
    'a mutated sealed request is plain input, a SealError, or opens to exactly what was sealed',
    () =>
      fuzz(
        'seal: request envelopes',
        fc.property(fc.oneof(mutationsOf(exchange.envelope), fieldEdit), (bytes) => {
          const env = sealOutcome(() => parseSealedRequest(bytes));
          if (env === undefined || env instanceof SealError) return;
          const opened = sealOutcome(() => openRequest(bytes, env, enclave));
          if (opened instanceof SealError) return;
          expect(opened.plaintext.equals(plaintext)).toBe(true);
          // Whatever opened is the envelope that was sealed, field for field.
          expect(JSON.parse(Buffer.from(bytes).toString())).toEqual(original);
        }),
        400,
      ),
    fuzzTimeout(),
  );

  it(
    'a mutated sealed reply is a SealError, or opens to exactly what was sealed',
    () =>
      fuzz(
        'seal: reply envelopes',
        fc.property(
          fc
            .constantFrom(
              [RESPONSE_FORMAT, replies.response, 'the answer'] as const,
              [LOG_FORMAT, replies.log, 'the log'] as const,
            )
            .chain(([format, specimen, expected]) =>
              mutationsOf(specimen).map((bytes) => ({ format, bytes, expected })),
            ),
          ({ format, bytes, expected }) => {
            const opened = sealOutcome(() => openReply(bytes, exchange, format));
            if (opened instanceof SealError) return;
            expect(opened.toString()).toBe(expected);
          },
        ),
        400,
      ),
    fuzzTimeout(),
  );
});
