import { readFileSync } from 'node:fs';
import { Aes128Gcm, CipherSuite, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';
import { describe, expect, it } from 'vitest';
import {
  AEAD_ID,
  deriveX25519,
  generateX25519,
  HpkeError,
  KDF_ID,
  KEM_ID,
  rawX25519Private,
  setupRecipient,
  setupSender,
} from '../runtime/seal/hpke.ts';

interface Vector {
  mode: number;
  kem_id: number;
  kdf_id: number;
  aead_id: number;
  info: string;
  ikmE: string;
  pkEm: string;
  skEm: string;
  ikmR: string;
  pkRm: string;
  skRm: string;
  enc: string;
  encryptions: { seq: number; aad: string; ciphertext: string; plaintext: string }[];
  exports: { exporter_context: string; L: number; exported_value: string }[];
}

const fixture = JSON.parse(
  readFileSync(new URL('./fixtures/hpke-rfc9180-x25519-sha256-aes128gcm.json', import.meta.url), 'utf8'),
) as { vectors: Vector[] };
const h = (s: string) => Buffer.from(s, 'hex');
const suite = () =>
  new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });

describe('HPKE (RFC 9180) test vectors: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM', () => {
  it('vendors the base-mode entry of the suite EBCC uses', () => {
    expect(fixture.vectors).toHaveLength(1);
    const [v] = fixture.vectors;
    expect([v!.mode, v!.kem_id, v!.kdf_id, v!.aead_id]).toEqual([0, KEM_ID, KDF_ID, AEAD_ID]);
  });

  for (const v of fixture.vectors) {
    it(`mode ${v.mode}: DeriveKeyPair, encapsulation, the encryptions in order, and the exports`, () => {
      const recipient = deriveX25519(h(v.ikmR));
      expect(rawX25519Private(recipient.privateKey).toString('hex')).toBe(v.skRm);
      expect(recipient.publicKey.toString('hex')).toBe(v.pkRm);
      const ephemeral = deriveX25519(h(v.ikmE));
      expect(rawX25519Private(ephemeral.privateKey).toString('hex')).toBe(v.skEm);
      expect(ephemeral.publicKey.toString('hex')).toBe(v.pkEm);
      const sender = setupSender(recipient.publicKey, { info: h(v.info), ephemeral });
      expect(sender.enc.toString('hex')).toBe(v.enc);
      const receiver = setupRecipient(sender.enc, recipient, { info: h(v.info) });
      v.encryptions.forEach((e, i) => {
        expect(e.seq).toBe(i);
        expect(sender.context.seal(h(e.plaintext), h(e.aad)).toString('hex')).toBe(e.ciphertext);
        expect(receiver.open(h(e.ciphertext), h(e.aad)).toString('hex')).toBe(e.plaintext);
      });
      for (const x of v.exports) {
        expect(sender.context.export(h(x.exporter_context), x.L).toString('hex')).toBe(x.exported_value);
        expect(receiver.export(h(x.exporter_context), x.L).toString('hex')).toBe(x.exported_value);
      }
    });

    it(`mode ${v.mode}: @hpke/core with @hpke/dhkem-x25519 reproduces the same vector`, async () => {
      const s = suite();
      const recipientKey = await s.kem.deriveKeyPair(h(v.ikmR));
      expect(Buffer.from(await s.kem.serializePublicKey(recipientKey.publicKey)).toString('hex')).toBe(
        v.pkRm,
      );
      const ekm = await s.kem.deriveKeyPair(h(v.ikmE));
      const sender = await s.createSenderContext({
        recipientPublicKey: recipientKey.publicKey,
        info: h(v.info),
        ekm,
      });
      expect(Buffer.from(sender.enc).toString('hex')).toBe(v.enc);
      for (const e of v.encryptions)
        expect(Buffer.from(await sender.seal(h(e.plaintext), h(e.aad))).toString('hex')).toBe(e.ciphertext);
    });
  }

  it('interoperates with @hpke/core both ways on fresh keys', async () => {
    const s = suite();
    const info = Buffer.from('ebcc interop');
    const aad = Buffer.from('aad');
    const message = Buffer.from('a message for the enclave');

    // Ours seals, @hpke/core opens.
    const theirs = await s.kem.generateKeyPair();
    const theirsRaw = Buffer.from(await s.kem.serializePublicKey(theirs.publicKey));
    const ours = setupSender(theirsRaw, { info });
    const opener = await s.createRecipientContext({ recipientKey: theirs, enc: ours.enc, info });
    expect(Buffer.from(await opener.open(ours.context.seal(message, aad), aad))).toEqual(message);

    // @hpke/core seals, ours opens.
    const mine = generateX25519();
    const sender = await s.createSenderContext({
      recipientPublicKey: await s.kem.deserializePublicKey(mine.publicKey),
      info,
    });
    const ct = Buffer.from(await sender.seal(message, aad));
    expect(setupRecipient(Buffer.from(sender.enc), mine, { info }).open(ct, aad)).toEqual(message);
  });

  it('refuses a tampered ciphertext, a wrong aad, a wrong info and a small-order key', () => {
    const r = generateX25519();
    const s = setupSender(r.publicKey, { info: Buffer.from('i') });
    const ct = s.context.seal(Buffer.from('x'), Buffer.from('a'));
    const tampered = Buffer.from(ct);
    tampered[0]! ^= 1;
    expect(() =>
      setupRecipient(s.enc, r, { info: Buffer.from('i') }).open(tampered, Buffer.from('a')),
    ).toThrow(HpkeError);
    expect(() => setupRecipient(s.enc, r, { info: Buffer.from('i') }).open(ct, Buffer.from('b'))).toThrow(
      HpkeError,
    );
    expect(() => setupRecipient(s.enc, r, { info: Buffer.from('j') }).open(ct, Buffer.from('a'))).toThrow(
      HpkeError,
    );
    // An all-zero (small-order) public key gives the all-zero shared secret: refused, never used.
    expect(() => setupSender(Buffer.alloc(32), {})).toThrow(HpkeError);
  });
});
